import { describe, expect, it } from 'vitest';
import {
  ErrorCode,
  TidingsError,
  backoffDelayMs,
  deadLetterTopic,
  resolveRetryOptions,
} from '../src/index.js';
import { createFakeClock, waitUntil } from '../src/testing/index.js';
import { OrderPlaced, testBus } from './fixtures.js';

describe('retry', () => {
  it('redelivers to the handler after it throws, with the attempt number counting up', async () => {
    const { bus } = testBus();
    const attempts: number[] = [];
    const consumer = bus.handle(
      'flaky',
      [OrderPlaced],
      (_message, ctx) => {
        attempts.push(ctx.attempt);
        if (ctx.attempt < 3) throw new Error('database blip');
      },
      { retry: { maxAttempts: 5, initialDelayMs: 1, maxDelayMs: 2 } },
    );
    const receipt = await bus.publish(OrderPlaced, { orderId: 'o-1', total: 1 });
    await consumer.waitFor(receipt);
    expect(attempts).toEqual([1, 2, 3]);
    expect(consumer.stats()).toMatchObject({ processed: 1, retried: 2, failed: 0 });
    await bus.close();
  });

  it('makes exactly maxAttempts attempts with exponential backoff inside the jitter bounds (fake clock)', async () => {
    const clock = createFakeClock();
    const randoms = [0, 0.5, 0.999, 0.25];
    let r = 0;
    const { bus } = testBus({ clock, random: () => randoms[r++ % randoms.length]! });
    let attempts = 0;
    const consumer = bus.handle(
      'always-fails',
      [OrderPlaced],
      () => {
        attempts++;
        throw new Error('still broken');
      },
      { retry: { maxAttempts: 5, initialDelayMs: 100, multiplier: 2, maxDelayMs: 500, jitter: 0.5 } },
    );
    const receipt = await bus.publish(OrderPlaced, { orderId: 'o-1', total: 1 });
    // Let each backoff fall due in turn; the consumer must not have given up early.
    while (consumer.stats().deadLettered === 0) {
      if (!(await clock.runNext())) await new Promise((resolve) => setImmediate(resolve));
    }
    await consumer.waitFor(receipt);
    expect(attempts).toBe(5);
    const backoffs = clock.sleeps.filter((ms) => ms < 1000); // the retry delays, not other timers
    expect(backoffs).toHaveLength(4);
    const bases = [100, 200, 400, 500]; // doubling, capped at maxDelayMs
    backoffs.forEach((delay, i) => {
      expect(delay).toBeLessThanOrEqual(bases[i]!);
      expect(delay).toBeGreaterThanOrEqual(bases[i]! * 0.5);
    });
    expect(backoffs[0]).toBe(100); // random 0 → no reduction
    await bus.close();
  });

  it('computes backoff bounds from its options', () => {
    const options = resolveRetryOptions({ initialDelayMs: 10, multiplier: 3, maxDelayMs: 200, jitter: 0.2 });
    expect(backoffDelayMs(options, 1, () => 0)).toBe(10);
    expect(backoffDelayMs(options, 2, () => 0)).toBe(30);
    expect(backoffDelayMs(options, 4, () => 0)).toBe(200);
    expect(backoffDelayMs(options, 4, () => 1)).toBeCloseTo(160);
    expect(() => resolveRetryOptions({ jitter: 2 })).toThrow(/jitter must be between 0 and 1/);
  });

  it('does not retry an error marked not retryable', async () => {
    const { bus } = testBus();
    let attempts = 0;
    const consumer = bus.handle('strict', [OrderPlaced], () => {
      attempts++;
      throw new TidingsError(ErrorCode.HANDLER_FAILED, 'order is malformed for this service', {
        retryable: false,
      });
    });
    const receipt = await bus.publish(OrderPlaced, { orderId: 'o-1', total: 1 });
    await consumer.waitFor(receipt);
    expect(attempts).toBe(1);
    expect(consumer.stats().deadLettered).toBe(1);
    await bus.close();
  });

  it('fails a slow attempt with HANDLER_TIMEOUT and aborts its signal', async () => {
    const { bus } = testBus();
    let aborted = false;
    const consumer = bus.handle(
      'slow',
      [OrderPlaced],
      async (_m, ctx) => {
        await new Promise<void>((resolve) =>
          ctx.signal.addEventListener('abort', () => resolve(), { once: true }),
        );
        aborted = ctx.signal.aborted;
      },
      { timeoutMs: 20, retry: { maxAttempts: 1 } },
    );
    const receipt = await bus.publish(OrderPlaced, { orderId: 'o-1', total: 1 });
    await consumer.waitFor(receipt);
    const [letter] = await bus.deadLetters.list({ group: 'slow', topic: 'orders' });
    expect(aborted).toBe(true);
    expect(letter?.reason).toBe('HANDLER_TIMEOUT');
    expect(letter?.error).toMatch(/within 20 ms/);
    await bus.close();
  });
});

describe('parking', () => {
  it('holds exactly the failing key, lets other keys flow, and releases the key in order on retry', async () => {
    const { bus } = testBus();
    let broken = true;
    const handled: string[] = [];
    const consumer = bus.handle(
      'warehouse',
      [OrderPlaced],
      ({ data }) => {
        if (broken && data.orderId === 'poison') throw new Error('warehouse rejects poison');
        handled.push(`${data.orderId}#${data.seq}`);
      },
      { onFailure: 'park', retry: { maxAttempts: 2, initialDelayMs: 1 } },
    );
    const receipts = await bus.publishMany([
      { event: OrderPlaced, data: { orderId: 'poison', seq: 1, total: 1 } },
      { event: OrderPlaced, data: { orderId: 'good', seq: 1, total: 1 } },
      { event: OrderPlaced, data: { orderId: 'poison', seq: 2, total: 1 } },
      { event: OrderPlaced, data: { orderId: 'good', seq: 2, total: 1 } },
      { event: OrderPlaced, data: { orderId: 'poison', seq: 3, total: 1 } },
    ]);
    await consumer.waitFor(receipts);

    expect(handled).toEqual(['good#1', 'good#2']); // other keys flowed
    const parked = await bus.parked.list('warehouse');
    expect(parked).toHaveLength(1);
    expect(parked[0]).toMatchObject({ group: 'warehouse', topic: 'orders', key: 'poison', attempts: 2 });
    expect(parked[0]!.error).toMatch(/warehouse rejects poison/);
    expect(parked[0]!.events).toHaveLength(3); // the failed one and the two that waited behind it

    // A later event of the parked key also waits.
    const later = await bus.publish(OrderPlaced, { orderId: 'poison', seq: 4, total: 1 });
    await consumer.waitFor(later);
    expect((await bus.parked.list('warehouse'))[0]!.events).toHaveLength(4);

    // Retrying while still broken keeps it parked and reports why.
    const stillBroken = await bus.parked.retry({ group: 'warehouse', topic: 'orders', key: 'poison' });
    expect(stillBroken).toMatchObject({ processed: 0, remaining: 4 });
    expect(stillBroken.error).toMatch(/poison/);

    broken = false;
    const result = await bus.parked.retry({ group: 'warehouse', topic: 'orders', key: 'poison' });
    expect(result).toEqual({ processed: 4, remaining: 0 });
    expect(handled.filter((h) => h.startsWith('poison'))).toEqual([
      'poison#1',
      'poison#2',
      'poison#3',
      'poison#4',
    ]);
    expect(await bus.parked.list()).toEqual([]);

    // Released: new events of the key are handled directly again.
    const after = await bus.publish(OrderPlaced, { orderId: 'poison', seq: 5, total: 1 });
    await consumer.waitFor(after);
    expect(handled.at(-1)).toBe('poison#5');
    await bus.close();
  });

  it('skip drops the failed event and handles the ones that waited, in order', async () => {
    const { bus } = testBus();
    const handled: number[] = [];
    const consumer = bus.handle(
      'billing',
      [OrderPlaced],
      ({ data }) => {
        if (data.seq === 1) throw new Error('cannot bill seq 1');
        handled.push(data.seq);
      },
      { onFailure: 'park', retry: false },
    );
    const receipts = await bus.publishMany(
      [1, 2, 3].map((seq) => ({ event: OrderPlaced, data: { orderId: 'o-7', seq, total: 1 } })),
    );
    await consumer.waitFor(receipts);
    expect(handled).toEqual([]);
    const result = await bus.parked.skip({ group: 'billing', topic: 'orders', key: 'o-7' });
    expect(result).toEqual({ processed: 2, remaining: 0 });
    expect(handled).toEqual([2, 3]);
    await bus.close();
  });

  it('rejects retry of a key that is not parked, or of a group with no consumer here, with NOT_FOUND', async () => {
    const { bus } = testBus();
    bus.handle('g', [OrderPlaced], () => undefined, { onFailure: 'park' });
    await expect(bus.parked.retry({ group: 'g', topic: 'orders', key: 'nope' })).rejects.toMatchObject({
      code: 'NOT_FOUND',
    });
    await expect(async () =>
      bus.parked.retry({ group: 'other', topic: 'orders', key: 'nope' }),
    ).rejects.toThrow(/no consumer of group "other"/);
    await bus.close();
  });
});

describe('dead letters', () => {
  it('carry the reason, the error, the attempts and the original event, and can be retried or skipped', async () => {
    const { bus, transport } = testBus();
    let fail = true;
    const handled: string[] = [];
    const consumer = bus.handle(
      'email',
      [OrderPlaced],
      ({ data }) => {
        if (fail && data.orderId.startsWith('o-bad')) throw new Error('smtp said no');
        handled.push(data.orderId);
      },
      { retry: { maxAttempts: 3, initialDelayMs: 1 } },
    );
    const bad = await bus.publish(OrderPlaced, { orderId: 'o-bad', total: 9 }, { correlationId: 'flow-1' });
    const bad2 = await bus.publish(OrderPlaced, { orderId: 'o-bad2', total: 9 });
    const good = await bus.publish(OrderPlaced, { orderId: 'o-good', total: 1 });
    fail = true;
    await consumer.waitFor([bad, good, bad2]);
    expect(handled).toContain('o-good');

    const topics = await transport.admin.listTopics();
    expect(topics).toContain(deadLetterTopic('orders', 'email'));
    expect(deadLetterTopic('orders', 'email')).toBe('orders.email.dlq');

    const letters = await bus.deadLetters.list({ group: 'email', topic: 'orders' });
    const letter = letters.find((l) => l.envelope?.id === bad.id);
    expect(letter).toMatchObject({
      group: 'email',
      topic: 'orders',
      key: 'o-bad',
      reason: 'HANDLER_FAILED',
      attempts: 3,
      offset: bad.offset,
      partition: bad.partition,
    });
    expect(letter!.error).toMatch(/smtp said no/);
    expect(letter!.envelope).toMatchObject({
      type: 'OrderPlaced',
      correlationid: 'flow-1',
      data: { orderId: 'o-bad', total: 9 },
    });

    fail = false;
    await bus.deadLetters.retry({ group: 'email', topic: 'orders', id: letter!.id });
    expect(handled).toContain('o-bad');
    const remaining = await bus.deadLetters.list({ group: 'email', topic: 'orders' });
    expect(remaining.map((l) => l.key)).toEqual(['o-bad2']);
    await bus.deadLetters.skip({ group: 'email', topic: 'orders', id: remaining[0]!.id });
    expect(await bus.deadLetters.list({ group: 'email', topic: 'orders' })).toEqual([]);
    await expect(
      bus.deadLetters.skip({ group: 'email', topic: 'orders', id: remaining[0]!.id }),
    ).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await bus.close();
  });

  it('dead-letters undecodable and schema-invalid records with DECODE_FAILED / SCHEMA_INVALID and keeps consuming', async () => {
    const { bus, transport } = testBus();
    const handled: string[] = [];
    const consumer = bus.handle('robust', [OrderPlaced], ({ data }) => {
      handled.push(data.orderId);
    });
    const garbage = await transport.publish('orders', [
      { key: 'k1', headers: { 'content-type': 'application/json' }, value: Buffer.from('not an event') },
    ]);
    const invalid = await transport.publish('orders', [
      {
        key: 'k2',
        headers: {
          'ce-id': 'e-invalid',
          'ce-source': 'tidings://elsewhere',
          'ce-type': 'OrderPlaced',
          'ce-specversion': '1.0',
          'content-type': 'application/json',
        },
        value: Buffer.from(JSON.stringify({ orderId: 'k2', total: -5 })),
      },
    ]);
    const fine = await bus.publish(OrderPlaced, { orderId: 'after', total: 1 });
    await consumer.waitFor([...garbage, ...invalid, fine].map((a) => ({ ...a })));
    expect(handled).toEqual(['after']);
    const letters = await bus.deadLetters.list({ group: 'robust', topic: 'orders' });
    expect(letters.map((l) => l.reason).sort()).toEqual(['DECODE_FAILED', 'SCHEMA_INVALID']);
    expect(letters.find((l) => l.reason === 'SCHEMA_INVALID')!.error).toMatch(/total/);
    expect(letters.find((l) => l.reason === 'DECODE_FAILED')!.attempts).toBe(0);
    expect(Buffer.from(letters.find((l) => l.reason === 'DECODE_FAILED')!.value).toString()).toBe(
      'not an event',
    );
    await bus.close();
  });

  it('dead-letters an event written with a newer schema version than the consumer knows as UNKNOWN_VERSION', async () => {
    const { bus, transport } = testBus();
    const consumer = bus.handle('old-consumer', [OrderPlaced], () => undefined);
    const [ack] = await transport.publish('orders', [
      {
        key: 'o-9',
        headers: {
          'ce-id': 'e-v7',
          'ce-source': 'tidings://future',
          'ce-type': 'OrderPlaced',
          'ce-specversion': '1.0',
          'ce-schemaversion': '7',
          'content-type': 'application/json',
        },
        value: Buffer.from(JSON.stringify({ orderId: 'o-9', total: 1 })),
      },
    ]);
    await consumer.waitFor(ack!);
    const [letter] = await bus.deadLetters.list({ group: 'old-consumer', topic: 'orders' });
    expect(letter?.reason).toBe('UNKNOWN_VERSION');
    expect(letter?.error).toMatch(/version 7 is newer than the version this consumer knows \(1\)/);
    await bus.close();
  });
});

describe('graceful close', () => {
  it('commits what succeeded and leaves the rest for redelivery to the next member', async () => {
    const { bus, transport } = testBus();
    await transport.admin.createTopic('orders', { partitions: 1 });
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const firstRun: number[] = [];
    const consumer = bus.handle(
      'closer',
      [OrderPlaced],
      async ({ data }) => {
        if (data.seq === 3) await gate; // in flight during close
        firstRun.push(data.seq);
      },
      { concurrency: 1, closeTimeoutMs: 5_000 },
    );
    await bus.publishMany(
      [1, 2, 3, 4, 5].map((seq) => ({ event: OrderPlaced, data: { orderId: 'o-1', seq, total: 1 } })),
    );
    await waitUntil(() => firstRun.length === 2);
    const closing = consumer.close();
    release(); // the in-flight handler finishes within closeTimeoutMs
    await closing;
    expect(firstRun).toEqual([1, 2, 3]);
    const [partition] = (await transport.admin.describeGroup('closer')).lag;
    expect(partition).toMatchObject({ committedOffset: 3, lag: 2 }); // 1..3 committed, 4..5 left

    const secondRun: number[] = [];
    const next = bus.handle('closer', [OrderPlaced], ({ data }) => {
      secondRun.push(data.seq);
    });
    await next.waitFor({ topic: 'orders', partition: 0, offset: 4 });
    expect(secondRun).toEqual([4, 5]);
    await bus.close();
  });

  it('aborts handlers still running after closeTimeoutMs and leaves their events for redelivery', async () => {
    const { bus, transport } = testBus();
    await transport.admin.createTopic('orders', { partitions: 1 });
    let started = false;
    const consumer = bus.handle(
      'stuck',
      [OrderPlaced],
      async (_m, ctx) => {
        started = true;
        await new Promise<void>((_resolve, reject) =>
          ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error)),
        );
      },
      { closeTimeoutMs: 20 },
    );
    await bus.publish(OrderPlaced, { orderId: 'o-1', total: 1 });
    await waitUntil(() => started);
    await consumer.close();
    const [partition] = (await transport.admin.describeGroup('stuck')).lag;
    expect(partition).toMatchObject({ committedOffset: 0, lag: 1 });
    expect(await bus.deadLetters.list({ group: 'stuck', topic: 'orders' })).toEqual([]); // not dead-lettered on close
    await bus.close();
  });
});
