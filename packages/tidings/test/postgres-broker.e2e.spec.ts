import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCode, isTidingsError } from '../src/core/errors.js';
import { createPostgresTransport, type PostgresTransport } from '../src/postgres/index.js';
import { consume, expectTidingsError, rec, text, until } from './log-fixtures/helpers.js';
import { brokerMissing, privateBrokerMissing, startPrivatePostgres } from './postgres-fixtures/helpers.js';

// A PostgreSQL cluster of the test's own (initdb in a temp directory, a private port on 127.0.0.1), killed with
// `pg_ctl stop -m immediate` (as a crash: no checkpoint, WAL recovery at the next start) and started again.

const missing = (await brokerMissing()) ?? privateBrokerMissing();
const suite = (name: string) => (missing === undefined ? name : `${name} — skipped: ${missing}`);

const opened: Array<{ close(): Promise<void> }> = [];
const servers: Array<{ dispose(): Promise<void> }> = [];
afterEach(async () => {
  for (const item of opened.splice(0)) await item.close();
  for (const server of servers.splice(0)) await server.dispose();
});

async function privateServer() {
  const server = await startPrivatePostgres();
  servers.push(server);
  return server;
}

function open(url: string): PostgresTransport {
  const transport = createPostgresTransport({ url, leaseMs: 3_000, poolSize: 3, pollIntervalMs: 200 });
  opened.push(transport);
  return transport;
}

/** Publishes, retrying while the server is unreachable; returns the acks and how many attempts failed. */
async function publishRetrying(
  transport: PostgresTransport,
  topic: string,
  records: ReturnType<typeof rec>[],
) {
  let failures = 0;
  for (;;) {
    try {
      return { acks: await transport.publish(topic, records), failures };
    } catch (error) {
      if (
        !isTidingsError(error, ErrorCode.TRANSPORT_UNAVAILABLE) &&
        !isTidingsError(error, ErrorCode.PUBLISH_FAILED)
      ) {
        throw error;
      }
      failures++;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

describe.skipIf(missing !== undefined)(
  suite('postgres transport: a server of its own, stopped and started'),
  () => {
    it('names the server when it is down at start-up, and reconnects once it is up', async () => {
      const server = await privateServer();
      await server.stop();
      const transport = open(server.url); // connects lazily: creating it while the server is down is fine
      const sub = transport.subscribe({ group: 'g', topics: ['t'], startFrom: 'earliest' });
      const c = consume(sub);

      const error = await expectTidingsError(
        transport.publish('t', [rec('k', 'v')]),
        ErrorCode.TRANSPORT_UNAVAILABLE,
      );
      expect(error.message).toContain(server.url);
      expect(error.retryable).toBe(true);
      const adminError = await expectTidingsError(
        transport.admin.listTopics(),
        ErrorCode.TRANSPORT_UNAVAILABLE,
      );
      expect(adminError.message).toContain(server.url);

      await server.start();
      const { acks } = await publishRetrying(transport, 't', [rec('k', 'after')]);
      expect(acks).toHaveLength(1);
      await until(() => expect(c.received.map((d) => text(d))).toEqual(['after']), 20_000);
      await expect(Promise.race([sub.closed, Promise.resolve('open')])).resolves.toBe('open');
    }, 60_000);

    it('keeps every acknowledged record through a crash of the server, and consumers resume where they were', async () => {
      const server = await privateServer();
      const producer = open(server.url);
      const consumer = open(server.url);
      await producer.admin.createTopic('t', { partitions: 2 });
      const sub = consumer.subscribe({ group: 'g', topics: ['t'], startFrom: 'earliest' });
      const c = consume(sub);
      await until(() => expect(sub.assignments()).toHaveLength(2));

      const acked: string[] = [];
      let failures = 0;
      let crashed: Promise<void> | undefined;
      for (let i = 0; i < 60; i++) {
        const values = Array.from({ length: 10 }, (_, j) => `${i * 10 + j}`);
        const result = await publishRetrying(
          producer,
          't',
          values.map((v) => rec(`k${Number(v) % 5}`, v)),
        );
        failures += result.failures;
        acked.push(...values);
        if (i === 20) {
          await server.stop(); // immediate: as a crash; the next publishes fail until it is back
          crashed = new Promise((resolve) => setTimeout(resolve, 300)).then(() => server.start());
        }
      }
      await crashed;
      expect(failures, 'publishes failed while the server was down').toBeGreaterThan(0);
      await until(() => {
        const seen = new Set(c.received.map((d) => text(d)));
        expect(acked.filter((v) => !seen.has(v))).toEqual([]);
      }, 30_000);

      // Every acknowledged record is in the log exactly once (a retried publish whose first attempt committed may add
      // a second copy under a new offset; those are the only extras).
      const stored = (await Promise.all([0, 1].map((p) => producer.admin.read('t', p, 0, 10_000)))).flat();
      const storedValues = new Set(stored.map((r) => text(r)));
      expect(acked.filter((v) => !storedValues.has(v))).toEqual([]);
      expect(stored.length - acked.length).toBeLessThanOrEqual(failures * 10);
      await until(async () => {
        const { lag } = await consumer.admin.describeGroup('g');
        expect(lag.every((p) => p.lag === 0)).toBe(true);
      }, 20_000);
    }, 90_000);
  },
);
