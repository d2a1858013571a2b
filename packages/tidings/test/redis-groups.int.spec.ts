// Consumer groups of the Redis transport across transports (as across processes) on the shared server: a member
// that stops heartbeating loses its partitions when its lease runs out; the next owner reclaims every entry pending
// in the group (XAUTOCLAIM, in pages) and replays it, none lost and none twice, while records keep coming; the stale
// member's acks are fenced, and what it reads late is taken back and delivered in order.
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Delivery, OutgoingRecord, Subscription } from '../src/core/transport.js';
import { createRedisTransport, type RedisTransport, type RedisTransportOptions } from '../src/redis/index.js';
import { publishScript } from '../src/redis/scripts.js';
import { internals } from '../src/redis/transport.js';
import { brokerMissing, removePrefix, serverUrl, uniquePrefix } from './conformance/children/redis.js';

const missing = await brokerMissing();

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const rec = (key: string, value: string): OutgoingRecord => ({
  key,
  headers: {},
  value: encoder.encode(value),
});
const text = (record: { value: Uint8Array }) => decoder.decode(record.value);

async function until(assertion: () => void | Promise<void>, timeoutMs = 15_000): Promise<void> {
  await vi.waitFor(assertion, { timeout: timeoutMs, interval: 10 });
}

function consume(sub: Subscription, handle: (delivery: Delivery) => void = (d) => d.ack()) {
  const received: Delivery[] = [];
  const done = (async () => {
    for await (const delivery of sub) {
      received.push(delivery);
      handle(delivery);
    }
  })();
  return { received, done };
}

let prefix = '';
const transports: RedisTransport[] = [];
function open(options: RedisTransportOptions = {}): RedisTransport {
  const transport = createRedisTransport({
    url: serverUrl,
    keyPrefix: prefix,
    leaseMs: 1_500,
    heartbeatIntervalMs: 300,
    ...options,
  });
  transports.push(transport);
  return transport;
}

async function raw<T>(run: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis(serverUrl, { protocol: 2, maxRetriesPerRequest: 1 });
  try {
    return await run(client);
  } finally {
    client.disconnect();
  }
}

describe.skipIf(missing !== undefined)(
  `redis transport: groups across transports${missing ? ` — skipped: ${missing}` : ''}`,
  () => {
    beforeEach(() => {
      prefix = uniquePrefix('grp');
    });

    afterEach(async () => {
      await Promise.all(transports.splice(0).map((transport) => transport.close()));
      await removePrefix(prefix);
    });

    it('is a native Redis consumer group: one per partition stream, members as consumers', async () => {
      const transport = open();
      await transport.admin.createTopic('orders', { partitions: 2 });
      const sub = transport.subscribe({ group: 'billing', topics: ['orders'], startFrom: 'earliest' });
      const c = consume(sub);
      await transport.publish('orders', [rec('a', '1'), rec('b', '2'), rec('c', '3')]);
      await until(() => expect(c.received).toHaveLength(3));
      const consumers = new Set<unknown>();
      for (const partition of [0, 1]) {
        const groups = (await raw((client) =>
          client.xinfo('GROUPS', `${prefix}:orders:${partition}`),
        )) as unknown[][];
        expect(groups.map((g) => g[1])).toEqual(['billing']);
        const inPartition = (await raw((client) =>
          client.xinfo('CONSUMERS', `${prefix}:orders:${partition}`, 'billing'),
        )) as unknown[][];
        for (const consumer of inPartition) consumers.add(consumer[1]);
      }
      expect([...consumers]).toEqual([sub.memberId]);
    });

    it('reclaims every pending entry of a member whose lease ran out: none lost, none twice, in order, stale acks fenced', async () => {
      const first = open();
      await first.admin.createTopic('t', { partitions: 1 });
      const held = 2_500; // more than one XAUTOCLAIM page (1,000)
      const acksBefore = 500;
      await first.publish(
        't',
        Array.from({ length: held }, (_, i) => rec(`k${i % 10}`, `${i}`)),
      );
      const stale = first.subscribe({ group: 'g', topics: ['t'], startFrom: 'earliest', prefetch: held });
      const staleDeliveries = consume(stale, () => undefined);
      await until(() => expect(staleDeliveries.received).toHaveLength(held));
      for (const d of staleDeliveries.received.slice(0, acksBefore)) d.ack();
      await until(async () =>
        expect((await first.admin.describeGroup('g')).lag[0]!.committedOffset).toBe(acksBefore),
      );
      internals.pauseHeartbeats(stale); // as a hung process: its lease runs out

      const second = open();
      const survivor = second.subscribe({ group: 'g', topics: ['t'], prefetch: 64 });
      const seen: Delivery[] = [];
      const c = consume(survivor, (d) => {
        seen.push(d);
        setImmediate(() => d.ack());
      });
      await until(() => expect(c.received.length).toBeGreaterThan(0));
      // Records keep coming while the survivor replays what it reclaimed.
      const more = 500;
      const publishing = (async () => {
        for (let i = 0; i < more; i += 50) {
          await second.publish(
            't',
            Array.from({ length: 50 }, (_, j) => rec(`k${(held + i + j) % 10}`, `${held + i + j}`)),
          );
        }
      })();
      // The stale member wakes up and acknowledges everything it held: fenced, nothing is lost to it.
      for (const d of staleDeliveries.received.slice(acksBefore)) d.ack();
      await publishing;
      await until(() => expect(seen).toHaveLength(held - acksBefore + more), 30_000);

      expect(seen.map((d) => d.offset)).toEqual(
        Array.from({ length: held - acksBefore + more }, (_, i) => acksBefore + i),
      );
      expect(seen.map(text)).toEqual(seen.map((d) => `${d.offset}`));
      for (const d of seen) expect(d.deliveryCount, `offset ${d.offset}`).toBe(d.offset < held ? 2 : 1);
      await until(async () => {
        const { lag, members } = await second.admin.describeGroup('g');
        expect(members.map((m) => m.memberId)).toEqual([survivor.memberId]);
        expect(lag[0]).toMatchObject({ committedOffset: held + more, lag: 0 });
      });
      // Every entry went through the group once per delivery: nothing is left pending.
      const pending = await raw<unknown[]>((client) => client.xpending(`${prefix}:t:0`, 'g'));
      expect(pending[0]).toBe(0);
    });

    it('takes back what a stale member read after losing the partition, and delivers it in order before newer records', async () => {
      const first = open();
      await first.admin.createTopic('t', { partitions: 1 });
      await first.publish(
        't',
        Array.from({ length: 10 }, (_, i) => rec('k', `${i}`)),
      );
      const stale = first.subscribe({ group: 'g', topics: ['t'], startFrom: 'earliest' });
      const early = consume(stale);
      await until(() => expect(early.received).toHaveLength(10));
      internals.pauseHeartbeats(stale);

      const second = open();
      const survivor = second.subscribe({ group: 'g', topics: ['t'] });
      const c = consume(survivor);
      await until(async () => {
        const { members, lag } = await second.admin.describeGroup('g');
        expect(members.map((m) => m.memberId)).toEqual([survivor.memberId]);
        expect(lag[0]!.committedOffset).toBe(10);
        expect(survivor.assignments()).toHaveLength(1);
      });
      // Ten more records and, in the same transaction, the stale member's late read of five of them (as its own
      // XREADGROUP would do): they land in its pending list, out of the survivor's sight.
      const now = Date.now();
      const args: Array<string | number> = [now, '', '', 0, 10];
      for (let i = 10; i < 20; i++) args.push(now, 'k', 1 + `${i}`.length, 0, `${i}`);
      const stream = `${prefix}:t:0`;
      await raw(async (client) => {
        const transaction = client.multi();
        transaction.eval(publishScript.source, 3, `${prefix}#next:t`, stream, `${prefix}#idx:t:0`, ...args);
        transaction.xreadgroup('GROUP', 'g', stale.memberId, 'COUNT', 5, 'STREAMS', stream, '>');
        const results = (await transaction.exec()) ?? [];
        for (const [error] of results) if (error) throw error;
      });
      await until(() => expect(c.received).toHaveLength(10));
      expect(c.received.map((d) => d.offset)).toEqual(Array.from({ length: 10 }, (_, i) => 10 + i));
      expect(c.received.map(text)).toEqual(Array.from({ length: 10 }, (_, i) => `${10 + i}`));
      await until(async () => {
        expect((await second.admin.describeGroup('g')).lag[0]).toMatchObject({ committedOffset: 20, lag: 0 });
        const consumers = (await raw((client) => client.xinfo('CONSUMERS', stream, 'g'))) as unknown[][];
        expect(consumers.map((consumer) => consumer[1])).toEqual([survivor.memberId]);
      });
    });
  },
);
