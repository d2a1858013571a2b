// Consumer groups of the NATS JetStream transport against the shared nats-server: fan-out, members sharing
// partitions, handover after the old owner settled (or its rebalance timeout, fencing its late acks), prefetch,
// nack with delay, start positions, resets, lag. Each member is a separate transport (a separate connection), as a
// separate process would be.
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import {
  ErrorCode,
  isTidingsError,
  partitionForKey,
  type Delivery,
  type OutgoingRecord,
  type Subscription,
} from 'tidings';
import { createNatsTransport, type NatsTransport, type NatsTransportOptions } from 'tidings/nats';
import {
  brokerMissing,
  removePrefix,
  serverUrl,
  testOptions,
  uniquePrefix,
} from './conformance/children/nats.js';

const missing = await brokerMissing();
const prefix = uniquePrefix('gr');
const encoder = new TextEncoder();
const decoder = new TextDecoder();
let topicSeq = 0;

const transports: NatsTransport[] = [];
function nats(options: NatsTransportOptions = {}): NatsTransport {
  const transport = createNatsTransport({ servers: serverUrl, prefix, ...testOptions, ...options });
  transports.push(transport);
  return transport;
}

/** A topic name of its own per test. */
function topicName(label: string): string {
  return `${label}-${++topicSeq}`;
}

function rec(key: string, value: string, extra: Partial<OutgoingRecord> = {}): OutgoingRecord {
  return { key, headers: {}, value: encoder.encode(value), ...extra };
}

const text = (delivery: { value: Uint8Array }) => decoder.decode(delivery.value);

async function until(assertion: () => void | Promise<void>, timeoutMs = 20_000): Promise<void> {
  await vi.waitFor(assertion, { timeout: timeoutMs, interval: 10 });
}

/** Iterates in the background; `handle` settles each delivery (default: ack at once). */
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

/** A key that `partitionForKey` places in `partition` of `partitions`. */
function keyIn(partition: number, partitions: number): string {
  for (let i = 0; ; i++) if (partitionForKey(`k${i}`, partitions) === partition) return `k${i}`;
}

async function lagOf(transport: NatsTransport, group: string): Promise<number[]> {
  return (await transport.admin.describeGroup(group)).lag.map((l) => l.lag);
}

afterEach(async () => {
  await Promise.all(transports.splice(0).map((transport) => transport.close()));
});

describe.skipIf(missing !== undefined)(
  `nats transport: consumer groups${missing ? ` — skipped: ${missing}` : ''}`,
  () => {
    afterAll(() => removePrefix(prefix), 30_000);

    it('gives every group every record, and splits partitions between the members of one group', async () => {
      const topic = topicName('split');
      const producer = nats();
      await producer.admin.createTopic(topic, { partitions: 6 });
      const groups = ['billing', 'audit'].map((group) =>
        consume(nats().subscribe({ group: `${group}-${topic}`, topics: [topic], startFrom: 'earliest' })),
      );
      const a = nats().subscribe({ group: `shared-${topic}`, topics: [topic], startFrom: 'earliest' });
      const b = nats().subscribe({ group: `shared-${topic}`, topics: [topic], startFrom: 'earliest' });
      await until(async () => {
        const description = await producer.admin.describeGroup(`shared-${topic}`);
        expect(description.members.map((m) => m.assignments.length)).toEqual([3, 3]);
        expect(a.assignments().length + b.assignments().length).toBe(6);
      });
      const ca = consume(a);
      const cb = consume(b);
      await producer.publish(
        topic,
        Array.from({ length: 120 }, (_, i) => rec(`key-${i % 13}`, `${i}`)),
      );
      await until(() => {
        for (const g of groups) expect(g.received).toHaveLength(120);
        expect(ca.received.length + cb.received.length).toBe(120);
      });
      for (const g of groups) expect(new Set(g.received.map(text)).size).toBe(120);
      expect(new Set([...ca.received, ...cb.received].map(text)).size).toBe(120);
      const partitionsOf = (sub: Subscription) => sub.assignments().map((x) => x.partition);
      expect(ca.received.every((d) => partitionsOf(a).includes(d.partition))).toBe(true);
      expect(cb.received.every((d) => partitionsOf(b).includes(d.partition))).toBe(true);
      const description = await producer.admin.describeGroup(`shared-${topic}`);
      expect(description.members.map((m) => m.memberId).sort()).toEqual([a.memberId, b.memberId].sort());
      expect(await producer.admin.listGroups()).toEqual(
        expect.arrayContaining([`billing-${topic}`, `audit-${topic}`, `shared-${topic}`]),
      );
      await until(async () => expect(await lagOf(producer, `shared-${topic}`)).toEqual([0, 0, 0, 0, 0, 0]));
    });

    it('hands a partition to a joining member only after the old owner settled its deliveries, in key order', async () => {
      const topic = topicName('handover');
      const producer = nats();
      await producer.admin.createTopic(topic, { partitions: 2 });
      const held: Delivery[] = [];
      const group = `g-${topic}`;
      const first = consume(nats().subscribe({ group, topics: [topic], startFrom: 'earliest' }), (d) =>
        held.push(d),
      );
      const keys = [keyIn(0, 2), keyIn(1, 2)];
      await producer.publish(
        topic,
        Array.from({ length: 10 }, (_, i) => rec(keys[i % 2]!, `${i}`)),
      );
      await until(() => expect(first.received).toHaveLength(10));
      const second = consume(nats().subscribe({ group, topics: [topic], startFrom: 'earliest' }));
      await until(async () =>
        expect((await producer.admin.describeGroup(group)).members.map((m) => m.assignments.length)).toEqual([
          1, 1,
        ]),
      );
      await producer.publish(
        topic,
        Array.from({ length: 10 }, (_, i) => rec(keys[i % 2]!, `${10 + i}`)),
      );
      // The partition moving to the second member waits for the first one's five held deliveries.
      await until(async () => expect(await lagOf(producer, group)).toEqual([10, 10]));
      expect(second.received).toHaveLength(0);
      for (const delivery of held) delivery.ack();
      await until(() => expect(first.received.length + second.received.length).toBe(20));
      await until(async () => expect(await lagOf(producer, group)).toEqual([0, 0]));
      expect(second.received.length).toBe(5);
      const moved = second.received[0]!.partition;
      const order = [...first.received, ...second.received]
        .filter((d) => d.partition === moved)
        .map((d) => Number(text(d)));
      expect(order).toEqual([...order].sort((x, y) => x - y));
      expect(second.received.every((d) => d.deliveryCount === 1)).toBe(true);
    });

    it('fences the old owner after rebalanceTimeoutMs: its late ack is ignored and the record comes again', async () => {
      const topic = topicName('fence');
      const producer = nats();
      await producer.admin.createTopic(topic, { partitions: 2 });
      const moving = keyIn(1, 2); // partition 1 moves to the second member when it joins (round-robin, join order)
      await producer.publish(topic, [rec(moving, 'held'), rec(keyIn(0, 2), 'stays')]);
      const stuck: Delivery[] = [];
      const group = `g-${topic}`;
      const first = consume(
        nats({ rebalanceTimeoutMs: 300 }).subscribe({ group, topics: [topic], startFrom: 'earliest' }),
        (d) => (d.partition === 1 ? stuck.push(d) : d.ack()),
      );
      await until(() => expect(first.received).toHaveLength(2));
      const late: Delivery[] = [];
      const second = consume(nats().subscribe({ group, topics: [topic], startFrom: 'earliest' }), (d) =>
        late.push(d),
      );
      await until(() => expect(second.received).toHaveLength(1));
      const again = second.received[0]!;
      expect([again.partition, again.offset, text(again), again.deliveryCount]).toEqual([1, 0, 'held', 2]);
      stuck[0]!.ack(); // fenced: the partition moved on without it
      await until(async () => expect(await lagOf(producer, group)).toEqual([0, 1]));
      again.ack();
      await until(async () => expect(await lagOf(producer, group)).toEqual([0, 0]));
      expect(first.received).toHaveLength(2);
    });

    it(
      "hands out a record held past ack_wait once: the server's redelivered copy is not handed out, and the ack settles it",
      { timeout: 40_000 },
      async () => {
        // JetStream redelivers a record not acked within ack_wait (10 s); a slow handler must not see it twice, and its
        // late ack must settle the copy the server now waits for, so the lag reaches 0 at once.
        const transport = nats();
        const topic = topicName('slow');
        await transport.admin.createTopic(topic, { partitions: 1 });
        await transport.publish(topic, [rec('k', 'slow')]);
        const held: Delivery[] = [];
        const c = consume(
          transport.subscribe({ group: 'slow', topics: [topic], startFrom: 'earliest' }),
          (d) => held.push(d),
        );
        await until(() => expect(c.received).toHaveLength(1));
        await new Promise((resolve) => setTimeout(resolve, 12_500)); // past ack_wait: the server sent a copy
        expect(c.received).toHaveLength(1);
        held[0]!.ack();
        await until(async () => expect(await lagOf(transport, 'slow')).toEqual([0]), 5_000);
        expect(c.received.map(text)).toEqual(['slow']);
      },
    );

    it('bounds un-acknowledged deliveries by prefetch, and redelivers nacks (with their delay) counting deliveries', async () => {
      const topic = topicName('prefetch');
      const transport = nats();
      await transport.admin.createTopic(topic, { partitions: 2 });
      await transport.publish(
        topic,
        Array.from({ length: 10 }, (_, i) => rec(`key-${i}`, `${i}`)),
      );
      const held: Delivery[] = [];
      const group = `g-${topic}`;
      const c = consume(
        transport.subscribe({ group, topics: [topic], startFrom: 'earliest', prefetch: 3 }),
        (d) => held.push(d),
      );
      await until(() => expect(c.received).toHaveLength(3));
      // Nothing more comes while three are held: wait for the lag to show the member is up to date, then look again.
      await until(async () => expect((await lagOf(transport, group)).reduce((a, b) => a + b, 0)).toBe(10));
      expect(c.received).toHaveLength(3);
      held.shift()!.ack();
      await until(() => expect(c.received).toHaveLength(4));
      const nacked = held.shift()!;
      const nackedAtMs = Date.now();
      nacked.nack({ delayMs: 300 });
      const isAgain = (d: Delivery) =>
        d.offset === nacked.offset && d.partition === nacked.partition && d !== nacked;
      // Everything else is acknowledged as it comes, so the prefetch slots are free for the redelivery.
      await until(() => {
        for (const d of held.splice(0)) if (!isAgain(d)) d.ack();
        expect(c.received.find(isAgain)).toBeDefined();
      });
      const again = c.received.find(isAgain)!;
      expect(again.deliveryCount).toBe(2);
      expect(Date.now() - nackedAtMs).toBeGreaterThanOrEqual(250);
      again.ack();
      await until(async () => {
        for (const d of held.splice(0)) d.ack();
        expect(await lagOf(transport, group)).toEqual([0, 0]);
      });
      expect(c.received).toHaveLength(11);
      expect(() => again.nack({ delayMs: -1 })).toThrow(/delayMs/);
    });

    it("starts a new group at 'latest', 'earliest', an offset or a time, and resets only without live members", async () => {
      const topic = topicName('start');
      const transport = nats();
      await transport.admin.createTopic(topic, { partitions: 1 });
      await transport.publish(
        topic,
        Array.from({ length: 6 }, (_, i) => rec('k', `${i}`, { timestamp: 50_000 + 1_000 * i })),
      );
      const groups = {
        latest: consume(transport.subscribe({ group: `latest-${topic}`, topics: [topic] })),
        earliest: consume(
          transport.subscribe({ group: `earliest-${topic}`, topics: [topic], startFrom: 'earliest' }),
        ),
        offset: consume(
          transport.subscribe({ group: `offset-${topic}`, topics: [topic], startFrom: { offset: 4 } }),
        ),
        clamped: consume(
          transport.subscribe({ group: `clamped-${topic}`, topics: [topic], startFrom: { offset: 99 } }),
        ),
        time: consume(
          transport.subscribe({ group: `time-${topic}`, topics: [topic], startFrom: { timestamp: 52_500 } }),
        ),
      };
      await transport.publish(topic, [rec('k', '6', { timestamp: 60_000 })]);
      const offsets = (c: { received: Delivery[] }) => c.received.map((d) => d.offset);
      await until(() => {
        expect(offsets(groups.latest)).toEqual([6]);
        expect(offsets(groups.earliest)).toEqual([0, 1, 2, 3, 4, 5, 6]);
        expect(offsets(groups.offset)).toEqual([4, 5, 6]);
        expect(offsets(groups.clamped)).toEqual([6]);
        expect(offsets(groups.time)).toEqual([3, 4, 5, 6]);
      });
      const group = `earliest-${topic}`;
      await until(async () => expect(await lagOf(transport, group)).toEqual([0]));

      const refused: unknown = await transport.admin
        .resetOffsets(group, topic, 'earliest')
        .catch((e: unknown) => e);
      expect(isTidingsError(refused, ErrorCode.CONFLICT)).toBe(true);
      expect((refused as Error).message).toContain('1 live member');
      await transport.close();

      const admin = nats();
      await admin.admin.resetOffsets(group, topic, { offset: 2 });
      expect((await admin.admin.describeGroup(group)).lag).toMatchObject([{ committedOffset: 2, lag: 5 }]);
      const replay = consume(admin.subscribe({ group, topics: [topic] }));
      await until(() => expect(offsets(replay)).toEqual([2, 3, 4, 5, 6]));
      expect(replay.received.every((d) => d.deliveryCount === 1)).toBe(true);
      await expect(admin.admin.describeGroup('nobody')).rejects.toMatchObject({ code: ErrorCode.NOT_FOUND });
      await expect(admin.admin.resetOffsets(group, 'no-such-topic', 'earliest')).rejects.toMatchObject({
        code: ErrorCode.NOT_FOUND,
      });
    });

    it('closes on abort, ends iterators on transport close, and refuses a second iteration', async () => {
      const topic = topicName('lifecycle');
      const transport = nats();
      const controller = new AbortController();
      const group = `g-${topic}`;
      const sub = transport.subscribe({ group, topics: [topic], signal: controller.signal });
      const c = consume(sub);
      expect(() => sub[Symbol.asyncIterator]()).toThrow(/iterated once/);
      await until(async () => expect((await transport.admin.describeGroup(group)).members).toHaveLength(1));
      controller.abort();
      await c.done;
      await expect(sub.closed).resolves.toBeUndefined();
      await until(async () => expect((await transport.admin.describeGroup(group)).members).toEqual([]));

      const born = transport.subscribe({
        group: `never-${topic}`,
        topics: [topic],
        signal: AbortSignal.abort(),
      });
      await expect(born.closed).resolves.toBeUndefined();
      expect(await transport.admin.listGroups()).not.toContain(`never-${topic}`);

      const other = transport.subscribe({ group: `h-${topic}`, topics: [topic] });
      const co = consume(other);
      await transport.close();
      await co.done;
      await expect(other.closed).resolves.toBeUndefined();
    });
  },
);
