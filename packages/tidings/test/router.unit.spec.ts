import { describe, expect, it } from 'vitest';
import { waitUntil } from '../src/testing/index.js';
import { OrderPlaced, OrderShipped, randomDelay, testBus } from './fixtures.js';

describe('router: per-key order with key-level parallelism', () => {
  it('keeps each key in order with concurrency 16 over 1,000 keys x 20 events and random handler delays', async () => {
    const { bus } = testBus();
    const keys = 1000;
    const perKey = 20;
    const seen = new Map<string, number[]>();
    let running = 0;
    let maxRunning = 0;
    const runningKeys = new Set<string>();
    let overlapSameKey = false;

    const consumer = bus.handle(
      'order-checker',
      [OrderPlaced],
      async ({ data, key }) => {
        if (runningKeys.has(key)) overlapSameKey = true;
        runningKeys.add(key);
        running++;
        maxRunning = Math.max(maxRunning, running);
        await randomDelay(3);
        const list = seen.get(key) ?? [];
        list.push(data.seq);
        seen.set(key, list);
        running--;
        runningKeys.delete(key);
      },
      { concurrency: 16, prefetch: 512 },
    );

    // Interleave keys: seq s of every key, then seq s+1 ...
    const receipts = [];
    for (let seq = 0; seq < perKey; seq++) {
      const batch = [];
      for (let k = 0; k < keys; k++)
        batch.push({ event: OrderPlaced, data: { orderId: `o-${k}`, seq, total: 1 } });
      receipts.push(...(await bus.publishMany(batch)));
    }
    await consumer.waitFor(receipts, { timeoutMs: 60_000 });

    expect(seen.size).toBe(keys);
    for (const [key, seqs] of seen) {
      expect(seqs, `order of ${key}`).toEqual(Array.from({ length: perKey }, (_, i) => i));
    }
    expect(overlapSameKey).toBe(false);
    expect(maxRunning).toBeGreaterThan(1); // different keys really ran concurrently
    expect(maxRunning).toBeLessThanOrEqual(16);
    await bus.close();
  });

  it('delivers every event to each of three groups (fan-out), each at its own pace', async () => {
    const { bus } = testBus();
    const got: Record<string, string[]> = { email: [], analytics: [], warehouse: [] };
    const consumers = Object.keys(got).map((group, index) =>
      bus.handle(group, [OrderPlaced], async ({ data }) => {
        if (index === 2) await randomDelay(5); // one slow group
        got[group]!.push(data.orderId);
      }),
    );
    const receipts = await bus.publishMany(
      Array.from({ length: 50 }, (_, i) => ({ event: OrderPlaced, data: { orderId: `o-${i}`, total: i } })),
    );
    for (const consumer of consumers) await consumer.waitFor(receipts);
    for (const group of Object.keys(got))
      expect(got[group]!.sort()).toEqual(receipts.map((_, i) => `o-${i}`).sort());
    await bus.close();
  });

  it('dispatches several types of one topic to one handler, discriminated by type, and skips types it does not handle', async () => {
    const { bus } = testBus();
    const seen: string[] = [];
    const consumer = bus.handle('shipping', [OrderShipped], ({ type, data }) => {
      seen.push(`${type}:${data.carrier}`);
    });
    const placed = await bus.publish(OrderPlaced, { orderId: 'o-1', total: 5 });
    const shipped = await bus.publish(OrderShipped, { orderId: 'o-1', carrier: 'dhl' });
    await consumer.waitFor([placed, shipped]);
    expect(seen).toEqual(['OrderShipped:dhl']);
    expect(consumer.stats().skipped).toBe(1);
    await bus.close();
  });

  it('holds at most `prefetch` deliveries, so memory stays bounded under a backlog', async () => {
    const { bus } = testBus();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let started = 0;
    const consumer = bus.handle(
      'slow',
      [OrderPlaced],
      async () => {
        started++;
        await gate;
      },
      { prefetch: 10, concurrency: 4 },
    );
    const receipts = await bus.publishMany(
      Array.from({ length: 200 }, (_, i) => ({ event: OrderPlaced, data: { orderId: `o-${i}`, total: 1 } })),
    );
    await waitUntil(() => started === 4);
    const lag = await bus.transport.admin.describeGroup('slow');
    expect(lag.lag.reduce((sum, p) => sum + p.lag, 0)).toBe(200); // nothing committed while handlers are blocked
    expect(started).toBe(4); // concurrency bound
    release();
    await consumer.waitFor(receipts);
    await bus.close();
  });
});
