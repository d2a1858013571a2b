// The in-memory transport's specification (memory-transport.unit.spec.ts), run against the Redis transport on the
// shared server (TIDINGS_REDIS_URL, default redis://127.0.0.1:6379), each test under a key prefix of its own that is
// removed afterwards. Where Redis differs by design (joins happen in the background; an ack is an XACK, so acked
// records above an unacked one are not delivered again), the test says so.
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { abortReason, type Clock } from '../src/core/clock.js';
import { ErrorCode, isTidingsError, type TidingsError } from '../src/core/errors.js';
import { partitionForKey } from '../src/core/partitioner.js';
import type { Delivery, OutgoingRecord, Subscription } from '../src/core/transport.js';
import { createRedisTransport, type RedisTransport, type RedisTransportOptions } from '../src/redis/index.js';
import { brokerMissing, removePrefix, serverUrl, uniquePrefix } from './conformance/children/redis.js';

const missing = await brokerMissing();

// ---------------------------------------------------------------------------------------------------------------
// Helpers

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function rec(key: string, value: string, extra: Partial<OutgoingRecord> = {}): OutgoingRecord {
  return { key, headers: {}, value: encoder.encode(value), ...extra };
}

function text(record: { value: Uint8Array }): string {
  return decoder.decode(record.value);
}

/** A clock that moves only when told to; sleeps resolve when `advance` passes their due time. */
function createTestClock(startMs = 1_000_000): Clock & { advance(ms: number): void } {
  let nowMs = startMs;
  const timers = new Set<{ dueAtMs: number; resolve: () => void }>();
  return {
    now: () => nowMs,
    sleep: (durationMs, signal) =>
      new Promise<void>((resolve, reject) => {
        if (signal?.aborted) {
          reject(abortReason(signal));
          return;
        }
        const timer = { dueAtMs: nowMs + Math.max(0, durationMs), resolve };
        timers.add(timer);
        signal?.addEventListener(
          'abort',
          () => {
            timers.delete(timer);
            reject(abortReason(signal));
          },
          { once: true },
        );
      }),
    advance(ms) {
      nowMs += ms;
      for (const timer of [...timers]) {
        if (timer.dueAtMs <= nowMs) {
          timers.delete(timer);
          timer.resolve();
        }
      }
    },
  };
}

/** Awaits a condition (an assertion that stops throwing) with a deadline; never a fixed sleep. */
async function until(assertion: () => void | Promise<void>, timeoutMs = 10_000): Promise<void> {
  await vi.waitFor(assertion, { timeout: timeoutMs, interval: 5 });
}

/** Lets queued work run: a few round trips to the server (it answers in order on each connection). */
async function settleRoundTrips(transport: RedisTransport, count = 3): Promise<void> {
  for (let i = 0; i < count; i++) await transport.admin.listTopics();
}

function consume(sub: Subscription, handle: (delivery: Delivery) => void | 'stop' = (d) => d.ack()) {
  const received: Delivery[] = [];
  const done = (async () => {
    for await (const delivery of sub) {
      received.push(delivery);
      if (handle(delivery) === 'stop') break;
    }
  })();
  return { received, done };
}

async function expectTidingsError(promise: Promise<unknown>, code: ErrorCode): Promise<TidingsError> {
  const error: unknown = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(isTidingsError(error, code), `expected TidingsError ${code}, got ${String(error)}`).toBe(true);
  return error as TidingsError;
}

function syncError(call: () => unknown): unknown {
  try {
    call();
  } catch (error) {
    return error;
  }
  return undefined;
}

/** A key that `partitionForKey` places in `partition` of `partitions`. */
function keyIn(partition: number, partitions: number): string {
  for (let i = 0; ; i++) if (partitionForKey(`k${i}`, partitions) === partition) return `k${i}`;
}

function sequencesByKey(received: ReadonlyArray<{ key: string; seq: number }>): Map<string, number[]> {
  const byKey = new Map<string, number[]>();
  for (const { key, seq } of received) {
    const list = byKey.get(key) ?? [];
    list.push(seq);
    byKey.set(key, list);
  }
  return byKey;
}

let prefix = '';
const transports: RedisTransport[] = [];

/** A transport on the shared server under this test's prefix; closed after the test. */
function open(options: RedisTransportOptions = {}): RedisTransport {
  const transport = createRedisTransport({ url: serverUrl, keyPrefix: prefix, leaseMs: 3_000, ...options });
  transports.push(transport);
  return transport;
}

/** A raw client for looking at the keys the transport wrote. */
async function raw<T>(run: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis(serverUrl, { protocol: 2, maxRetriesPerRequest: 1 });
  try {
    return await run(client);
  } finally {
    client.disconnect();
  }
}

// ---------------------------------------------------------------------------------------------------------------

describe.skipIf(missing !== undefined)(`redis transport${missing ? ` — skipped: ${missing}` : ''}`, () => {
  beforeEach(() => {
    prefix = uniquePrefix('it');
  });

  afterEach(async () => {
    await Promise.all(transports.splice(0).map((transport) => transport.close()));
    await removePrefix(prefix);
  });

  describe('publish and topics', () => {
    it('acks every record in input order, with dense offsets per partition and per-key order kept', async () => {
      const transport = open();
      const records = Array.from({ length: 40 }, (_, i) => rec(`key-${i % 5}`, `${i}`));
      const acks = await transport.publish('orders', records);

      expect(acks).toHaveLength(40);
      acks.forEach((ack, i) => {
        expect(ack.topic).toBe('orders');
        expect(ack.partition).toBe(partitionForKey(`key-${i % 5}`, 4));
      });
      for (let partition = 0; partition < 4; partition++) {
        const offsets = acks.filter((ack) => ack.partition === partition).map((ack) => ack.offset);
        expect(offsets).toEqual(offsets.map((_, i) => i));
      }
      for (let k = 0; k < 5; k++) {
        const partition = partitionForKey(`key-${k}`, 4);
        const stored = await transport.admin.read('orders', partition, 0, 1000);
        const values = stored.filter((r) => r.key === `key-${k}`).map((r) => Number(text(r)));
        expect(values).toEqual(Array.from({ length: 8 }, (_, i) => i * 5 + k));
      }
    });

    it('stores a record as a stream entry with one field per header, and keeps a copy of the caller value', async () => {
      const transport = open({ defaultPartitions: 1 });
      const value = encoder.encode('original');
      const headers = { 'ce-type': 'OrderPlaced', 'ce-id': 'e-1', _private: 'x' };
      await transport.publish('orders', [{ key: 'a', headers, value, timestamp: 5 }]);
      value.fill(0);
      headers['ce-type'] = 'changed';
      const [stored] = await transport.admin.read('orders', 0, 0, 1);
      expect(text(stored!)).toBe('original');
      expect(stored!.headers).toEqual({ 'ce-type': 'OrderPlaced', 'ce-id': 'e-1', _private: 'x' });
      expect(stored!.timestamp).toBe(5);

      // UTF-8 anywhere in keys, header names and values.
      const unicode = { 'ce-subject': 'Zürich ✓', 'x-名前': 'värde' };
      await transport.publish('orders', [{ key: 'ключ', headers: unicode, value }]);
      const [again] = await transport.admin.read('orders', 0, 1, 1);
      expect([again!.key, again!.headers]).toEqual(['ключ', unicode]);

      // A non-Tidings reader sees the CloudEvents attributes as plain stream fields (binary mode).
      const entries = await raw((client) => client.xrange(`${prefix}:orders:0`, '-', '+'));
      expect(entries).toHaveLength(2);
      const [id, fields] = entries[0]!;
      expect(id).toBe('5-0'); // the id's time is the record's timestamp, so no `_t` field is needed
      expect(fields).toEqual([
        '_o',
        '0',
        '_k',
        'a',
        'ce-type',
        'OrderPlaced',
        'ce-id',
        'e-1',
        '__private',
        'x',
        '_v',
        'original',
      ]);
    });

    it('creates a topic on first publish with defaultPartitions, and createTopic conflicts on another count', async () => {
      const transport = open({ defaultPartitions: 3 });
      await transport.publish('auto', [rec('a', '1')]);
      const auto = await transport.admin.describeTopic('auto');
      expect(auto.partitions).toBe(3);
      expect(auto.partitionOffsets).toHaveLength(3);

      await transport.admin.createTopic('explicit', { partitions: 8 });
      await transport.admin.createTopic('explicit', { partitions: 8 }); // same count: resolves
      const conflict = await expectTidingsError(
        transport.admin.createTopic('explicit', { partitions: 2 }),
        ErrorCode.CONFLICT,
      );
      expect(conflict.message).toContain("'explicit'");
      expect(conflict.message).toContain('8 partitions');
      // Another transport (another process) sees the same topics.
      const other = open();
      await expectTidingsError(other.admin.createTopic('auto', { partitions: 4 }), ErrorCode.CONFLICT);
      expect(await other.admin.listTopics()).toEqual(['auto', 'explicit']);
      await expectTidingsError(transport.admin.describeTopic('missing'), ErrorCode.NOT_FOUND);
      await expectTidingsError(
        transport.admin.createTopic('bad', { partitions: 0 }),
        ErrorCode.INVALID_CONFIG,
      );
    });

    it('rejects a batch holding a record over maxRecordBytes, naming size and limit, and writes nothing', async () => {
      const transport = open({ maxRecordBytes: 100 });
      expect(transport.features.maxRecordBytes).toBe(100);
      await transport.admin.createTopic('t', { partitions: 1 });
      const fits = rec('k', 'x'.repeat(99)); // 1 (key) + 99 (value) = 100 bytes
      const tooBig = rec('k', 'x'.repeat(90), { headers: { h: 'y'.repeat(9) } }); // 1 + 90 + 1 + 9 = 101 bytes
      const error = await expectTidingsError(
        transport.publish('t', [fits, tooBig]),
        ErrorCode.EVENT_TOO_LARGE,
      );
      expect(error.message).toContain('101 bytes');
      expect(error.message).toContain('100');
      expect((await transport.admin.describeTopic('t')).partitionOffsets[0]!.highOffset).toBe(0);
      await expect(transport.publish('t', [fits])).resolves.toEqual([
        { topic: 't', partition: 0, offset: 0 },
      ]);
    });

    it('rejects malformed records before writing anything', async () => {
      const transport = open();
      const bad = { key: 'k', headers: {}, value: 'not bytes' } as unknown as OutgoingRecord;
      await expectTidingsError(transport.publish('t', [rec('k', 'ok'), bad]), ErrorCode.VALIDATION_FAILED);
      await expectTidingsError(transport.admin.describeTopic('t'), ErrorCode.NOT_FOUND);
      const aborted = new AbortController();
      aborted.abort();
      await expectTidingsError(
        transport.publish('t', [rec('k', 'ok')], { signal: aborted.signal }),
        ErrorCode.ABORTED,
      );
    });

    it('trims the oldest records by retentionBytes and retentionMs, keeping offsets', async () => {
      const clock = createTestClock();
      const transport = open({ clock });
      await transport.admin.createTopic('sized', { partitions: 1, retentionBytes: 30 });
      for (let i = 0; i < 10; i++) await transport.publish('sized', [rec('k', `value-${i}`)]); // 8 bytes each
      const sized = await transport.admin.describeTopic('sized');
      expect(sized.partitionOffsets[0]).toEqual({ partition: 0, lowOffset: 7, highOffset: 10 });
      expect((await transport.admin.read('sized', 0, 0, 100)).map((r) => r.offset)).toEqual([7, 8, 9]);

      await transport.admin.createTopic('timed', { partitions: 1, retentionMs: 1_000 });
      await transport.publish('timed', [rec('k', 'old-1'), rec('k', 'old-2')]);
      clock.advance(600);
      await transport.publish('timed', [rec('k', 'new')]);
      clock.advance(600);
      const timed = await transport.admin.describeTopic('timed');
      expect(timed.retentionMs).toBe(1_000);
      expect(timed.partitionOffsets[0]).toEqual({ partition: 0, lowOffset: 2, highOffset: 3 });
      const [next] = await transport.publish('timed', [rec('k', 'newer')]);
      expect(next!.offset).toBe(3);
      expect(await raw((client) => client.xlen(`${prefix}:timed:0`))).toBe(2);
    });

    it('read() pages through a partition and offsetForTime() finds the first record at or after a time', async () => {
      const clock = createTestClock(10_000);
      const transport = open({ clock, defaultPartitions: 1 });
      // 100 records, 10 per ms step: the sparse offset index (every 32nd offset) is used for reads from the middle.
      for (let step = 0; step < 10; step++) {
        await transport.publish(
          't',
          Array.from({ length: 10 }, (_, i) => rec('k', `${step * 10 + i}`)),
        );
        clock.advance(100);
      }
      const page = await transport.admin.read('t', 0, 45, 20);
      expect(page.map((r) => r.offset)).toEqual(Array.from({ length: 20 }, (_, i) => 45 + i));
      expect(page.map(text)).toEqual(Array.from({ length: 20 }, (_, i) => `${45 + i}`));
      expect((await transport.admin.read('t', 0, 95, 100)).map((r) => r.offset)).toEqual([
        95, 96, 97, 98, 99,
      ]);
      expect(await transport.admin.read('t', 0, 100, 10)).toEqual([]);
      await expectTidingsError(transport.admin.read('t', 1, 0, 10), ErrorCode.NOT_FOUND);
      await expectTidingsError(transport.admin.read('t', 0, 0, 0), ErrorCode.INVALID_CONFIG);

      expect(await transport.admin.offsetForTime('t', 0, 0)).toBe(0);
      expect(await transport.admin.offsetForTime('t', 0, 10_000)).toBe(0);
      expect(await transport.admin.offsetForTime('t', 0, 10_001)).toBe(10);
      expect(await transport.admin.offsetForTime('t', 0, 10_500)).toBe(50);
      expect(await transport.admin.offsetForTime('t', 0, 99_999)).toBe(100);

      // Producer clocks out of step: an earlier timestamp than the last is stored as given, found by running max.
      await transport.publish('t', [rec('k', 'late', { timestamp: 10_050 })]);
      expect(await transport.admin.offsetForTime('t', 0, 10_900)).toBe(90);
      expect(await transport.admin.offsetForTime('t', 0, 10_901)).toBe(101);
      expect((await transport.admin.read('t', 0, 100, 1))[0]!.timestamp).toBe(10_050);
    });
  });

  describe('consumer groups', () => {
    it('delivers every record to each of three groups', async () => {
      const transport = open();
      const groups = ['a', 'b', 'c'].map((group) =>
        consume(transport.subscribe({ group, topics: ['t'], startFrom: 'earliest' })),
      );
      await transport.publish(
        't',
        Array.from({ length: 30 }, (_, i) => rec(`k${i % 7}`, `${i}`)),
      );
      for (const group of groups) {
        await until(() => expect(group.received).toHaveLength(30));
        expect(new Set(group.received.map(text)).size).toBe(30);
      }
      expect(await transport.admin.listGroups()).toEqual(['a', 'b', 'c']);
    });

    it('splits the partitions between members of two transports, without duplicates', async () => {
      const one = open();
      const two = open();
      await one.admin.createTopic('t', { partitions: 4 });
      const a = one.subscribe({ group: 'g', topics: ['t'] });
      const b = two.subscribe({ group: 'g', topics: ['t'] });
      await until(() => {
        expect(a.assignments()).toHaveLength(2);
        expect(b.assignments()).toHaveLength(2);
      });
      const ca = consume(a);
      const cb = consume(b);
      const description = await one.admin.describeGroup('g');
      expect(description.members.map((m) => m.memberId).sort()).toEqual([a.memberId, b.memberId].sort());
      await until(async () => {
        const owned = (await one.admin.describeGroup('g')).members.flatMap((m) => m.assignments);
        expect(owned).toHaveLength(4);
      });
      await two.publish(
        't',
        Array.from({ length: 60 }, (_, i) => rec(`k${i % 12}`, `${i}`)),
      );
      await until(() => expect(ca.received.length + cb.received.length).toBe(60));
      expect(ca.received.length).toBeGreaterThan(0);
      expect(cb.received.length).toBeGreaterThan(0);
      const all = [...ca.received, ...cb.received].map(text);
      expect(new Set(all).size).toBe(60);
      const aPartitions = new Set(ca.received.map((d) => d.partition));
      expect(cb.received.every((d) => !aPartitions.has(d.partition))).toBe(true);
    });

    it('keeps per-key order with no duplicates while a second member joins mid-stream', async () => {
      const one = open();
      const two = open();
      await one.admin.createTopic('t', { partitions: 4 });
      const keys = Array.from({ length: 8 }, (_, i) => `key-${i}`);
      const seen: Array<{ key: string; seq: number }> = [];
      const handle = (d: Delivery) => {
        seen.push({ key: d.key, seq: Number(text(d)) });
        setImmediate(() => d.ack()); // acks trail the deliveries, so some are in flight at the handover
      };
      consume(one.subscribe({ group: 'g', topics: ['t'], prefetch: 8 }), handle);
      for (let seq = 0; seq < 20; seq++)
        await one.publish(
          't',
          keys.map((key) => rec(key, `${seq}`)),
        );
      consume(two.subscribe({ group: 'g', topics: ['t'], prefetch: 8 }), handle);
      for (let seq = 20; seq < 40; seq++)
        await one.publish(
          't',
          keys.map((key) => rec(key, `${seq}`)),
        );
      await until(() => expect(seen).toHaveLength(8 * 40), 20_000);
      for (const [, seqs] of sequencesByKey(seen))
        expect(seqs).toEqual(Array.from({ length: 40 }, (_, i) => i));
    });

    it('keeps per-key order with no duplicates while a member leaves mid-stream', async () => {
      const one = open();
      const two = open();
      await one.admin.createTopic('t', { partitions: 4 });
      const keys = Array.from({ length: 8 }, (_, i) => `key-${i}`);
      const seen: Array<{ key: string; seq: number; count: number }> = [];
      const handle = (d: Delivery) => {
        seen.push({ key: d.key, seq: Number(text(d)), count: d.deliveryCount });
        d.ack();
      };
      const leaving = two.subscribe({ group: 'g', topics: ['t'] });
      consume(one.subscribe({ group: 'g', topics: ['t'] }), handle);
      consume(leaving, handle);
      await until(async () => expect((await one.admin.describeGroup('g')).members).toHaveLength(2));
      for (let seq = 0; seq < 20; seq++)
        await one.publish(
          't',
          keys.map((key) => rec(key, `${seq}`)),
        );
      await leaving.close();
      for (let seq = 20; seq < 40; seq++)
        await one.publish(
          't',
          keys.map((key) => rec(key, `${seq}`)),
        );
      await until(() => expect(seen).toHaveLength(8 * 40), 20_000);
      for (const [, seqs] of sequencesByKey(seen))
        expect(seqs).toEqual(Array.from({ length: 40 }, (_, i) => i));
    });

    it('waits for the previous owner to settle before handing a partition over, then resumes without repeats', async () => {
      const transport = open({ defaultPartitions: 2 });
      const k1 = keyIn(1, 2);
      const a = transport.subscribe({ group: 'g', topics: ['t'] });
      const ia = a[Symbol.asyncIterator]();
      await until(() => expect(a.assignments()).toHaveLength(2));
      await transport.publish('t', [rec(k1, '0'), rec(k1, '1'), rec(k1, '2')]);
      const held = (await ia.next()).value as Delivery;
      expect(held.partition).toBe(1);

      const b = transport.subscribe({ group: 'g', topics: ['t'] });
      await until(() => {
        expect(b.assignments()).toEqual([{ topic: 't', partition: 1 }]);
        expect(a.assignments()).toEqual([{ topic: 't', partition: 0 }]);
      });
      const ib = b[Symbol.asyncIterator]();
      let bGot: Delivery | undefined;
      void ib.next().then((r) => (bGot = r.value as Delivery));
      await settleRoundTrips(transport);
      expect(bGot).toBeUndefined(); // a still holds offset 0 of partition 1

      held.ack();
      await until(() => expect(bGot).toBeDefined());
      // Offsets 1 and 2 were read ahead by a but never handed out: their delivery count was set back.
      expect([bGot!.partition, bGot!.offset, bGot!.deliveryCount, text(bGot!)]).toEqual([1, 1, 1, '1']);
    });

    it('hands a partition over after rebalanceTimeoutMs if the previous owner never settles, fencing it', async () => {
      const clock = createTestClock();
      const transport = open({ defaultPartitions: 2, rebalanceTimeoutMs: 5_000, clock });
      const k1 = keyIn(1, 2);
      const a = transport.subscribe({ group: 'g', topics: ['t'] });
      const ia = a[Symbol.asyncIterator]();
      await until(() => expect(a.assignments()).toHaveLength(2));
      await transport.publish('t', [rec(k1, '0'), rec(k1, '1')]);
      const stuck = (await ia.next()).value as Delivery;

      const bSub = transport.subscribe({ group: 'g', topics: ['t'] });
      const b = consume(bSub, () => undefined);
      await until(() => {
        expect(bSub.assignments()).toEqual([{ topic: 't', partition: 1 }]);
        expect(a.assignments()).toEqual([{ topic: 't', partition: 0 }]); // a is handing partition 1 over
      });
      clock.advance(4_999);
      await settleRoundTrips(transport);
      expect(b.received).toEqual([]);
      clock.advance(1);
      await until(() => expect(b.received).toHaveLength(2));
      expect(b.received.map((d) => [d.offset, d.deliveryCount])).toEqual([
        [0, 2],
        [1, 1],
      ]);

      stuck.ack(); // fenced: a lost partition 1 in the rebalance
      const committed = async () => (await transport.admin.describeGroup('g')).lag[1]!.committedOffset;
      expect(await committed()).toBe(0);
      b.received[0]!.ack();
      b.received[1]!.ack();
      expect(await committed()).toBe(2);
    });
  });

  describe('settlement, offsets and delivery counts', () => {
    it('holds at most prefetch un-acked deliveries per member', async () => {
      const transport = open({ defaultPartitions: 3 });
      const sub = transport.subscribe({ group: 'g', topics: ['t'], prefetch: 5 });
      const iterator = sub[Symbol.asyncIterator]();
      await until(() => expect(sub.assignments()).toHaveLength(3));
      await transport.publish(
        't',
        Array.from({ length: 50 }, (_, i) => rec(`k${i}`, `${i}`)),
      );
      const held: Delivery[] = [];
      for (let i = 0; i < 5; i++) held.push((await iterator.next()).value as Delivery);
      let sixth: Delivery | undefined;
      const sixthPromise = iterator.next().then((r) => (sixth = r.value as Delivery));
      await settleRoundTrips(transport);
      expect(sixth).toBeUndefined();

      held[3]!.nack(); // a nack frees a slot too
      await sixthPromise;
      expect(sixth).toBeDefined();
      held.push(sixth!);

      let outstanding = 6 - 1;
      let maxOutstanding = outstanding;
      for (const d of held) if (d !== held[3]) setImmediate(() => (d.ack(), outstanding--));
      let count = 0;
      for (;;) {
        const result = await iterator.next();
        const d = result.value as Delivery;
        outstanding++;
        maxOutstanding = Math.max(maxOutstanding, outstanding);
        const delay = count++ % 3;
        setTimeout(() => (d.ack(), outstanding--), delay);
        if (count === 45) break;
      }
      expect(maxOutstanding).toBeLessThanOrEqual(5);
    });

    it('commits the low-water mark when acks arrive out of order; a second ack is a no-op', async () => {
      const transport = open();
      await transport.admin.createTopic('t', { partitions: 1 });
      const sub = transport.subscribe({ group: 'g', topics: ['t'] });
      const iterator = sub[Symbol.asyncIterator]();
      await until(() => expect(sub.assignments()).toHaveLength(1));
      await transport.publish(
        't',
        [0, 1, 2, 3, 4].map((i) => rec('k', `${i}`)),
      );
      const d: Delivery[] = [];
      for (let i = 0; i < 5; i++) d.push((await iterator.next()).value as Delivery);
      const committed = async () => (await transport.admin.describeGroup('g')).lag[0]!;

      d[1]!.ack();
      d[2]!.ack();
      d[4]!.ack();
      expect(await committed()).toMatchObject({ committedOffset: 0, highOffset: 5, lag: 5 });
      d[0]!.ack();
      expect(await committed()).toMatchObject({ committedOffset: 3, lag: 2 });
      d[0]!.ack();
      d[0]!.nack();
      expect(await committed()).toMatchObject({ committedOffset: 3, lag: 2 });
      d[3]!.ack();
      expect(await committed()).toMatchObject({ committedOffset: 5, lag: 0 });
    });

    it('redelivers un-acked records to the next member with deliveryCount 2 after a member closes', async () => {
      const transport = open();
      await transport.admin.createTopic('t', { partitions: 1 });
      const a = transport.subscribe({ group: 'g', topics: ['t'] });
      const ia = a[Symbol.asyncIterator]();
      await until(() => expect(a.assignments()).toHaveLength(1));
      await transport.publish('t', [rec('k', '0'), rec('k', '1'), rec('k', '2')]);
      const d0 = (await ia.next()).value as Delivery;
      const d1 = (await ia.next()).value as Delivery;
      d0.ack();
      await a.close();
      expect(await ia.next()).toEqual({ done: true, value: undefined });
      d1.ack(); // after close: fenced, not committed

      const b = consume(transport.subscribe({ group: 'g', topics: ['t'] }));
      await until(() => expect(b.received).toHaveLength(2));
      expect(b.received.map((d) => [d.offset, d.deliveryCount])).toEqual([
        [1, 2],
        [2, 1],
      ]);
    });

    it('redelivers a nacked record after its delay, to whoever owns the partition, while later records flow', async () => {
      const clock = createTestClock();
      const transport = open({ clock });
      await transport.admin.createTopic('t', { partitions: 1 });
      const sub = transport.subscribe({ group: 'g', topics: ['t'] });
      const iterator = sub[Symbol.asyncIterator]();
      await until(() => expect(sub.assignments()).toHaveLength(1));
      await transport.publish('t', [rec('k', '0'), rec('k', '1')]);
      const d0 = (await iterator.next()).value as Delivery;
      d0.nack({ delayMs: 1_000 });
      const d1 = (await iterator.next()).value as Delivery;
      expect(d1.offset).toBe(1);
      d1.ack();
      expect((await transport.admin.describeGroup('g')).lag[0]!.committedOffset).toBe(0);

      let redelivered: Delivery | undefined;
      void iterator.next().then((r) => (redelivered = r.value as Delivery));
      clock.advance(999);
      await settleRoundTrips(transport);
      expect(redelivered).toBeUndefined();
      clock.advance(1);
      await until(() => expect(redelivered).toBeDefined());
      expect([redelivered!.offset, redelivered!.deliveryCount]).toEqual([0, 2]);

      redelivered!.nack(); // no delay: straight back
      const third = (await iterator.next()).value as Delivery;
      expect([third.offset, third.deliveryCount]).toEqual([0, 3]);
      third.ack();
      expect((await transport.admin.describeGroup('g')).lag[0]).toMatchObject({ committedOffset: 2, lag: 0 });
      expect(() => third.nack({ delayMs: -1 })).toThrow(/delayMs/);
    });

    it('keeps a delayed nack waiting across a handover, then gives it to the new owner', async () => {
      const clock = createTestClock();
      const transport = open({ clock });
      await transport.admin.createTopic('t', { partitions: 1 });
      const a = transport.subscribe({ group: 'g', topics: ['t'] });
      const ia = a[Symbol.asyncIterator]();
      await until(() => expect(a.assignments()).toHaveLength(1));
      await transport.publish('t', [rec('k', '0'), rec('k', '1')]);
      ((await ia.next()).value as Delivery).nack({ delayMs: 500 });
      ((await ia.next()).value as Delivery).ack();
      await a.close();

      // Unlike a Kafka-style offset, the ack of offset 1 stands: only offset 0 is pending, and b gets it once its
      // delay (kept in Redis for the next owner) has passed.
      const b = consume(transport.subscribe({ group: 'g', topics: ['t'] }));
      await until(async () => expect((await transport.admin.describeGroup('g')).members).toHaveLength(1));
      await settleRoundTrips(transport);
      expect(b.received).toEqual([]);
      clock.advance(500);
      await until(() => expect(b.received).toHaveLength(1));
      expect([b.received[0]!.offset, b.received[0]!.deliveryCount]).toEqual([0, 2]);
      await until(async () =>
        expect((await transport.admin.describeGroup('g')).lag[0]).toMatchObject({
          committedOffset: 2,
          lag: 0,
        }),
      );
    });

    it("starts a new group at 'latest', 'earliest', an offset or a time", async () => {
      const clock = createTestClock(50_000);
      const transport = open({ clock });
      await transport.admin.createTopic('t', { partitions: 1 });
      for (let i = 0; i < 60; i++) {
        await transport.publish('t', [rec('k', `${i}`)]);
        clock.advance(1_000); // record i at 50_000 + 1000 i
      }
      const subscribe = (
        group: string,
        startFrom?: Parameters<RedisTransport['subscribe']>[0]['startFrom'],
      ) =>
        consume(
          transport.subscribe({ group, topics: ['t'], ...(startFrom === undefined ? {} : { startFrom }) }),
        );
      const groups = {
        latest: subscribe('latest'),
        earliest: subscribe('earliest', 'earliest'),
        offset: subscribe('offset', { offset: 40 }),
        clamped: subscribe('clamped', { offset: 99 }),
        time: subscribe('time', { timestamp: 52_500 }),
        future: subscribe('future', { timestamp: 999_999 }),
      };
      await transport.publish('t', [rec('k', '60')]);
      const offsets = (c: { received: Delivery[] }) => c.received.map((d) => d.offset);
      const range = (from: number) => Array.from({ length: 61 - from }, (_, i) => from + i);
      await until(() => {
        expect(offsets(groups.latest)).toEqual([60]);
        expect(offsets(groups.earliest)).toEqual(range(0));
        expect(offsets(groups.offset)).toEqual(range(40));
        expect(offsets(groups.clamped)).toEqual([60]);
        expect(offsets(groups.time)).toEqual(range(3));
        expect(offsets(groups.future)).toEqual([60]);
      });
    });

    it('resets offsets of a group with no live member, and refuses while one is live', async () => {
      const transport = open();
      await transport.admin.createTopic('t', { partitions: 2 });
      await transport.publish(
        't',
        Array.from({ length: 10 }, (_, i) => rec(`k${i}`, `${i}`)),
      );
      const first = transport.subscribe({ group: 'g', topics: ['t'], startFrom: 'earliest' });
      const c1 = consume(first);
      await until(() => expect(c1.received).toHaveLength(10));

      const refused = await expectTidingsError(
        transport.admin.resetOffsets('g', 't', 'earliest'),
        ErrorCode.CONFLICT,
      );
      expect(refused.message).toContain("'g'");
      expect(refused.message).toContain('1 live member');

      await first.close();
      await c1.done;
      await transport.admin.resetOffsets('g', 't', 'earliest');
      expect((await transport.admin.describeGroup('g')).lag.map((p) => p.committedOffset)).toEqual([0, 0]);
      const c2 = consume(transport.subscribe({ group: 'g', topics: ['t'] }));
      await until(() => expect(c2.received).toHaveLength(10));
      expect(c2.received.every((d) => d.deliveryCount === 1)).toBe(true);

      await expectTidingsError(transport.admin.resetOffsets('g', 'missing', 'earliest'), ErrorCode.NOT_FOUND);
      await transport.admin.resetOffsets('fresh', 't', { offset: 3 }); // a group that never subscribed
      const fresh = (await transport.admin.describeGroup('fresh')).lag;
      expect(fresh.map((p) => p.committedOffset)).toEqual(fresh.map((p) => Math.min(3, p.highOffset)));
    });

    it('reports lag per partition and it reaches 0 once the group has acked everything', async () => {
      const transport = open();
      await transport.admin.createTopic('t', { partitions: 2 });
      const sub = transport.subscribe({ group: 'g', topics: ['t'], startFrom: 'earliest' });
      await until(() => expect(sub.assignments()).toHaveLength(2));
      const acks = await transport.publish(
        't',
        Array.from({ length: 10 }, (_, i) => rec(`k${i}`, `${i}`)),
      );
      const { lag, members } = await transport.admin.describeGroup('g');
      expect(members).toEqual([{ memberId: sub.memberId, assignments: sub.assignments() }]);
      expect(lag.map((p) => [p.topic, p.partition, p.committedOffset, p.lag])).toEqual([
        ['t', 0, 0, acks.filter((a) => a.partition === 0).length],
        ['t', 1, 0, acks.filter((a) => a.partition === 1).length],
      ]);
      consume(sub);
      await until(async () => {
        const after = await transport.admin.describeGroup('g');
        expect(after.lag.map((p) => p.lag)).toEqual([0, 0]);
      });
      await expectTidingsError(transport.admin.describeGroup('nobody'), ErrorCode.NOT_FOUND);
    });
  });

  describe('subscription lifecycle', () => {
    it('throws when a subscription is iterated twice', () => {
      const transport = open();
      const sub = transport.subscribe({ group: 'g', topics: ['t'] });
      sub[Symbol.asyncIterator]();
      const error = syncError(() => sub[Symbol.asyncIterator]());
      expect(isTidingsError(error, ErrorCode.INVALID_CONFIG)).toBe(true);
    });

    it('closes on abort: a waiting iterator ends, closed resolves and the member leaves the group', async () => {
      const transport = open();
      const controller = new AbortController();
      const sub = transport.subscribe({ group: 'g', topics: ['t'], signal: controller.signal });
      await until(async () => expect((await transport.admin.describeGroup('g')).members).toHaveLength(1));
      const pending = sub[Symbol.asyncIterator]().next();
      controller.abort();
      expect(await pending).toEqual({ done: true, value: undefined });
      expect(await sub.closed).toBeUndefined();
      expect((await transport.admin.describeGroup('g')).members).toEqual([]);

      const aborted = new AbortController();
      aborted.abort();
      const never = transport.subscribe({ group: 'never', topics: ['t'], signal: aborted.signal });
      expect(await never.closed).toBeUndefined();
      await expectTidingsError(transport.admin.describeGroup('never'), ErrorCode.NOT_FOUND);
    });

    it('closes idempotently and via await using', async () => {
      const transport = open();
      {
        await using sub = transport.subscribe({ group: 'g', topics: ['t'] });
        await until(() => expect(sub.assignments()).toHaveLength(4));
      }
      const sub = transport.subscribe({ group: 'g', topics: ['t'] });
      await Promise.all([sub.close(), sub.close()]);
      await sub.close();
      expect(sub.assignments()).toEqual([]);
      expect((await transport.admin.describeGroup('g')).members).toEqual([]);
    });

    it('transport close ends waiting iterators and rejects later calls with CLOSED', async () => {
      const transport = open();
      const sub = transport.subscribe({ group: 'g', topics: ['t'] });
      const pending = sub[Symbol.asyncIterator]().next();
      await transport.close();
      await transport.close();
      expect(await pending).toEqual({ done: true, value: undefined });
      await expectTidingsError(transport.publish('t', [rec('k', 'v')]), ErrorCode.CLOSED);
      await expectTidingsError(transport.admin.listTopics(), ErrorCode.CLOSED);
      expect(
        isTidingsError(
          syncError(() => transport.subscribe({ group: 'g', topics: ['t'] })),
          ErrorCode.CLOSED,
        ),
      ).toBe(true);
    });

    it('validates options at construction and subscribe', () => {
      const invalid = (options: unknown) =>
        isTidingsError(
          syncError(() => createRedisTransport(options as RedisTransportOptions)),
          ErrorCode.INVALID_CONFIG,
        );
      expect(invalid({ defaultPartitions: 0 })).toBe(true);
      expect(invalid({ url: 'http://localhost' })).toBe(true);
      expect(invalid({ redis: { keyPrefix: 'x' } })).toBe(true);
      expect(invalid({ leaseMs: 10 })).toBe(true);
      expect(invalid({ speling: 1 })).toBe(true);
      expect(invalid({ maxRecordBytes: 1024 * 1024 * 1024 })).toBe(true);
      const transport = open();
      const subscribeError = (options: unknown) =>
        syncError(() => transport.subscribe(options as Parameters<RedisTransport['subscribe']>[0]));
      expect(isTidingsError(subscribeError({ group: '', topics: ['t'] }), ErrorCode.INVALID_CONFIG)).toBe(
        true,
      );
      expect(isTidingsError(subscribeError({ group: 'g', topics: [] }), ErrorCode.INVALID_CONFIG)).toBe(true);
      expect(
        isTidingsError(subscribeError({ group: 'g', topics: ['t'], prefetch: 0 }), ErrorCode.INVALID_CONFIG),
      ).toBe(true);
      expect(
        isTidingsError(
          subscribeError({ group: 'g', topics: ['t'], startFrom: 'middle' }),
          ErrorCode.INVALID_CONFIG,
        ),
      ).toBe(true);
    });
  });

  describe('durability settings', () => {
    it('refuses to publish with persistent: true to a server whose AOF is off, and reports the flag', async () => {
      const appendonly = await raw((client) => client.config('GET', 'appendonly'));
      const transport = open({ persistent: true });
      expect(transport.features.persistent).toBe(true);
      if (appendonly[1] === 'yes') {
        await expect(transport.publish('t', [rec('k', 'v')])).resolves.toHaveLength(1);
        return;
      }
      const error = await expectTidingsError(
        transport.publish('t', [rec('k', 'v')]),
        ErrorCode.INVALID_CONFIG,
      );
      expect(error.message).toContain('appendonly');
      expect(open().features.persistent).toBe(false);
    });

    it('rejects with PUBLISH_FAILED when fewer replicas than waitReplicas confirm the records', async () => {
      const transport = open({ waitReplicas: 1, waitTimeoutMs: 20 });
      const error = await expectTidingsError(
        transport.publish('t', [rec('k', 'v')]),
        ErrorCode.PUBLISH_FAILED,
      );
      expect(error.message).toContain('0 of the 1 replicas');
      expect(
        (await transport.admin.describeTopic('t')).partitionOffsets.some((p) => p.highOffset === 1),
      ).toBe(true);
    });
  });
});
