// The Redis transport against a private redis-server the test starts, kills (SIGKILL) and starts again on the same
// port and AOF (appendonly yes, appendfsync always): a server that is down at start-up gives TRANSPORT_UNAVAILABLE
// naming its URL and the transport connects once it is up; a server killed mid-stream loses nothing it acknowledged,
// publishing works again and subscriptions resume from their committed positions.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ErrorCode, isTidingsError } from '../src/core/errors.js';
import type { Delivery, OutgoingRecord, PublishAck, Subscription } from '../src/core/transport.js';
import { createRedisTransport, type RedisTransport } from '../src/redis/index.js';
import { privateBrokerMissing, startPrivateRedis, type PrivateRedis } from './conformance/children/redis.js';

const missing = privateBrokerMissing();

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const rec = (key: string, value: string): OutgoingRecord => ({
  key,
  headers: {},
  value: encoder.encode(value),
});
const text = (record: { value: Uint8Array }) => decoder.decode(record.value);

async function until(assertion: () => void | Promise<void>, timeoutMs = 20_000): Promise<void> {
  await vi.waitFor(assertion, { timeout: timeoutMs, interval: 20 });
}

function consume(sub: Subscription) {
  const received: Delivery[] = [];
  const done = (async () => {
    for await (const delivery of sub) {
      received.push(delivery);
      delivery.ack();
    }
  })();
  return { received, done };
}

const brokers: PrivateRedis[] = [];
const transports: RedisTransport[] = [];

function open(url: string): RedisTransport {
  const transport = createRedisTransport({
    url,
    persistent: true,
    connectTimeoutMs: 1_000,
    leaseMs: 3_000,
    heartbeatIntervalMs: 300,
  });
  transports.push(transport);
  return transport;
}

/** Publishes, trying again while the server is unreachable (each try may or may not have been written). */
async function publishRetrying(
  transport: RedisTransport,
  topic: string,
  records: OutgoingRecord[],
  failures = { count: 0 },
): Promise<PublishAck[]> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await transport.publish(topic, records);
    } catch (error) {
      if (!isTidingsError(error, ErrorCode.TRANSPORT_UNAVAILABLE) || attempt > 100) throw error;
      failures.count++;
    }
  }
}

describe.skipIf(missing !== undefined)(
  `redis transport: a server that goes away${missing ? ` — skipped: ${missing}` : ''}`,
  () => {
    afterEach(async () => {
      await Promise.all(transports.splice(0).map((transport) => transport.close()));
      await Promise.all(brokers.splice(0).map((broker) => broker.dispose()));
    });

    it('gives TRANSPORT_UNAVAILABLE naming the URL while the server is down at start-up, then connects', async () => {
      const broker = await startPrivateRedis();
      brokers.push(broker);
      await broker.stop();
      const transport = open(broker.url); // must not throw: it connects in the background
      const sub = transport.subscribe({ group: 'g', topics: ['t'] }); // stays open, joins once the server is up
      const c = consume(sub);

      const started = performance.now();
      const error: unknown = await transport
        .publish('t', [rec('k', 'lost')])
        .catch((caught: unknown) => caught);
      expect(isTidingsError(error, ErrorCode.TRANSPORT_UNAVAILABLE), String(error)).toBe(true);
      expect((error as Error).message).toContain(broker.url);
      expect(performance.now() - started).toBeLessThan(10_000);
      const adminError: unknown = await transport.admin.listTopics().catch((caught: unknown) => caught);
      expect(isTidingsError(adminError, ErrorCode.TRANSPORT_UNAVAILABLE)).toBe(true);

      await broker.start();
      await until(async () => expect((await transport.admin.describeGroup('g')).members).toHaveLength(1));
      const acks = await publishRetrying(transport, 't', [rec('k', 'after')]);
      expect(acks).toHaveLength(1);
      await until(() => expect(c.received.map(text)).toEqual(['after']));
    });

    it(
      'loses nothing it acknowledged when killed mid-stream; publishing and consuming resume',
      { timeout: 60_000 },
      async () => {
        const broker = await startPrivateRedis();
        brokers.push(broker);
        const producer = open(broker.url);
        const consumer = open(broker.url);
        await producer.admin.createTopic('t', { partitions: 4 });
        const sub = consumer.subscribe({ group: 'g', topics: ['t'], startFrom: 'earliest' });
        const c = consume(sub);
        await until(() => expect(sub.assignments()).toHaveLength(4));

        const keys = Array.from({ length: 8 }, (_, i) => `key-${i}`);
        const acked: PublishAck[] = [];
        const ackedValues = new Set<string>();
        const failures = { count: 0 };
        let restart: Promise<void> | undefined;
        for (let round = 0; round < 100; round++) {
          if (round === 40) {
            // Killed while publishing and consuming go on; started again once a publish has failed.
            restart = (async () => {
              await broker.stop();
              await until(() => expect(failures.count).toBeGreaterThan(0));
              await broker.start();
            })();
          }
          const records = keys.map((key) => rec(key, `${key}/${round}`));
          acked.push(...(await publishRetrying(producer, 't', records, failures)));
          for (const r of records) ackedValues.add(text(r));
        }
        await restart;
        await until(() => {
          const received = new Set(c.received.map(text));
          expect([...ackedValues].filter((v) => !received.has(v))).toEqual([]);
        });
        // Offsets stay dense and unique per partition across the restart (a retried publish may repeat records).
        for (let partition = 0; partition < 4; partition++) {
          const offsets = acked.filter((a) => a.partition === partition).map((a) => a.offset);
          expect(new Set(offsets).size).toBe(offsets.length);
        }
        // Per key, the rounds arrive in order, going back only for redeliveries.
        for (const key of keys) {
          let last = -1;
          for (const d of c.received.filter((r) => r.key === key)) {
            const round = Number(text(d).split('/')[1]);
            if (round <= last)
              expect(d.deliveryCount > 1 || round === last, `${key} round ${round} after ${last}`).toBe(true);
            last = round;
          }
        }
        await until(async () => {
          const { lag } = await consumer.admin.describeGroup('g');
          expect(lag.reduce((sum, p) => sum + p.lag, 0)).toBe(0);
        });
      },
    );
  },
);
