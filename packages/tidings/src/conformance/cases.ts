/**
 * The cases of the conformance suite. Each takes a {@link CaseContext} and either resolves (passed) or throws with
 * a message that says what the transport did wrong. Cases use the public API: the bus where the case is about what
 * users see, the raw transport where it is about the transport itself.
 */
import { expect } from 'vitest';
import type { Bus, PublishManyItem } from '../core/bus.js';
import { decodeEnvelope, encodeEnvelope, type WireMode } from '../core/codec.js';
import type { Envelope } from '../core/envelope.js';
import { ErrorCode, isTidingsError } from '../core/errors.js';
import type { Receipt } from '../core/handler.js';
import { partitionForKey } from '../core/partitioner.js';
import type { Delivery, OutgoingRecord, PartitionLag, StoredRecord, Transport } from '../core/transport.js';
import {
  Recorder,
  bytes,
  itemEvent,
  orderViolations,
  text,
  type CaseContext,
  type Item,
  type ItemEvent,
} from './context.js';
import type { ConformanceCase } from './options.js';

/** Partitions of every topic the suite creates: per-key order is checked across at least four. */
export const partitionCount = 4;

type CaseFn = (ctx: CaseContext) => Promise<void>;

// ---------------------------------------------------------------------------------------------------------------
// Helpers

/** `perPartition` keys for each of the topic's partitions (by `partitionForKey`), interleaved: k0 of p0, of p1, ... */
function keysByPartition(perPartition: number, label = 'key'): string[] {
  const buckets: string[][] = Array.from({ length: partitionCount }, () => []);
  for (let i = 0; buckets.some((b) => b.length < perPartition); i++) {
    const key = `${label}-${i}`;
    const bucket = buckets[partitionForKey(key, partitionCount)]!;
    if (bucket.length < perPartition) bucket.push(key);
  }
  const keys: string[] = [];
  for (let i = 0; i < perPartition; i++) for (const bucket of buckets) keys.push(bucket[i]!);
  return keys;
}

/** Publishes seq `from` to `to - 1` of every key, one `publishMany` call (one event per key) per seq. */
async function publishRounds(
  bus: Bus,
  event: ItemEvent,
  keys: readonly string[],
  from: number,
  to: number,
): Promise<Receipt[]> {
  const receipts: Receipt[] = [];
  for (let seq = from; seq < to; seq++) {
    const items: PublishManyItem[] = keys.map((key) => ({ event, data: { key, seq } }));
    receipts.push(...(await bus.publishMany(items)));
  }
  return receipts;
}

/** The group's lag entries for `topic`, or `undefined` while the group is unknown to the transport. */
async function lagOf(
  transport: Transport,
  group: string,
  topic: string,
): Promise<PartitionLag[] | undefined> {
  try {
    const description = await transport.admin.describeGroup(group);
    return description.lag.filter((l) => l.topic === topic);
  } catch (error) {
    if (isTidingsError(error, ErrorCode.NOT_FOUND)) return undefined;
    throw error;
  }
}

const sumLag = (lag: readonly PartitionLag[] | undefined) => (lag ?? []).reduce((sum, l) => sum + l.lag, 0);
const describeLag = (lag: readonly PartitionLag[] | undefined) =>
  lag === undefined
    ? 'group unknown'
    : lag.map((l) => `p${l.partition}: ${l.committedOffset}/${l.highOffset} lag ${l.lag}`).join(', ') ||
      'no partitions';

/** Waits until the group has committed everything of `topic` (lag 0 in every partition it reports). */
async function untilCaughtUp(ctx: CaseContext, transport: Transport, group: string, topic: string) {
  let last: PartitionLag[] | undefined;
  await ctx.until(
    async () => {
      last = await lagOf(transport, group, topic);
      return last !== undefined && last.length === partitionCount && sumLag(last) === 0;
    },
    () =>
      `group "${group}" has lag 0 in all ${partitionCount} partitions of "${topic}" (now: ${describeLag(last)})`,
  );
}

/** Waits until the group has `members` live members that together own every partition of `topic`. */
async function untilMembers(
  ctx: CaseContext,
  transport: Transport,
  group: string,
  topic: string,
  members: number,
) {
  let seen = '';
  await ctx.until(
    async () => {
      let description;
      try {
        description = await transport.admin.describeGroup(group);
      } catch (error) {
        if (isTidingsError(error, ErrorCode.NOT_FOUND)) return false;
        throw error;
      }
      const owned = description.members.map(
        (m) => new Set(m.assignments.filter((a) => a.topic === topic).map((a) => a.partition)),
      );
      seen = JSON.stringify(description.members.map((m) => [m.memberId, [...(owned.shift() ?? [])]]));
      const perMember = description.members.map((m) => m.assignments.filter((a) => a.topic === topic).length);
      const all = new Set(
        description.members.flatMap((m) =>
          m.assignments.filter((a) => a.topic === topic).map((a) => a.partition),
        ),
      );
      return (
        description.members.length === members &&
        perMember.every((n) => n > 0) &&
        all.size === partitionCount &&
        perMember.reduce((a, b) => a + b, 0) === partitionCount
      );
    },
    () =>
      `group "${group}" has ${members} live member(s) sharing the ${partitionCount} partitions of "${topic}" (now: ${seen || 'none'})`,
  );
}

function expectSameBytes(actual: Uint8Array, expected: Uint8Array, what: string) {
  expect(actual.length, `${what}: value length`).toBe(expected.length);
  expect(Buffer.from(actual).equals(Buffer.from(expected)), `${what}: value bytes differ`).toBe(true);
}

/** Compares a stored or delivered record with what was published. */
function expectRecord(actual: StoredRecord, sent: OutgoingRecord, topic: string, what: string) {
  expect(actual.topic, `${what}: topic`).toBe(topic);
  expect(actual.key, `${what}: key`).toBe(sent.key);
  for (const [name, value] of Object.entries(sent.headers)) {
    expect(actual.headers[name], `${what}: header "${name}"`).toBe(value);
  }
  expectSameBytes(actual.value, sent.value, what);
  if (sent.timestamp !== undefined) expect(actual.timestamp, `${what}: timestamp`).toBe(sent.timestamp);
}

function expectNoViolations(problems: readonly string[], what: string) {
  expect(problems, `${what}:\n${problems.join('\n')}`).toEqual([]);
}

/** Every `key:seq` of `keys` × [from, to). */
function allSteps(keys: readonly string[], from: number, to: number): string[] {
  return keys.flatMap((key) => Array.from({ length: to - from }, (_, i) => `${key}:${from + i}`));
}

function missing(expected: Iterable<string>, seen: ReadonlySet<string>, limit = 5): string {
  const absent = [...expected].filter((x) => !seen.has(x));
  return `${absent.length} missing${absent.length > 0 ? ` (e.g. ${absent.slice(0, limit).join(', ')})` : ''}`;
}

/** Publishes with `publishMany`, retrying while the transport reports it cannot reach the broker. */
async function publishRetrying(
  ctx: CaseContext,
  bus: Bus,
  items: readonly PublishManyItem[],
  failures: { count: number; last?: unknown },
): Promise<Receipt[]> {
  let receipts: Receipt[] | undefined;
  await ctx.until(
    async () => {
      try {
        receipts = await bus.publishMany(items);
        return true;
      } catch (error) {
        if (
          isTidingsError(error, ErrorCode.TRANSPORT_UNAVAILABLE) ||
          isTidingsError(error, ErrorCode.PUBLISH_FAILED)
        ) {
          failures.count++;
          failures.last = error;
          return false;
        }
        throw error;
      }
    },
    () =>
      `a publish succeeds again (it failed ${failures.count} time(s), last with: ${
        failures.last instanceof Error ? failures.last.message : String(failures.last)
      })`,
  );
  return receipts!;
}

/** The item inside a raw delivery published by the bus. */
function itemOf(record: { headers: Readonly<Record<string, string>>; value: Uint8Array }): Item {
  return decodeEnvelope(record).data as Item;
}

// ---------------------------------------------------------------------------------------------------------------
// The cases

const roundTrip: CaseFn = async (ctx) => {
  const transport = await ctx.client();
  const topic = ctx.topic('roundtrip');
  await transport.admin.createTopic(topic, { partitions: partitionCount });
  const time = Date.UTC(2025, 0, 2, 3, 4, 5, 678);

  // 1. Raw records: arbitrary bytes, Unicode keys and header values, empty values, given timestamps.
  const envelope: Envelope = {
    id: `evt-${ctx.id}`,
    source: 'https://example.com/conformance',
    type: 'com.example.ItemRecorded',
    specversion: '1.0',
    time: '2025-01-02T03:04:05.678Z',
    subject: 'order-1',
    datacontenttype: 'application/json',
    dataschema: 'https://example.com/schemas/item/2',
    traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    tracestate: 'vendor=opaque,other=1',
    correlationid: `corr-${ctx.id}`,
    causationid: `cause-${ctx.id}`,
    partitionkey: 'order-1',
    schemaversion: 2,
    extensions: { tenantid: 'acme', priority: 5, urgent: true },
    data: { key: 'order-1', seq: 1, nested: { list: [1, 'two', null], text: 'grüße ✓' } },
  };
  const encoded = (mode: WireMode) => encodeEnvelope(envelope, mode);
  const sent: OutgoingRecord[] = [
    {
      key: 'order-1',
      headers: {
        'x-plain': 'value',
        'x-unicode': 'grüße ✓ 日本語',
        'x-json': '{"a":[1,"b"]}',
        'x-inner-spaces': 'a b  c',
        'x-empty': '',
      },
      value: Uint8Array.from({ length: 1024 }, (_, i) => (i * 7) % 256),
      timestamp: time,
    },
    { key: 'ключ/ü 1', headers: {}, value: new Uint8Array(0), timestamp: time + 1 },
    { key: 'order-1', ...encoded('binary'), timestamp: time + 2 },
    { key: 'order-1', ...encoded('structured'), timestamp: time + 3 },
  ];
  const acks = await transport.publish(topic, sent);
  expect(acks, 'publish resolves with one ack per record').toHaveLength(sent.length);
  acks.forEach((ack, i) => {
    expect(ack.topic, `ack ${i}: topic`).toBe(topic);
    expect(ack.partition, `ack ${i}: partition of key "${sent[i]!.key}" (partitionForKey)`).toBe(
      partitionForKey(sent[i]!.key, partitionCount),
    );
  });
  expect(acks[2]!.offset, 'records of one key keep their input order').toBeGreaterThan(acks[0]!.offset);
  expect(acks[3]!.offset, 'records of one key keep their input order').toBeGreaterThan(acks[2]!.offset);

  const sub = ctx.subscribe(transport, { group: ctx.group('raw'), topics: [topic], startFrom: 'earliest' });
  const raw = ctx.collect(sub);
  await ctx.until(
    () => raw.received.length >= sent.length,
    () => `the group received all ${sent.length} records (got ${raw.received.length})`,
  );
  for (const [i, ack] of acks.entries()) {
    const delivery = raw.received.find((d) => d.partition === ack.partition && d.offset === ack.offset);
    expect(delivery, `record ${i} is delivered at its acknowledged position`).toBeDefined();
    expectRecord(delivery!, sent[i]!, topic, `delivered record ${i}`);
    expect(delivery!.deliveryCount, `record ${i}: first delivery`).toBe(1);
    const [stored] = await transport.admin.read(topic, ack.partition, ack.offset, 1);
    expect(stored?.offset, `admin.read finds record ${i} at its offset`).toBe(ack.offset);
    expectRecord(stored!, sent[i]!, topic, `record ${i} read back`);
  }
  expect(raw.received, 'each record is delivered once').toHaveLength(sent.length);

  // 2. Every CloudEvents attribute, in both content modes, decodes as it was encoded.
  const decodedBinary = decodeEnvelope(
    raw.received.find((d) => d.offset === acks[2]!.offset && d.key === 'order-1')!,
  );
  expect(decodedBinary, 'binary mode: every attribute intact').toEqual({
    ...envelope,
    extensions: { tenantid: 'acme', priority: '5', urgent: 'true' }, // the binary binding carries strings
  });
  const decodedStructured = decodeEnvelope(
    raw.received.find((d) => d.offset === acks[3]!.offset && d.key === 'order-1')!,
  );
  expect(decodedStructured, 'structured mode: every attribute intact').toEqual(envelope);

  // 3. Through the bus, in both wire modes: what a handler sees is what was published.
  const busTopic = ctx.topic('roundtrip_bus');
  await transport.admin.createTopic(busTopic, { partitions: partitionCount });
  const event = itemEvent(busTopic, 'ItemRecorded', 2);
  const published: Array<{ mode: WireMode; receipt: Receipt; expected: Envelope }> = [];
  for (const mode of ['binary', 'structured'] as const) {
    const bus = ctx.bus(transport, { service: `conformance-${mode}`, wireMode: mode });
    const options = {
      id: `${mode}-${ctx.id}`,
      key: `order-${mode}`,
      correlationId: `corr-${mode}-${ctx.id}`,
      causationId: `cause-${mode}-${ctx.id}`,
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      tracestate: 'congo=t61rcWkgMzE',
      time: new Date(time),
    };
    const receipt = await bus.publish(event, { key: 'order-1', seq: 7 }, options);
    published.push({
      mode,
      receipt,
      expected: {
        id: options.id,
        source: `tidings://conformance-${mode}`,
        type: 'ItemRecorded',
        specversion: '1.0',
        time: new Date(time).toISOString(),
        subject: options.key,
        datacontenttype: 'application/json',
        correlationid: options.correlationId,
        causationid: options.causationId,
        traceparent: options.traceparent,
        tracestate: options.tracestate,
        partitionkey: options.key,
        schemaversion: 2,
        data: { key: 'order-1', seq: 7 },
      },
    });
  }
  const seen = new Map<string, { envelope: Envelope; partition: number; offset: number; topic: string }>();
  const consumer = ctx.handle(ctx.bus(transport), ctx.group('bus'), event, (_message, hctx) => {
    seen.set(hctx.envelope.id, {
      envelope: hctx.envelope,
      partition: hctx.partition,
      offset: hctx.offset,
      topic: hctx.topic,
    });
  });
  await consumer.waitFor(
    published.map((p) => p.receipt),
    { timeoutMs: ctx.remainingMs() },
  );
  for (const { mode, receipt, expected } of published) {
    const got = seen.get(receipt.id);
    expect(got, `${mode}: the handler saw the event`).toBeDefined();
    expect(got!.envelope, `${mode}: the handler sees every attribute as published`).toEqual(expected);
    expect(
      { topic: got!.topic, partition: got!.partition, offset: got!.offset },
      `${mode}: the handler sees the receipt's position`,
    ).toEqual({ topic: receipt.topic, partition: receipt.partition, offset: receipt.offset });
  }
};

const concurrentPublishers: CaseFn = async (ctx) => {
  const publishers = 50;
  const perPublisher = 100;
  const transport = await ctx.client();
  const topic = ctx.topic('concurrent');
  await transport.admin.createTopic(topic, { partitions: partitionCount });
  const event = itemEvent(topic);
  const bus = ctx.bus(transport);
  const recorder = new Recorder();
  // The consumer runs while the publishers write.
  const consumer = ctx.handle(bus, ctx.group('concurrent'), event, recorder.handler('reader'));
  const byPublisher: Receipt[][] = Array.from({ length: publishers }, () => []);
  await Promise.all(
    byPublisher.map(async (own, p) => {
      for (let seq = 0; seq < perPublisher; seq++)
        own.push(await bus.publish(event, { key: `publisher-${p}`, seq }));
    }),
  );
  const receipts = byPublisher.flat();
  const total = publishers * perPublisher;
  expect(receipts, 'every publish resolved with a receipt').toHaveLength(total);
  expect(new Set(receipts.map((r) => r.id)).size, 'event ids are distinct').toBe(total);
  expect(
    new Set(receipts.map((r) => `${r.partition}:${r.offset}`)).size,
    'no two events were given the same position',
  ).toBe(total);
  for (const [p, own] of byPublisher.entries()) {
    const partition = partitionForKey(`publisher-${p}`, partitionCount);
    expect(
      own.filter((r) => r.partition !== partition).length,
      `events of key "publisher-${p}" all go to its partition ${partition}`,
    ).toBe(0);
    expect(
      own.every((r, i) => i === 0 || r.offset > own[i - 1]!.offset),
      `events of key "publisher-${p}" get increasing offsets in publish order`,
    ).toBe(true);
  }
  await consumer.waitFor(receipts, { timeoutMs: ctx.remainingMs() });
  const ids = recorder.ids();
  const expectedIds = receipts.map((r) => r.id);
  expect(ids.size, `every published event was consumed: ${missing(expectedIds, ids)}`).toBe(total);
  expectNoViolations(orderViolations(recorder.handled, { redeliveries: false }), 'per-publisher order');
};

const topicsIsolated: CaseFn = async (ctx) => {
  const transport = await ctx.client();
  const topicA = ctx.topic('iso_a');
  const topicB = ctx.topic('iso_b');
  await transport.admin.createTopic(topicA, { partitions: partitionCount });
  await transport.admin.createTopic(topicB, { partitions: partitionCount });
  const a = ctx.collect(
    ctx.subscribe(transport, { group: ctx.group('a'), topics: [topicA], startFrom: 'earliest' }),
  );
  const b = ctx.collect(
    ctx.subscribe(transport, { group: ctx.group('b'), topics: [topicB], startFrom: 'earliest' }),
  );
  const records = (tag: string, from: number) =>
    Array.from({ length: 30 }, (_, i) => ({
      key: `key-${i % 6}`,
      headers: {},
      value: bytes(`${tag}-${from + i}`),
    }));
  await transport.publish(topicB, records('B', 0));
  await transport.publish(topicA, records('A', 0));
  await transport.publish(topicB, records('B', 30));
  await ctx.until(
    () => a.received.length >= 30 && b.received.length >= 60,
    () =>
      `group a has 30 records of "${topicA}" (has ${a.received.length}) and group b 60 of "${topicB}" (has ${b.received.length})`,
  );
  await untilCaughtUp(ctx, transport, ctx.group('a'), topicA);
  await untilCaughtUp(ctx, transport, ctx.group('b'), topicB);
  const valuesA = a.received.map((d) => text(d.value));
  const valuesB = b.received.map((d) => text(d.value));
  expect(
    valuesA.filter((v) => !v.startsWith('A-')),
    `a group of "${topicA}" received records of another topic`,
  ).toEqual([]);
  expect(
    valuesB.filter((v) => !v.startsWith('B-')),
    `a group of "${topicB}" received records of another topic`,
  ).toEqual([]);
  expect(new Set(valuesA).size).toBe(30);
  expect(new Set(valuesB).size).toBe(60);
  expect(
    a.received.every((d) => d.topic === topicA),
    'deliveries name their topic',
  ).toBe(true);
  const description = await transport.admin.describeGroup(ctx.group('a'));
  expect(
    description.lag.filter((l) => l.topic !== topicA),
    'a group reports lag only for the topics it consumes',
  ).toEqual([]);
  for (let partition = 0; partition < partitionCount; partition++) {
    const stored = await transport.admin.read(topicA, partition, 0, 100);
    expect(
      stored.filter((r) => !text(r.value).startsWith('A-')).map((r) => text(r.value)),
      `admin.read of "${topicA}" partition ${partition}`,
    ).toEqual([]);
  }
};

const fanOut: CaseFn = async (ctx) => {
  const topic = ctx.topic('fanout');
  const producer = await ctx.client();
  ctx.requireFeature(producer, 'consumerGroups');
  await producer.admin.createTopic(topic, { partitions: partitionCount });
  const event = itemEvent(topic);
  const groups = ['one', 'two', 'three'].map((label) => ctx.group(`fan_${label}`));
  const recorders = groups.map(() => new Recorder());
  // The third group is held back: a slow group must not hold up the others.
  const slow = ctx.gate();
  slow.close();
  const consumers = [];
  for (const [i, group] of groups.entries()) {
    const bus = ctx.bus(await ctx.client());
    const before = i === 2 ? () => slow.pass() : undefined;
    consumers.push(ctx.handle(bus, group, event, recorders[i]!.handler(group, before ? { before } : {})));
  }
  const keys = keysByPartition(3, 'fan');
  const receipts = await publishRounds(ctx.bus(producer), event, keys, 0, 20);
  const ids = receipts.map((r) => r.id);
  await consumers[0]!.waitFor(receipts, { timeoutMs: ctx.remainingMs() });
  await consumers[1]!.waitFor(receipts, { timeoutMs: ctx.remainingMs() });
  expect(recorders[2]!.count(), 'the held-back group has handled nothing yet').toBe(0);
  slow.open();
  await consumers[2]!.waitFor(receipts, { timeoutMs: ctx.remainingMs() });
  for (const [i, group] of groups.entries()) {
    const got = recorders[i]!.ids();
    expect(got.size, `group "${group}" got every event: ${missing(ids, got)}`).toBe(ids.length);
    expect(recorders[i]!.count(), `group "${group}" got each event once`).toBe(ids.length);
    expectNoViolations(
      orderViolations(recorders[i]!.handled, { redeliveries: false }),
      `group "${group}" order`,
    );
  }
};

const competingMembers: CaseFn = async (ctx) => {
  const topic = ctx.topic('compete');
  const group = ctx.group('compete');
  const first = await ctx.client();
  ctx.requireFeature(first, 'consumerGroups');
  await first.admin.createTopic(topic, { partitions: partitionCount });
  const event = itemEvent(topic);
  const recorder = new Recorder();
  ctx.handle(ctx.bus(first), group, event, recorder.handler('m1'));
  const second = await ctx.client();
  ctx.handle(ctx.bus(second), group, event, recorder.handler('m2'));
  await untilMembers(ctx, first, group, topic, 2);
  const keys = keysByPartition(10, 'compete');
  const receipts = await publishRounds(ctx.bus(first), event, keys, 0, 10);
  const ids = receipts.map((r) => r.id);
  await ctx.until(
    () => recorder.ids().size >= ids.length,
    () => `the two members handled every event between them: ${missing(ids, recorder.ids())}`,
  );
  await untilCaughtUp(ctx, first, group, topic);
  const duplicates = recorder.handled.filter(
    (h, i) => recorder.handled.findIndex((o) => o.id === h.id) !== i,
  );
  expect(
    duplicates.map((h) => `${h.key}:${h.seq} (member ${h.member}, deliveryCount ${h.deliveryCount})`),
    'no event is delivered twice while every member is healthy',
  ).toEqual([]);
  expect(recorder.count('m1'), 'member 1 did part of the work').toBeGreaterThan(0);
  expect(recorder.count('m2'), 'member 2 did part of the work').toBeGreaterThan(0);
  const owners = new Map<number, Set<string>>();
  for (const h of recorder.handled)
    owners.set(h.partition, (owners.get(h.partition) ?? new Set()).add(h.member));
  for (const [partition, members] of owners) {
    expect([...members], `partition ${partition} is consumed by one member at a time`).toHaveLength(1);
  }
};

const perKeyOrder: CaseFn = async (ctx) => {
  const transport = await ctx.client();
  ctx.requireFeature(transport, 'perKeyOrder');
  const topic = ctx.topic('order');
  await transport.admin.createTopic(topic, { partitions: partitionCount });
  const event = itemEvent(topic);
  const bus = ctx.bus(transport);
  const keys = keysByPartition(4, 'order');
  const seqs = 60;
  // Half is a backlog when the consumer starts; the rest arrives while it works.
  const receipts = await publishRounds(bus, event, keys, 0, seqs / 2);
  const recorder = new Recorder();
  const consumer = ctx.handle(
    bus,
    ctx.group('order'),
    event,
    recorder.handler('reader', { random: ctx.random }),
    {
      concurrency: 8,
    },
  );
  receipts.push(...(await publishRounds(bus, event, keys, seqs / 2, seqs)));
  expect(
    new Set(receipts.map((r) => r.partition)).size,
    `the keys span all ${partitionCount} partitions`,
  ).toBe(partitionCount);
  await consumer.waitFor(receipts, { timeoutMs: ctx.remainingMs() });
  expectNoViolations(recorder.problems, 'a key was handled twice at once');
  expectNoViolations(orderViolations(recorder.handled, { redeliveries: false }), 'per-key order');
  const steps = recorder.steps();
  expect(steps.size, `every event was handled: ${missing(allSteps(keys, 0, seqs), steps)}`).toBe(
    keys.length * seqs,
  );
  expect(recorder.maxInFlight, 'different keys were handled concurrently').toBeGreaterThan(1);
};

const orderWhileJoining: CaseFn = async (ctx) => {
  const topic = ctx.topic('join');
  const group = ctx.group('join');
  const first = await ctx.client();
  ctx.requireFeature(first, 'consumerGroups');
  ctx.requireFeature(first, 'perKeyOrder');
  await first.admin.createTopic(topic, { partitions: partitionCount });
  const event = itemEvent(topic);
  const keys = keysByPartition(4, 'join');
  const seqs = 100;
  const recorder = new Recorder();
  const gate = ctx.gate();
  // Member A handles 100 events, then holds its next ones until member B has joined: the rebalance happens with
  // deliveries in flight.
  const memberA = ctx.handle(
    ctx.bus(first),
    group,
    event,
    recorder.handler('A', {
      random: ctx.random,
      before: async () => {
        if (recorder.count('A') >= 100) gate.closeOnce();
        await gate.pass();
      },
    }),
    { concurrency: 4 },
  );
  const producer = ctx.bus(first);
  const receipts = await publishRounds(producer, event, keys, 0, seqs / 2);
  await ctx.until(
    () => gate.waiting > 0,
    () => `member A handled 100 events and holds more (handled ${recorder.count('A')})`,
  );
  const second = await ctx.client();
  const memberB = ctx.handle(ctx.bus(second), group, event, recorder.handler('B', { random: ctx.random }), {
    concurrency: 4,
  });
  await untilMembers(ctx, first, group, topic, 2);
  gate.open();
  receipts.push(...(await publishRounds(producer, event, keys, seqs / 2, seqs)));
  const expected = allSteps(keys, 0, seqs);
  await ctx.until(
    () => recorder.steps().size >= expected.length,
    () => `every event was handled: ${missing(expected, recorder.steps())}`,
  );
  await untilCaughtUp(ctx, first, group, topic);
  // Each member's waitFor answers for every position: from its own work, or from the group's commits for
  // partitions another member owns.
  await memberA.waitFor(receipts, { timeoutMs: ctx.remainingMs() });
  await memberB.waitFor(receipts, { timeoutMs: ctx.remainingMs() });
  expectNoViolations(recorder.problems, 'a key was handled by two members at once');
  expectNoViolations(
    orderViolations(recorder.handled, { redeliveries: true }),
    'per-key order across the join',
  );
  expect(recorder.count('B'), 'the member that joined took part of the work').toBeGreaterThan(0);
};

const orderWhileLeaving: CaseFn = async (ctx) => {
  const topic = ctx.topic('leave');
  const group = ctx.group('leave');
  const first = await ctx.client();
  ctx.requireFeature(first, 'consumerGroups');
  ctx.requireFeature(first, 'perKeyOrder');
  await first.admin.createTopic(topic, { partitions: partitionCount });
  const event = itemEvent(topic);
  const keys = keysByPartition(4, 'leave');
  const seqs = 100;
  const recorder = new Recorder();
  const gate = ctx.gate();
  ctx.handle(ctx.bus(first), group, event, recorder.handler('A', { random: ctx.random }), { concurrency: 4 });
  const second = await ctx.client();
  const secondBus = ctx.bus(second);
  // Member B handles 50 events, then holds its next ones: it leaves with deliveries in flight.
  ctx.handle(
    secondBus,
    group,
    event,
    recorder.handler('B', {
      random: ctx.random,
      before: async () => {
        if (recorder.count('B') >= 50) gate.closeOnce();
        await gate.pass();
      },
    }),
    { concurrency: 4 },
  );
  await untilMembers(ctx, first, group, topic, 2);
  const producer = ctx.bus(first);
  await publishRounds(producer, event, keys, 0, seqs / 2);
  await ctx.until(
    () => gate.waiting > 0,
    () => `member B handled 50 events and holds more (handled ${recorder.count('B')})`,
  );
  const leaving = ctx.closeClient(second, [secondBus]); // B's running handlers finish; its queued events go back
  gate.open();
  await ctx.within(leaving, 'closing member B');
  await untilMembers(ctx, first, group, topic, 1);
  const handledByBBeforeLeaving = recorder.count('B');
  await publishRounds(producer, event, keys, seqs / 2, seqs);
  const expected = allSteps(keys, 0, seqs);
  await ctx.until(
    () => recorder.steps().size >= expected.length,
    () => `every event was handled: ${missing(expected, recorder.steps())}`,
  );
  await untilCaughtUp(ctx, first, group, topic);
  expect(recorder.count('B'), 'the member that left handles nothing more').toBe(handledByBBeforeLeaving);
  expectNoViolations(recorder.problems, 'a key was handled by two members at once');
  expectNoViolations(
    orderViolations(recorder.handled, { redeliveries: true }),
    'per-key order across the leave',
  );
};

const nackRedelivers: CaseFn = async (ctx) => {
  const transport = await ctx.client();
  const topic = ctx.topic('nack');
  const group = ctx.group('nack');
  await transport.admin.createTopic(topic, { partitions: partitionCount });
  const sub = ctx.subscribe(transport, { group, topics: [topic], startFrom: 'earliest' });
  const sent = ['v0', 'v1', 'v2'].map((v) => ({ key: 'only-key', headers: { 'x-v': v }, value: bytes(v) }));
  const acks = await transport.publish(topic, sent);
  const collected = ctx.collect(sub, (d) => {
    const v = text(d.value);
    if (v === 'v0' && d.deliveryCount === 1) d.nack();
    else if (v === 'v1' && d.deliveryCount === 1) d.nack({ delayMs: 50 });
    else d.ack();
  });
  const redelivered = (v: string) =>
    collected.received.find((d) => text(d.value) === v && d.deliveryCount > 1);
  await ctx.until(
    () => redelivered('v0') !== undefined && redelivered('v1') !== undefined,
    () =>
      `the nacked records came again (received: ${collected.received.map((d) => `${text(d.value)}#${d.deliveryCount}`).join(', ')})`,
  );
  for (const [i, v] of ['v0', 'v1'].entries()) {
    const again = redelivered(v)!;
    expect(again.deliveryCount, `${v}: second delivery`).toBe(2);
    expect(again.offset, `${v}: same offset`).toBe(acks[i]!.offset);
    expect(again.partition, `${v}: same partition`).toBe(acks[i]!.partition);
    expectRecord(again, sent[i]!, topic, `${v} redelivered`);
  }
  await untilCaughtUp(ctx, transport, group, topic);
  const acked = collected.received.filter((d) => !(d.deliveryCount === 1 && text(d.value) !== 'v2'));
  expect(
    acked.map((d) => text(d.value)).sort(),
    'after the redeliveries are acknowledged nothing more comes',
  ).toEqual(['v0', 'v1', 'v2']);
};

const killedConsumer: CaseFn = async (ctx) => {
  const transport = await ctx.client();
  const topic = ctx.topic('kill');
  const group = ctx.group('kill');
  await transport.admin.createTopic(topic, { partitions: partitionCount });
  const total = 40;
  const ackFirst = 10;
  const keys = keysByPartition(2, 'kill');
  await transport.publish(
    topic,
    Array.from({ length: total }, (_, i) => ({
      key: keys[i % keys.length]!,
      headers: {},
      value: bytes(`${i}`),
    })),
  );
  const child = ctx.spawnChild({ group, topic, ackFirst });
  interface Line {
    value: string;
    partition: number;
    offset: number;
    deliveryCount: number;
    acked: boolean;
  }
  const delivered = (): Line[] =>
    child.lines.filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Line);
  await ctx.until(
    () => delivered().length >= total || child.process.exitCode !== null,
    () =>
      `the child process received all ${total} records (got ${delivered().length}); its stderr: ${child.stderr()}`,
  );
  expect(
    child.process.exitCode,
    `the child process is still running; its stderr: ${child.stderr()}`,
  ).toBeNull();
  const lines = delivered();
  const acked = new Set(lines.filter((l) => l.acked).map((l) => l.value));
  const held = lines.filter((l) => !l.acked).map((l) => l.value);
  expect(acked.size, 'the child acknowledged the first records').toBe(ackFirst);
  child.process.kill('SIGKILL');
  await ctx.within(child.exited, 'the killed child process exiting');

  const survivor = await ctx.client();
  const collected = ctx.collect(ctx.subscribe(survivor, { group, topics: [topic], startFrom: 'earliest' }));
  const received = () => new Set(collected.received.map((d) => text(d.value)));
  await ctx.until(
    () => held.every((v) => received().has(v)),
    () =>
      `the surviving member got the ${held.length} records the killed one held: ${missing(held, received())}`,
  );
  for (const v of held) {
    const again = collected.received.find((d) => text(d.value) === v)!;
    expect(again.deliveryCount, `record ${v} is marked as delivered before`).toBeGreaterThan(1);
  }
  const all = Array.from({ length: total }, (_, i) => `${i}`);
  const union = new Set([...acked, ...received()]);
  expect(union.size, `no record is lost: ${missing(all, union)}`).toBe(total);
};

const closeWhileConsuming: CaseFn = async (ctx) => {
  const topic = ctx.topic('close');
  const group = ctx.group('close');
  const first = await ctx.client();
  await first.admin.createTopic(topic, { partitions: partitionCount });
  const event = itemEvent(topic);
  const keys = keysByPartition(2, 'close');
  const seqs = 50;
  const producerClient = await ctx.client();
  const receipts = await publishRounds(ctx.bus(producerClient), event, keys, 0, seqs);
  const expected = allSteps(keys, 0, seqs);

  // 1. A bus consumer is closed (then its transport) while it has handlers running and events queued.
  const recorder = new Recorder();
  const gate = ctx.gate();
  const firstBus = ctx.bus(first);
  ctx.handle(
    firstBus,
    group,
    event,
    recorder.handler('bus', {
      before: async () => {
        if (recorder.count() >= 100) gate.closeOnce();
        await gate.pass();
      },
    }),
    { concurrency: 4 },
  );
  await ctx.until(
    () => gate.waiting > 0,
    () => `the first consumer handled 100 events and holds more (handled ${recorder.count()})`,
  );
  const closing = ctx.closeClient(first, [firstBus]);
  gate.open();
  await ctx.within(closing, 'closing the first consumer and its transport');

  // 2. A raw member acknowledges 50 deliveries, then its transport is closed under it with the rest unsettled.
  const second = await ctx.client();
  const sub = ctx.subscribe(second, { group, topics: [topic], startFrom: 'earliest' });
  const acked: string[] = [];
  const raw = ctx.collect(sub, (d: Delivery) => {
    if (acked.length < 50) {
      const item = itemOf(d);
      acked.push(`${item.key}:${item.seq}`);
      d.ack();
    }
  });
  await ctx.until(
    () => raw.received.length > 50,
    () => `the second member received more than 50 deliveries (got ${raw.received.length})`,
  );
  if (ctx.options.isolatedInstances) await ctx.within(sub.close(), 'closing the second member');
  else await ctx.within(second.close(), 'closing the second transport');
  await ctx.within(raw.done, 'the second member iteration ending after close');

  // 3. A third member gets everything the first two did not finish.
  const third = await ctx.client();
  const thirdRecorder = new Recorder();
  const consumer = ctx.handle(ctx.bus(third), group, event, thirdRecorder.handler('third'));
  await consumer.waitFor(receipts, { timeoutMs: ctx.remainingMs() });
  const union = new Set([...recorder.steps(), ...acked, ...thirdRecorder.steps()]);
  expect(union.size, `nothing was lost across the two closes: ${missing(expected, union)}`).toBe(
    expected.length,
  );
  expectNoViolations(
    orderViolations(thirdRecorder.handled, { redeliveries: true, fromFirstSeen: true }),
    'the third member order',
  );
};

const lateGroup: CaseFn = async (ctx) => {
  const topic = ctx.topic('late');
  const early = await ctx.client();
  await early.admin.createTopic(topic, { partitions: partitionCount });
  const event = itemEvent(topic);
  const earlyBus = ctx.bus(early);
  const keys = keysByPartition(3, 'late');
  const history = await publishRounds(earlyBus, event, keys, 0, 10);
  await ctx.closeClient(early, [earlyBus]); // the producer is gone before the late group exists

  const late = await ctx.client();
  const lateBus = ctx.bus(late);
  const recorder = new Recorder();
  const consumer = ctx.handle(lateBus, ctx.group('late'), event, recorder.handler('late'));
  await consumer.waitFor(history, { timeoutMs: ctx.remainingMs() });
  const ids = recorder.ids();
  expect(
    ids.size,
    `the late group read the whole history: ${missing(
      history.map((r) => r.id),
      ids,
    )}`,
  ).toBe(history.length);
  expectNoViolations(orderViolations(recorder.handled, { redeliveries: false }), 'history order');

  // A group that starts at 'latest' skips the history and gets what comes after it joined.
  const latestGroup = ctx.group('latest');
  const latest = new Recorder();
  ctx.handle(lateBus, latestGroup, event, latest.handler('latest'), { startFrom: 'latest' });
  await untilMembers(ctx, late, latestGroup, topic, 1);
  const fresh = await publishRounds(lateBus, event, keys, 10, 12);
  await ctx.until(
    () => fresh.every((r) => latest.ids().has(r.id)),
    () =>
      `the 'latest' group got the events published after it joined: ${missing(
        fresh.map((r) => r.id),
        latest.ids(),
      )}`,
  );
  await untilCaughtUp(ctx, late, latestGroup, topic);
  expect(
    history.filter((r) => latest.ids().has(r.id)).length,
    "a group starting at 'latest' does not read the history",
  ).toBe(0);
};

const replayEarliest: CaseFn = async (ctx) => {
  const transport = await ctx.client();
  const topic = ctx.topic('replay_earliest');
  const group = ctx.group('replay_earliest');
  await transport.admin.createTopic(topic, { partitions: partitionCount });
  const event = itemEvent(topic);
  const bus = ctx.bus(transport);
  const receipts = await publishRounds(bus, event, keysByPartition(2, 'replay'), 0, 8);
  const first = new Recorder();
  const firstConsumer = ctx.handle(bus, group, event, first.handler('first'));
  await firstConsumer.waitFor(receipts, { timeoutMs: ctx.remainingMs() });
  await ctx.within(firstConsumer.close(), 'closing the first consumer');
  await untilCaughtUp(ctx, transport, group, topic);

  await transport.admin.resetOffsets(group, topic, 'earliest');
  const afterReset = await lagOf(transport, group, topic);
  expect(
    sumLag(afterReset),
    `after a reset to earliest every record is lag (${describeLag(afterReset)})`,
  ).toBe(receipts.length);
  const again = new Recorder();
  const second = ctx.handle(bus, group, event, again.handler('again'));
  await second.waitFor(receipts, { timeoutMs: ctx.remainingMs() });
  await untilCaughtUp(ctx, transport, group, topic);
  const ids = again.ids();
  expect(
    ids.size,
    `the replay handled every event again: ${missing(
      receipts.map((r) => r.id),
      ids,
    )}`,
  ).toBe(receipts.length);
  expectNoViolations(orderViolations(again.handled, { redeliveries: false }), 'replay order');
};

/** Shared by the offset and time replays: a new group starting at `start`, then an old group reset to it. */
async function replayFrom(
  ctx: CaseContext,
  transport: Transport,
  bus: Bus,
  event: ItemEvent,
  topic: string,
  start: { offset: number } | { timestamp: number },
  all: readonly Receipt[],
  expected: readonly Receipt[],
  label: string,
) {
  const expectedIds = new Set(expected.map((r) => r.id));
  const check = (recorder: Recorder, what: string) => {
    const ids = recorder.ids();
    expect(ids.size, `${what}: got every event from ${label}: ${missing(expectedIds, ids)}`).toBe(
      expectedIds.size,
    );
    const before = [...ids].filter((id) => !expectedIds.has(id));
    expect(before.length, `${what}: events before ${label} were delivered`).toBe(0);
    expectNoViolations(
      orderViolations(recorder.handled, { redeliveries: false, fromFirstSeen: true }),
      `${what}: order`,
    );
  };

  // A new group that starts there.
  const fresh = ctx.group('replay_new');
  const freshRecorder = new Recorder();
  const freshConsumer = ctx.handle(bus, fresh, event, freshRecorder.handler('fresh'), { startFrom: start });
  await freshConsumer.waitFor(expected, { timeoutMs: ctx.remainingMs() });
  await untilCaughtUp(ctx, transport, fresh, topic);
  check(freshRecorder, 'a new group starting there');

  // A group that read everything, reset there.
  const reset = ctx.group('replay_reset');
  const all1 = new Recorder();
  const firstPass = ctx.handle(bus, reset, event, all1.handler('first'));
  await firstPass.waitFor(all, { timeoutMs: ctx.remainingMs() });
  await ctx.within(firstPass.close(), 'closing the first pass');
  await untilCaughtUp(ctx, transport, reset, topic);
  await transport.admin.resetOffsets(reset, topic, start);
  const second = new Recorder();
  const secondPass = ctx.handle(bus, reset, event, second.handler('second'));
  await secondPass.waitFor(expected, { timeoutMs: ctx.remainingMs() });
  await untilCaughtUp(ctx, transport, reset, topic);
  check(second, 'a group reset there');
}

const replayOffset: CaseFn = async (ctx) => {
  const transport = await ctx.client();
  ctx.requireFeature(transport, 'replayByOffset');
  const topic = ctx.topic('replay_offset');
  await transport.admin.createTopic(topic, { partitions: partitionCount });
  const event = itemEvent(topic);
  const bus = ctx.bus(transport);
  const receipts = await publishRounds(bus, event, keysByPartition(1, 'offset'), 0, 10);
  const offsets = receipts.map((r) => r.offset).sort((a, b) => a - b);
  const from = offsets[Math.floor(offsets.length / 2)]!;
  const expected = receipts.filter((r) => r.offset >= from);
  expect(expected.length, 'some events are at or after the offset').toBeGreaterThan(0);
  expect(expected.length, 'some events are before the offset').toBeLessThan(receipts.length);
  await replayFrom(ctx, transport, bus, event, topic, { offset: from }, receipts, expected, `offset ${from}`);
};

const replayTime: CaseFn = async (ctx) => {
  const transport = await ctx.client();
  ctx.requireFeature(transport, 'replayByTime');
  const topic = ctx.topic('replay_time');
  await transport.admin.createTopic(topic, { partitions: partitionCount });
  const event = itemEvent(topic);
  const bus = ctx.bus(transport);
  const keys = keysByPartition(1, 'time');
  const storedTimes = async (receipts: readonly Receipt[]) =>
    Promise.all(
      receipts.map(async (r) => {
        const [record] = await transport.admin.read(topic, r.partition, r.offset, 1);
        return record!.timestamp;
      }),
    );
  const before = await publishRounds(bus, event, keys, 0, 5);
  const beforeMax = Math.max(...(await storedTimes(before)));
  await ctx.until(
    () => Date.now() > beforeMax,
    () => `the clock passes the first batch's time ${beforeMax}`,
  );
  const after = await publishRounds(bus, event, keys, 5, 10);
  const afterMin = Math.min(...(await storedTimes(after)));
  expect(afterMin, 'records published later are stored with a later time').toBeGreaterThan(beforeMax);
  for (let partition = 0; partition < partitionCount; partition++) {
    const inPartition = after.filter((r) => r.partition === partition).map((r) => r.offset);
    const expectedOffset =
      inPartition.length > 0
        ? Math.min(...inPartition)
        : (await transport.admin.describeTopic(topic)).partitionOffsets.find(
            (p) => p.partition === partition,
          )!.highOffset;
    expect(
      await transport.admin.offsetForTime(topic, partition, afterMin),
      `offsetForTime(partition ${partition}, ${afterMin})`,
    ).toBe(expectedOffset);
  }
  await replayFrom(
    ctx,
    transport,
    bus,
    event,
    topic,
    { timestamp: afterMin },
    [...before, ...after],
    after,
    `time ${new Date(afterMin).toISOString()}`,
  );
};

const lagReported: CaseFn = async (ctx) => {
  const transport = await ctx.client();
  const topic = ctx.topic('lag');
  const group = ctx.group('lag');
  await transport.admin.createTopic(topic, { partitions: partitionCount });
  const event = itemEvent(topic);
  const bus = ctx.bus(transport);
  const gate = ctx.gate();
  gate.close();
  const recorder = new Recorder();
  ctx.handle(bus, group, event, recorder.handler('slow', { before: () => gate.pass() }), { concurrency: 4 });
  await untilMembers(ctx, transport, group, topic, 1);
  const receipts = await publishRounds(bus, event, keysByPartition(2, 'lag'), 0, 13);
  let lag: PartitionLag[] | undefined;
  await ctx.until(
    async () => {
      lag = await lagOf(transport, group, topic);
      return lag?.length === partitionCount && sumLag(lag) === receipts.length;
    },
    () => `the group's lag is the ${receipts.length} unprocessed events (now: ${describeLag(lag)})`,
  );
  const topicOffsets = (await transport.admin.describeTopic(topic)).partitionOffsets;
  for (const entry of lag!) {
    expect(entry.lag, `partition ${entry.partition}: lag = highOffset - committedOffset`).toBe(
      entry.highOffset - entry.committedOffset,
    );
    expect(entry.highOffset, `partition ${entry.partition}: highOffset as describeTopic gives it`).toBe(
      topicOffsets.find((p) => p.partition === entry.partition)?.highOffset,
    );
  }
  gate.open();
  await untilCaughtUp(ctx, transport, group, topic);
  expect(recorder.ids().size, 'every event was handled by the time lag is 0').toBe(receipts.length);
};

const parking: CaseFn = async (ctx) => {
  const transport = await ctx.client();
  const topic = ctx.topic('park');
  const group = ctx.group('park');
  await transport.admin.createTopic(topic, { partitions: partitionCount });
  const event = itemEvent(topic);
  const bus = ctx.bus(transport);
  let broken = true;
  const handled: Array<{ key: string; seq: number }> = [];
  const handler = (message: { data: Item }) => {
    const { key, seq } = message.data;
    if (broken && seq === 1 && (key === 'poisoned' || key === 'skipped'))
      throw new Error(`stock service down (${key})`);
    handled.push({ key, seq });
  };
  ctx.handle(bus, group, event, handler, { onFailure: 'park', retry: false });
  const items = (key: string, from: number, to: number): PublishManyItem[] =>
    Array.from({ length: to - from }, (_, i) => ({ event, data: { key, seq: from + i } }));
  const receipts = await bus.publishMany([
    ...items('poisoned', 0, 4),
    ...items('healthy', 0, 4),
    ...items('skipped', 0, 3),
  ]);
  const seqsOf = (key: string) => handled.filter((h) => h.key === key).map((h) => h.seq);
  const parkedKey = async (key: string) => (await bus.parked.list(group)).find((p) => p.key === key);
  await ctx.until(
    async () =>
      seqsOf('healthy').length === 4 &&
      (await parkedKey('poisoned'))?.events.length === 3 &&
      (await parkedKey('skipped'))?.events.length === 2,
    () =>
      `the healthy key flows while "poisoned" parks 3 events and "skipped" 2 (handled: ${JSON.stringify(handled)})`,
  );
  await untilCaughtUp(ctx, transport, group, topic); // parked events are settled on the transport
  expect(seqsOf('healthy'), 'other keys keep flowing').toEqual([0, 1, 2, 3]);
  expect(seqsOf('poisoned'), 'later events of a parked key wait').toEqual([0]);
  const parked = (await parkedKey('poisoned'))!;
  expect(parked.topic).toBe(topic);
  expect(parked.error, 'the parked key says why').toContain('stock service down');
  expect(parked.attempts, 'the parked key counts attempts').toBeGreaterThanOrEqual(1);
  expect(
    parked.events.map((e) => e.offset),
    'the parked events are the failed one and those behind it, in order',
  ).toEqual(receipts.slice(1, 4).map((r) => r.offset));

  broken = false;
  const retried = await bus.parked.retry({ group, topic, key: 'poisoned' });
  expect(retried, 'retry handles the parked events and releases the key').toEqual({
    processed: 3,
    remaining: 0,
  });
  const skipped = await bus.parked.skip({ group, topic, key: 'skipped' });
  expect(skipped, 'skip drops the failed event and handles those behind it').toEqual({
    processed: 1,
    remaining: 0,
  });
  expect(await bus.parked.list(group), 'no key is parked any more').toEqual([]);
  const later = await bus.publish(event, { key: 'poisoned', seq: 4 });
  await ctx.until(
    () => seqsOf('poisoned').includes(4),
    () => `a released key flows again (handled: ${JSON.stringify(seqsOf('poisoned'))})`,
  );
  void later;
  expect(seqsOf('poisoned'), 'the key was handled in order').toEqual([0, 1, 2, 3, 4]);
  expect(seqsOf('skipped'), 'the skipped event was never handled').toEqual([0, 2]);
};

const deadLetters: CaseFn = async (ctx) => {
  const transport = await ctx.client();
  const topic = ctx.topic('dlq');
  const group = ctx.group('dlq');
  await transport.admin.createTopic(topic, { partitions: partitionCount });
  const event = itemEvent(topic);
  const bus = ctx.bus(transport);
  let broken = true;
  const handled: string[] = [];
  ctx.handle(
    bus,
    group,
    event,
    (message) => {
      const { key, seq } = message.data;
      if (broken && key === 'bad' && seq === 1) throw new Error(`rejected bad 1 (${ctx.id})`);
      handled.push(`${key}:${seq}`);
    },
    { onFailure: 'deadLetter', retry: false },
  );
  const receipts = await bus.publishMany(
    [
      ['bad', 0],
      ['bad', 1],
      ['bad', 2],
      ['good', 0],
    ].map(([key, seq]) => ({ event, data: { key: key as string, seq: seq as number } })),
  );
  const garbage = {
    key: 'garbage',
    headers: { 'x-origin': 'conformance' },
    value: bytes('not a cloud event'),
  };
  const [garbageAck] = await transport.publish(topic, [garbage]);
  await bus.publish(event, { key: 'good', seq: 1 });
  let letters: Awaited<ReturnType<Bus['deadLetters']['list']>> = [];
  await ctx.until(
    async () => {
      letters = await bus.deadLetters.list({ group, topic });
      return letters.length === 2 && handled.length === 4;
    },
    () =>
      `two dead letters are listed and the other four events handled (letters: ${letters.length}, handled: ${handled.join(' ')})`,
  );
  await untilCaughtUp(ctx, transport, group, topic);
  expect(
    handled.filter((h) => h.startsWith('bad')),
    'a dead-lettered event does not hold its key',
  ).toEqual(['bad:0', 'bad:2']);
  const failed = letters.find((l) => l.key === 'bad')!;
  expect(failed, 'the failed event is listed').toBeDefined();
  expect(failed.reason).toBe(ErrorCode.HANDLER_FAILED);
  expect(failed.error, 'the dead letter carries the error').toContain(`rejected bad 1 (${ctx.id})`);
  expect(failed.attempts).toBe(1);
  expect({
    group: failed.group,
    topic: failed.topic,
    partition: failed.partition,
    offset: failed.offset,
  }).toEqual({
    group,
    topic,
    partition: receipts[1]!.partition,
    offset: receipts[1]!.offset,
  });
  expect(failed.envelope?.id, 'the dead letter carries the original event').toBe(receipts[1]!.id);
  expect(failed.envelope?.data).toEqual({ key: 'bad', seq: 1 });
  const undecodable = letters.find((l) => l.key === 'garbage')!;
  expect(undecodable, 'an undecodable record is dead-lettered, not dropped').toBeDefined();
  expect(undecodable.reason).toBe(ErrorCode.DECODE_FAILED);
  expect(undecodable.envelope).toBeUndefined();
  expect(undecodable.headers['x-origin'], 'the original headers are kept').toBe('conformance');
  expectSameBytes(undecodable.value, garbage.value, 'the undecodable original');
  expect(undecodable.offset).toBe(garbageAck!.offset);

  broken = false;
  await bus.deadLetters.retry({ group, topic, id: failed.id });
  expect(handled, 'a retried dead letter is handled').toContain('bad:1');
  await bus.deadLetters.skip({ group, topic, id: undecodable.id });
  expect(
    await bus.deadLetters.list({ group, topic }),
    'retried and skipped dead letters are no longer listed',
  ).toEqual([]);
};

const traceAndCorrelation: CaseFn = async (ctx) => {
  const transport = await ctx.client();
  const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
  const tracestate = 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE';
  for (const mode of ['binary', 'structured'] as const) {
    // Topics of their own per wire mode: each mode's handlers see only that mode's events.
    const placedTopic = ctx.topic(`trace_placed_${mode}`);
    const shippedTopic = ctx.topic(`trace_shipped_${mode}`);
    await transport.admin.createTopic(placedTopic, { partitions: partitionCount });
    await transport.admin.createTopic(shippedTopic, { partitions: partitionCount });
    const placed = itemEvent(placedTopic, 'OrderPlaced');
    const shipped = itemEvent(shippedTopic, 'OrderShipped');
    const bus = ctx.bus(transport, { wireMode: mode });
    const seen = new Map<string, Envelope>();
    // The first handler reacts with a follow-up event; the second records what arrived.
    ctx.handle(bus, ctx.group(`ship_${mode}`), placed, async (message, hctx) => {
      await hctx.publish(shipped, { key: message.data.key, seq: message.data.seq });
    });
    ctx.handle(bus, ctx.group(`audit_${mode}`), shipped, (_message, hctx) => {
      seen.set(hctx.envelope.causationid ?? '', hctx.envelope);
    });
    const correlationId = `corr-${mode}-${ctx.id}`;
    const withTrace = await bus.publish(
      placed,
      { key: 'order-1', seq: 0 },
      { correlationId, traceparent, tracestate },
    );
    const plain = await bus.publish(placed, { key: 'order-2', seq: 0 });
    await ctx.until(
      () => seen.has(withTrace.id) && seen.has(plain.id),
      () => `${mode}: both follow-up events arrived (${seen.size} of 2)`,
    );
    const followUp = seen.get(withTrace.id)!;
    expect(followUp.correlationid, `${mode}: the correlation id is carried forward`).toBe(correlationId);
    expect(followUp.causationid, `${mode}: the causation id is the handled event`).toBe(withTrace.id);
    expect(followUp.traceparent, `${mode}: traceparent is carried forward`).toBe(traceparent);
    expect(followUp.tracestate, `${mode}: tracestate is carried forward`).toBe(tracestate);
    const plainFollowUp = seen.get(plain.id)!;
    expect(plainFollowUp.correlationid, `${mode}: a flow's correlation id is its first event's id`).toBe(
      plain.id,
    );
    expect(plainFollowUp.traceparent).toBeUndefined();
    // On the transport itself, the follow-up record carries the attributes (as headers in binary mode).
    const record = await findRecord(transport, shippedTopic, followUp.id);
    expect(record, `${mode}: the follow-up record is stored`).toBeDefined();
    if (mode === 'binary') {
      expect(record!.headers['ce-traceparent']).toBe(traceparent);
      expect(record!.headers['ce-tracestate']).toBe(tracestate);
      expect(record!.headers['ce-correlationid']).toBe(correlationId);
      expect(record!.headers['ce-causationid']).toBe(withTrace.id);
    } else {
      const json = JSON.parse(text(record!.value)) as Record<string, unknown>;
      expect(json).toMatchObject({
        traceparent,
        tracestate,
        correlationid: correlationId,
        causationid: withTrace.id,
      });
    }
  }
};

/** The stored record of event `id` in `topic`, found with `admin.read`. */
async function findRecord(
  transport: Transport,
  topic: string,
  id: string,
): Promise<StoredRecord | undefined> {
  const description = await transport.admin.describeTopic(topic);
  for (const { partition, lowOffset, highOffset } of description.partitionOffsets) {
    if (highOffset <= lowOffset) continue;
    for (const record of await transport.admin.read(topic, partition, lowOffset, 1_000)) {
      if (decodeEnvelope(record).id === id) return record;
    }
  }
  return undefined;
}

const oneMebibyte = 1024 * 1024;

const bigEvent: CaseFn = async (ctx) => {
  const transport = await ctx.client();
  const topic = ctx.topic('big');
  await transport.admin.createTopic(topic, { partitions: partitionCount });
  const neededBytes = oneMebibyte + 16 * 1024; // a 1 MiB value plus headers and key
  if (transport.features.maxRecordBytes < neededBytes) {
    throw new Error(
      `transport "${ctx.options.name}" declares features.maxRecordBytes = ${transport.features.maxRecordBytes}, below the ` +
        `${neededBytes} bytes of a 1 MiB event with its headers. Skip the case by name with the reason: ` +
        `runTransportConformance({ ..., skip: { '${ctx.caseName}': '<why>' } })`,
    );
  }
  // Raw: 1 MiB of varied bytes.
  const value = new Uint8Array(oneMebibyte);
  for (let i = 0; i < value.length; i++) value[i] = (i * 31 + (i >>> 11)) & 0xff;
  const record = { key: 'big', headers: { 'x-size': String(value.length) }, value };
  const [ack] = await transport.publish(topic, [record]);
  const raw = ctx.collect(
    ctx.subscribe(transport, { group: ctx.group('big_raw'), topics: [topic], startFrom: 'earliest' }),
  );
  await ctx.until(
    () => raw.received.length >= 1,
    () => 'the 1 MiB record was delivered',
  );
  expect(raw.received[0]!.offset).toBe(ack!.offset);
  expectRecord(raw.received[0]!, record, topic, 'the 1 MiB record');

  // Through the bus: an event whose encoded data is 1 MiB.
  const busTopic = ctx.topic('big_bus');
  await transport.admin.createTopic(busTopic, { partitions: partitionCount });
  const event = itemEvent(busTopic);
  const bus = ctx.bus(transport, { maxEventBytes: transport.features.maxRecordBytes });
  const overhead = JSON.stringify({ key: 'big', seq: 0, pad: '' }).length;
  const pad = 'x'.repeat(oneMebibyte - overhead);
  const receipt = await bus.publish(event, { key: 'big', seq: 0, pad });
  let got: Item | undefined;
  const consumer = ctx.handle(bus, ctx.group('big_bus'), event, (message) => {
    got = message.data;
  });
  await consumer.waitFor(receipt, { timeoutMs: ctx.remainingMs() });
  expect(got?.pad?.length, 'the handler received the whole 1 MiB event').toBe(pad.length);
  expect(got?.pad === pad, 'the 1 MiB payload is intact').toBe(true);
};

/** The largest limit the over-limit case allocates a record for. */
const overLimitBytesMax = 64 * 1024 * 1024;

const overLimit: CaseFn = async (ctx) => {
  const transport = await ctx.client();
  const limit = transport.features.maxRecordBytes;
  if (!(Number.isInteger(limit) && limit > 0 && limit <= overLimitBytesMax)) {
    throw new Error(
      `transport "${ctx.options.name}" declares features.maxRecordBytes = ${limit}; the suite tests limits up to ` +
        `${overLimitBytesMax} bytes. Declare the real limit, or skip the case by name with the reason.`,
    );
  }
  const topic = ctx.topic('limit');
  await transport.admin.createTopic(topic, { partitions: partitionCount });
  const highOffsets = async () =>
    (await transport.admin.describeTopic(topic)).partitionOffsets.map(
      (p) => `${p.partition}:${p.highOffset}`,
    );
  const before = await highOffsets();

  // One byte over the limit (value + key + header names and values), in a call with a small record first.
  const key = 'huge';
  const headers = { 'x-kind': 'over' };
  const headerBytes = Buffer.byteLength(key) + Buffer.byteLength('x-kind') + Buffer.byteLength('over');
  const small = { key: 'small', headers: {}, value: bytes('fits') };
  const over = { key, headers, value: new Uint8Array(limit + 1 - headerBytes) };
  const error: unknown = await transport.publish(topic, [small, over]).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(
    isTidingsError(error, ErrorCode.EVENT_TOO_LARGE),
    `a record over the limit is refused with EVENT_TOO_LARGE, got: ${String(error)}`,
  ).toBe(true);
  const message = (error as Error).message;
  expect(
    message.includes(String(limit)) || message.includes(limit.toLocaleString('en-US')),
    `the error names the limit (${limit}): ${message}`,
  ).toBe(true);
  expect(await highOffsets(), 'nothing of the refused call was written').toEqual(before);

  // Exactly at the limit is accepted.
  const atLimit = { key, headers, value: new Uint8Array(limit - headerBytes) };
  const [ack] = await transport.publish(topic, [atLimit]);
  expect(ack?.topic, 'a record of exactly maxRecordBytes is accepted').toBe(topic);

  // Through the bus, an event over the limit is refused before it reaches the transport.
  const event = itemEvent(topic);
  const bus = ctx.bus(transport, { maxEventBytes: limit });
  const busError: unknown = await bus.publish(event, { key: 'huge', seq: 0, pad: 'x'.repeat(limit) }).then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(
    isTidingsError(busError, ErrorCode.EVENT_TOO_LARGE),
    `the bus refuses it with EVENT_TOO_LARGE, got: ${String(busError)}`,
  ).toBe(true);
  expect((busError as Error).message).toContain(String(limit));
};

const brokerRestart: CaseFn = async (ctx) => {
  const broker = await ctx.privateBroker();
  const transport = await ctx.brokerClient(broker);
  const topic = ctx.topic('restart');
  const group = ctx.group('restart');
  await transport.admin.createTopic(topic, { partitions: partitionCount });
  const event = itemEvent(topic);
  const bus = ctx.bus(transport);
  const consumed = new Set<string>();
  ctx.handle(bus, group, event, (_message, hctx) => {
    consumed.add(hctx.envelope.id);
  });
  await untilMembers(ctx, transport, group, topic, 1);
  const total = 10_000;
  const batch = 20;
  const restartAt = 3_000;
  const acked: string[] = [];
  const failures = { count: 0 } as { count: number; last?: unknown };
  const keys = keysByPartition(4, 'restart');
  let restart: Promise<void> | undefined;
  let restarted = false;
  let restartError: Error | undefined;
  let ackedAfterRestart = 0;
  // The stream goes on until 10,000 events are acknowledged and some were acknowledged after the broker came back.
  for (let i = 0; i < total || ackedAfterRestart === 0; i += batch) {
    if (restartError !== undefined) throw restartError;
    await new Promise<void>((resolve) => setImmediate(resolve)); // let the restart's I/O run between batches
    const afterRestart = restarted;
    const items: PublishManyItem[] = Array.from({ length: batch }, (_, j) => ({
      event,
      data: { key: keys[(i + j) % keys.length]!, seq: i + j },
      options: { id: `${ctx.id}-${i + j}` }, // a retry republishes the same ids
    }));
    const receipts = await publishRetrying(ctx, bus, items, failures);
    acked.push(...receipts.map((r) => r.id));
    if (afterRestart) ackedAfterRestart += receipts.length;
    if (restart === undefined && acked.length >= restartAt) {
      restart = (async () => {
        await broker.stop();
        await broker.start();
        restarted = true;
      })();
      restart.catch((error: unknown) => {
        restartError = new Error(`restarting the broker failed: ${String(error)}`, { cause: error });
      });
    }
  }
  await ctx.within(restart!, 'restarting the broker');
  await ctx.until(
    () => acked.every((id) => consumed.has(id)),
    () =>
      `every acknowledged event is consumed after the restart: ${missing(acked, consumed)} of ${acked.length} acknowledged`,
  );
  expect(ackedAfterRestart, 'events were acknowledged after the broker came back').toBeGreaterThan(0);
  expect(
    acked.filter((id) => !consumed.has(id)),
    'every acknowledged event was consumed',
  ).toEqual([]);
};

const brokerDownAtStart: CaseFn = async (ctx) => {
  const broker = await ctx.privateBroker();
  await broker.stop();
  let transport: Transport;
  try {
    transport = await ctx.brokerClient(broker);
  } catch (error) {
    throw new Error(
      `creating a transport while its broker is down must not fail (connect lazily and report TRANSPORT_UNAVAILABLE ` +
        `from publish): ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
  }
  const topic = ctx.topic('down');
  const event = itemEvent(topic);
  const bus = ctx.bus(transport);
  const received = new Set<string>();
  // A service that starts while its broker is down runs once the broker is up, without a restart.
  ctx.handle(bus, ctx.group('down'), event, (_message, hctx) => {
    received.add(hctx.envelope.id);
  });
  const error: unknown = await ctx
    .within(bus.publish(event, { key: 'k', seq: 0 }), 'a publish while the broker is down')
    .then(
      () => undefined,
      (caught: unknown) => caught,
    );
  expect(
    isTidingsError(error, ErrorCode.TRANSPORT_UNAVAILABLE),
    `a publish while the broker is down rejects with TRANSPORT_UNAVAILABLE, got: ${String(error)}`,
  ).toBe(true);
  expect((error as Error).message, 'the error names the broker URL').toContain(broker.url);
  await broker.start();
  const failures = { count: 0 } as { count: number; last?: unknown };
  const [receipt] = await publishRetrying(ctx, bus, [{ event, data: { key: 'k', seq: 1 } }], failures);
  await ctx.until(
    () => received.has(receipt!.id),
    () => 'the consumer started while the broker was down receives the event published after it came back',
  );
};

/** Every case, by name. */
export const caseImplementations: Record<ConformanceCase, CaseFn> = {
  'round trip keeps every attribute and header': roundTrip,
  'concurrent publishers lose nothing': concurrentPublishers,
  'topics are isolated': topicsIsolated,
  'every group gets every event (fan-out)': fanOut,
  'members of a group split the work without duplicates': competingMembers,
  'per-key order across partitions with concurrency': perKeyOrder,
  'per-key order while a member joins': orderWhileJoining,
  'per-key order while a member leaves': orderWhileLeaving,
  'nack redelivers': nackRedelivers,
  'a killed consumer process gets its uncommitted events again': killedConsumer,
  'close while consuming loses nothing': closeWhileConsuming,
  'a late group reads the history': lateGroup,
  'replay from earliest': replayEarliest,
  'replay from an offset': replayOffset,
  'replay from a time': replayTime,
  'lag is reported and reaches zero': lagReported,
  'parking holds a key and releases it in order': parking,
  'dead letters carry reason and original': deadLetters,
  'trace and correlation attributes are preserved': traceAndCorrelation,
  'a 1 MiB event round trips': bigEvent,
  'an event over the limit is refused clearly': overLimit,
  'a broker restart during a stream loses nothing acknowledged': brokerRestart,
  'a broker down at start-up gives a clear error and the bus reconnects': brokerDownAtStart,
};

/** Why a case cannot run with these options at all (the suite then skips it with this reason), if it cannot. */
export function unavailableReason(
  name: ConformanceCase,
  options: { childProcess?: unknown; privateBroker?: unknown },
): string | undefined {
  if (name === 'a killed consumer process gets its uncommitted events again' && !options.childProcess)
    return 'no childProcess option: the suite cannot start this transport in a child process';
  if (
    (name === 'a broker restart during a stream loses nothing acknowledged' ||
      name === 'a broker down at start-up gives a clear error and the bus reconnects') &&
    !options.privateBroker
  )
    return 'no privateBroker option: the suite cannot start and stop a broker of its own';
  return undefined;
}
