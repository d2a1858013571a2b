// The NATS JetStream transport against a private nats-server the test starts, kills (SIGKILL) and starts again on the
// same port and store: a server down at start-up is reported with its URL and connected to once it is up; a
// restart keeps what was acknowledged, and members resume from their committed positions.
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  ErrorCode,
  isTidingsError,
  type Delivery,
  type OutgoingRecord,
  type PublishAck,
  type Subscription,
} from 'tidings';
import { createNatsTransport, type NatsTransport } from 'tidings/nats';
import {
  privateBrokerMissing,
  startPrivateNats,
  testOptions,
  type PrivateNats,
} from './conformance/children/nats.js';

const missing = privateBrokerMissing();
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const text = (delivery: { value: Uint8Array }) => decoder.decode(delivery.value);

const opened: Array<NatsTransport | PrivateNats> = [];
afterEach(async () => {
  for (const item of opened.splice(0).reverse()) {
    if ('dispose' in item) await item.dispose();
    else await item.close();
  }
});

function nats(server: PrivateNats): NatsTransport {
  const transport = createNatsTransport({ servers: server.url, prefix: 'faults', ...testOptions });
  opened.push(transport);
  return transport;
}

async function server(): Promise<PrivateNats> {
  const started = await startPrivateNats();
  opened.push(started);
  return started;
}

function rec(key: string, value: string): OutgoingRecord {
  return { key, headers: {}, value: encoder.encode(value) };
}

async function until(assertion: () => void | Promise<void>, timeoutMs = 30_000): Promise<void> {
  await vi.waitFor(assertion, { timeout: timeoutMs, interval: 20 });
}

/** Publishes, retrying while the transport says the server cannot be reached. */
async function publishRetrying(
  transport: NatsTransport,
  topic: string,
  records: OutgoingRecord[],
): Promise<PublishAck[]> {
  let acks: PublishAck[] | undefined;
  await until(async () => {
    try {
      acks = await transport.publish(topic, records);
    } catch (error) {
      if (
        isTidingsError(error, ErrorCode.TRANSPORT_UNAVAILABLE) ||
        isTidingsError(error, ErrorCode.PUBLISH_FAILED)
      ) {
        throw error; // retried by `until`
      }
      throw Object.assign(new Error(`unexpected: ${String(error)}`), { cause: error });
    }
  });
  return acks!;
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

describe.skipIf(missing !== undefined)(
  `nats transport: broker faults${missing ? ` — skipped: ${missing}` : ''}`,
  () => {
    it('reports a server down at start-up with its URL, and works once it is up, without a new transport', async () => {
      const broker = await server();
      await broker.stop();
      const transport = nats(broker);
      const sub = transport.subscribe({ group: 'g', topics: ['orders'], startFrom: 'earliest' });
      const c = consume(sub);
      const error: unknown = await transport.publish('orders', [rec('k', 'lost')]).catch((e: unknown) => e);
      expect(isTidingsError(error, ErrorCode.TRANSPORT_UNAVAILABLE), String(error)).toBe(true);
      expect((error as Error).message).toContain(broker.url);
      const adminError: unknown = await transport.admin.listTopics().catch((e: unknown) => e);
      expect(isTidingsError(adminError, ErrorCode.TRANSPORT_UNAVAILABLE), String(adminError)).toBe(true);
      expect((adminError as Error).message).toContain(broker.url);

      await broker.start();
      const [ack] = await publishRetrying(transport, 'orders', [rec('k', 'first')]);
      expect(ack!.offset).toBe(0);
      await until(() => expect(c.received.map(text)).toEqual(['first']));
    });

    // Two server crashes; an ack the server had not saved when it was killed comes back after ack_wait (10 s).
    it(
      'keeps acknowledged records and committed positions across a server crash, and resumes members',
      { timeout: 90_000 },
      async () => {
        const broker = await server();
        const producer = nats(broker);
        await producer.admin.createTopic('orders', { partitions: 1 });
        await producer.publish(
          'orders',
          Array.from({ length: 10 }, (_, i) => rec('k', `${i}`)),
        );
        const consumerTransport = nats(broker);
        const held: Delivery[] = [];
        const c = consume(
          consumerTransport.subscribe({ group: 'g', topics: ['orders'], startFrom: 'earliest' }),
          (d) => (Number(text(d)) < 5 ? d.ack() : held.push(d)),
        );
        await until(async () => {
          expect(c.received).toHaveLength(10);
          expect((await producer.admin.describeGroup('g')).lag).toMatchObject([
            { committedOffset: 5, lag: 5 },
          ]);
        });

        await broker.stop();
        const error: unknown = await producer.publish('orders', [rec('k', 'down')]).catch((e: unknown) => e);
        expect(isTidingsError(error, ErrorCode.TRANSPORT_UNAVAILABLE), String(error)).toBe(true);
        expect((error as Error).message).toContain(broker.url);
        await broker.start();

        // Nothing acknowledged was lost; the running member goes on, and its held deliveries can still be settled.
        await publishRetrying(
          producer,
          'orders',
          Array.from({ length: 5 }, (_, i) => rec('k', `${10 + i}`)),
        );
        await until(() =>
          expect(c.received.map(text).filter((v) => Number(v) >= 10)).toEqual(['10', '11', '12', '13', '14']),
        );
        const stored = await producer.admin.read('orders', 0, 0, 100);
        expect(stored.map(text).filter((v) => /^\d+$/.test(v))).toEqual(
          Array.from({ length: 15 }, (_, i) => `${i}`),
        );
        for (const d of held.splice(0)) d.ack();
        await until(async () => {
          for (const d of held.splice(0)) d.ack();
          expect((await producer.admin.describeGroup('g')).lag).toMatchObject([{ lag: 0 }]);
        });
        const committed = (await producer.admin.describeGroup('g')).lag[0]!.committedOffset;

        // A new member of the group starts from the committed position, after another crash.
        await consumerTransport.close();
        await broker.stop();
        await broker.start();
        const next = consume(
          nats(broker).subscribe({ group: 'g', topics: ['orders'], startFrom: 'earliest' }),
        );
        await publishRetrying(producer, 'orders', [rec('k', 'after')]);
        await until(() => expect(next.received.map(text)).toEqual(['after']));
        expect(next.received[0]!.offset).toBe(committed);
      },
    );
  },
);
