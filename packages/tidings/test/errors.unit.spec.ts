import { describe, expect, it } from 'vitest';
import { ErrorCode, TidingsError, isRetryable, isTidingsError, partitionForKey } from '../src/index.js';
import { murmur2 } from '../src/core/partitioner.js';

describe('TidingsError', () => {
  it('carries code, retryable, cause and details, and is recognised by its brand across copies', () => {
    const cause = new Error('socket hang up');
    const error = new TidingsError(ErrorCode.PUBLISH_FAILED, 'publishing to "orders" failed', {
      topic: 'orders',
      cause,
    });
    expect(error.code).toBe('PUBLISH_FAILED');
    expect(error.retryable).toBe(true);
    expect(error.cause).toBe(cause);
    expect(error.details).toEqual({ topic: 'orders' });
    expect(isTidingsError(error)).toBe(true);
    expect(isTidingsError(error, 'PUBLISH_FAILED')).toBe(true);
    expect(isTidingsError(error, 'CLOSED')).toBe(false);
    // An error from another installed copy has the same Symbol.for brand but another class.
    const foreign = Object.assign(new Error('x'), { code: 'CLOSED' });
    Object.defineProperty(foreign, Symbol.for('tidings.error'), { value: true });
    expect(isTidingsError(foreign, 'CLOSED')).toBe(true);
    expect(isTidingsError(new Error('plain'))).toBe(false);
    expect(isTidingsError(null)).toBe(false);
  });

  it('defaults retryable by code, and treats foreign errors as retryable', () => {
    expect(new TidingsError('VALIDATION_FAILED', 'bad').retryable).toBe(false);
    expect(new TidingsError('HANDLER_TIMEOUT', 'slow').retryable).toBe(true);
    expect(new TidingsError('HANDLER_TIMEOUT', 'slow', { retryable: false }).retryable).toBe(false);
    expect(isRetryable(new Error('boom'))).toBe(true);
  });
});

describe('partitionForKey', () => {
  it('matches Kafka murmur2 test vectors, so Kafka producers and Tidings agree on partitions', () => {
    const vectors: Array<[string, number]> = [
      ['21', -973932308],
      ['foobar', -790332482],
      ['a-little-bit-long-string', -985981536],
      ['a-little-bit-longer-string', -1486304829],
      ['lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8', -58897971],
      ['abc', 479470107],
    ];
    for (const [key, hash] of vectors) expect(murmur2(Buffer.from(key)), key).toBe(hash);
  });

  it('is stable and spreads keys over partitions', () => {
    expect(partitionForKey('order-42', 8)).toBe(partitionForKey('order-42', 8));
    const counts = new Array<number>(8).fill(0);
    for (let i = 0; i < 8000; i++) counts[partitionForKey(`order-${i}`, 8)]!++;
    for (const count of counts) expect(count).toBeGreaterThan(800);
    expect(() => partitionForKey('k', 0)).toThrow(/positive integer/);
  });
});
