import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCode, isTidingsError } from '../src/core/errors.js';
import { partitionForKey } from '../src/core/partitioner.js';
import type { Delivery, OutgoingRecord, Subscription } from '../src/core/transport.js';
import { createPostgresTransport, type PostgresTransportOptions } from '../src/postgres/index.js';
import { runRetentionForTesting } from '../src/postgres/transport.js';
import {
  consume,
  createTestClock,
  expectTidingsError,
  keyIn,
  rec,
  sequencesByKey,
  syncError,
  text,
  turns,
  until,
} from './log-fixtures/helpers.js';
import { brokerMissing, cleanupPostgres, openPostgres, sql } from './postgres-fixtures/helpers.js';

// The in-memory transport's specification (memory-transport.unit.spec.ts), run against PostgreSQL. Where the
// transport differs by design (joins are written in the background; retention runs in the background), the test
// waits for the condition instead of expecting it synchronously. Each test has a schema of its own.

const missing = await brokerMissing();
const suite = (name: string) => (missing === undefined ? name : `${name} — skipped: ${missing}`);

afterEach(cleanupPostgres);

describe.skipIf(missing !== undefined)(suite('postgres transport: publish and topics'), () => {
  it('acks every record in input order, with dense offsets per partition and per-key order kept', async () => {
    const transport = openPostgres();
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

  it('gives dense, unique offsets to many concurrent publishers on two transports', async () => {
    const one = openPostgres({ defaultPartitions: 3 });
    const two = openPostgres({ schema: one.schema, defaultPartitions: 3 });
    await one.admin.createTopic('t', { partitions: 3 });
    const calls = Array.from({ length: 40 }, (_, c) =>
      (c % 2 === 0 ? one : two).publish(
        't',
        Array.from({ length: 10 }, (_, i) => rec(`k${(c + i) % 7}`, `${c}:${i}`)),
      ),
    );
    const acks = (await Promise.all(calls)).flat();
    for (let partition = 0; partition < 3; partition++) {
      const offsets = acks
        .filter((ack) => ack.partition === partition)
        .map((ack) => ack.offset)
        .sort((a, b) => a - b);
      expect(offsets).toEqual(offsets.map((_, i) => i));
    }
    // Within one call, records of one key keep their order.
    const stored = (await Promise.all([0, 1, 2].map((p) => one.admin.read('t', p, 0, 1000)))).flat();
    for (let c = 0; c < 40; c++) {
      for (let k = 0; k < 7; k++) {
        const seqs = stored
          .filter((r) => r.key === `k${k}` && text(r).startsWith(`${c}:`))
          .map((r) => Number(text(r).split(':')[1]));
        expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      }
    }
    expect(stored).toHaveLength(400);
  });

  it('stores a copy of the record: later changes to the caller buffer do not leak in', async () => {
    const transport = openPostgres({ defaultPartitions: 1 });
    const value = new TextEncoder().encode('original');
    const headers = { 'ce-type': 'OrderPlaced' };
    const publishing = transport.publish('orders', [{ key: 'a', headers, value, timestamp: 5 }]);
    value.fill(0);
    headers['ce-type'] = 'changed';
    await publishing;
    const [stored] = await transport.admin.read('orders', 0, 0, 1);
    expect(text(stored!)).toBe('original');
    expect(stored!.headers).toEqual({ 'ce-type': 'OrderPlaced' });
    expect(stored!.timestamp).toBe(5);
  });

  it('keeps headers as JSON text and values as bytea, readable with plain SQL', async () => {
    const transport = openPostgres({ defaultPartitions: 1 });
    const value = new Uint8Array([0, 1, 2, 255, 254]);
    await transport.publish('orders', [
      { key: 'order-1', headers: { 'ce-type': 'OrderPlaced', 'ce-id': 'e1', 'x-unicode': 'é€😀' }, value },
    ]);
    const rows = await sql<{ type: string; key: string; value: Buffer }>(
      `SELECT headers::jsonb ->> 'ce-type' AS type, key, value FROM "${transport.schema}".records`,
    );
    expect(rows).toHaveLength(1);
    expect(rows[0]!.type).toBe('OrderPlaced');
    expect(rows[0]!.key).toBe('order-1');
    expect([...rows[0]!.value]).toEqual([...value]);
    const [stored] = await transport.admin.read('orders', 0, 0, 1);
    expect(stored!.headers['x-unicode']).toBe('é€😀');
    expect([...stored!.value]).toEqual([...value]);
  });

  it('creates a topic on first publish with defaultPartitions, and createTopic conflicts on another count', async () => {
    const transport = openPostgres({ defaultPartitions: 3 });
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
    await expectTidingsError(transport.admin.createTopic('auto', { partitions: 4 }), ErrorCode.CONFLICT);
    expect(await transport.admin.listTopics()).toEqual(['auto', 'explicit']);
    await expectTidingsError(transport.admin.describeTopic('missing'), ErrorCode.NOT_FOUND);
    await expectTidingsError(transport.admin.createTopic('bad', { partitions: 0 }), ErrorCode.INVALID_CONFIG);
  });

  it('rejects a batch holding a record over maxRecordBytes, naming size and limit, and writes nothing', async () => {
    const transport = openPostgres({ maxRecordBytes: 100 });
    expect(transport.features.maxRecordBytes).toBe(100);
    await transport.admin.createTopic('t', { partitions: 1 });
    const fits = rec('k', 'x'.repeat(99)); // 1 (key) + 99 (value) = 100 bytes
    const tooBig = rec('k', 'x'.repeat(90), { headers: { h: 'y'.repeat(9) } }); // 1 + 90 + 1 + 9 = 101 bytes
    const error = await expectTidingsError(transport.publish('t', [fits, tooBig]), ErrorCode.EVENT_TOO_LARGE);
    expect(error.message).toContain('101 bytes');
    expect(error.message).toContain('100');
    expect((await transport.admin.describeTopic('t')).partitionOffsets[0]!.highOffset).toBe(0);
    await expect(transport.publish('t', [fits])).resolves.toEqual([{ topic: 't', partition: 0, offset: 0 }]);
  });

  it('rejects malformed records, and text PostgreSQL cannot store, before writing anything', async () => {
    const transport = openPostgres();
    const bad = { key: 'k', headers: {}, value: 'not bytes' } as unknown as OutgoingRecord;
    await expectTidingsError(transport.publish('t', [rec('k', 'ok'), bad]), ErrorCode.VALIDATION_FAILED);
    const nul = await expectTidingsError(
      transport.publish('t', [rec('k\u0000', 'v')]),
      ErrorCode.VALIDATION_FAILED,
    );
    expect(nul.message).toContain('U+0000');
    await expectTidingsError(
      transport.publish('t', [rec('k', 'v', { headers: { h: 'a\u0000b' } })]),
      ErrorCode.VALIDATION_FAILED,
    );
    await expectTidingsError(transport.admin.describeTopic('t'), ErrorCode.NOT_FOUND);
  });

  it('round trips a call larger than one statement carries, all or nothing', async () => {
    const transport = openPostgres({ defaultPartitions: 2, maxRecordBytes: 40 * 1024 * 1024 });
    const big = new Uint8Array(36 * 1024 * 1024).fill(7);
    const acks = await transport.publish('big', [
      { key: 'a', headers: {}, value: big },
      { key: 'b', headers: {}, value: big },
      rec('a', 'small'),
    ]);
    const same = partitionForKey('a', 2) === partitionForKey('b', 2);
    expect(acks.map((a) => a.offset)).toEqual(same ? [0, 1, 2] : [0, 0, 1]);
    const [first] = await transport.admin.read('big', acks[0]!.partition, 0, 1);
    expect(first!.value.byteLength).toBe(big.byteLength);
    expect(first!.value[123]).toBe(7);
    const [small] = await transport.admin.read('big', acks[2]!.partition, acks[2]!.offset, 1);
    expect(text(small!)).toBe('small');
  }, 60_000);

  it('trims the oldest records by retentionBytes and retentionMs in the background, keeping offsets', async () => {
    const clock = createTestClock();
    const transport = openPostgres({ clock });
    await transport.admin.createTopic('sized', { partitions: 1, retentionBytes: 30 });
    for (let i = 0; i < 10; i++) await transport.publish('sized', [rec('k', `value-${i}`)]); // 8 bytes each
    await runRetentionForTesting(transport);
    const sized = await transport.admin.describeTopic('sized');
    expect(sized.partitionOffsets[0]).toEqual({ partition: 0, lowOffset: 7, highOffset: 10 });
    expect((await transport.admin.read('sized', 0, 0, 100)).map((r) => r.offset)).toEqual([7, 8, 9]);

    await transport.admin.createTopic('timed', { partitions: 1, retentionMs: 1_000 });
    await transport.publish('timed', [rec('k', 'old-1'), rec('k', 'old-2')]);
    clock.advance(600);
    await transport.publish('timed', [rec('k', 'new')]);
    clock.advance(600);
    await runRetentionForTesting(transport);
    const timed = await transport.admin.describeTopic('timed');
    expect(timed.retentionMs).toBe(1_000);
    expect(timed.partitionOffsets[0]).toEqual({ partition: 0, lowOffset: 2, highOffset: 3 });
    const [next] = await transport.publish('timed', [rec('k', 'newer')]);
    expect(next!.offset).toBe(3);
    clock.advance(10_000);
    await runRetentionForTesting(transport);
    expect((await transport.admin.describeTopic('timed')).partitionOffsets[0]).toEqual({
      partition: 0,
      lowOffset: 4,
      highOffset: 4,
    });
  });

  it('read() pages through a partition and offsetForTime() finds the first record at or after a time', async () => {
    const clock = createTestClock(10_000);
    const transport = openPostgres({ clock });
    await transport.admin.createTopic('log', { partitions: 1 });
    for (let i = 0; i < 10; i++) {
      await transport.publish('log', [rec('k', `${i}`)]);
      clock.advance(100); // record i stored at 10_000 + 100 * i
    }
    const page = await transport.admin.read('log', 0, 4, 3);
    expect(page.map((r) => [r.offset, text(r), r.timestamp])).toEqual([
      [4, '4', 10_400],
      [5, '5', 10_500],
      [6, '6', 10_600],
    ]);
    expect(await transport.admin.read('log', 0, 8, 100)).toHaveLength(2);
    expect(await transport.admin.read('log', 0, 50, 10)).toEqual([]);
    expect(await transport.admin.offsetForTime('log', 0, 10_450)).toBe(5);
    expect(await transport.admin.offsetForTime('log', 0, 10_500)).toBe(5);
    expect(await transport.admin.offsetForTime('log', 0, 0)).toBe(0);
    expect(await transport.admin.offsetForTime('log', 0, 99_999)).toBe(10);
    await expectTidingsError(transport.admin.read('log', 0, 0, 0), ErrorCode.INVALID_CONFIG);
    await expectTidingsError(transport.admin.read('log', 0, 0, 1_000_000), ErrorCode.INVALID_CONFIG);
    await expectTidingsError(transport.admin.read('log', 1, 0, 10), ErrorCode.NOT_FOUND);
    await expectTidingsError(transport.admin.read('nope', 0, 0, 10), ErrorCode.NOT_FOUND);
  });
});

describe.skipIf(missing !== undefined)(suite('postgres transport: consumer groups'), () => {
  it('delivers every record to each of three groups', async () => {
    const transport = openPostgres();
    const subs = ['billing', 'shipping', 'audit'].map((group) =>
      transport.subscribe({ group, topics: ['orders'] }),
    );
    const consumers = subs.map((sub) => consume(sub));
    await transport.publish(
      'orders',
      Array.from({ length: 30 }, (_, i) => rec(`order-${i % 7}`, `${i}`)),
    );
    await until(() => consumers.forEach((c) => expect(c.received).toHaveLength(30)));
    for (const c of consumers) {
      expect(c.received.map((d) => Number(text(d))).sort((a, b) => a - b)).toEqual(
        Array.from({ length: 30 }, (_, i) => i),
      );
      expect(c.received.every((d) => d.deliveryCount === 1)).toBe(true);
    }
    expect(await transport.admin.listGroups()).toEqual(['audit', 'billing', 'shipping']);
  });

  it('splits the partitions between two members of a group, without duplicates', async () => {
    const transport = openPostgres({ defaultPartitions: 6 });
    const a = transport.subscribe({ group: 'g', topics: ['t'] });
    const b = transport.subscribe({ group: 'g', topics: ['t'] });
    const partitionsOf = (sub: Subscription) => sub.assignments().map((x) => x.partition);
    await until(() => {
      expect(partitionsOf(a)).toHaveLength(3);
      expect(partitionsOf(b)).toHaveLength(3);
    });
    expect([...partitionsOf(a), ...partitionsOf(b)].sort()).toEqual([0, 1, 2, 3, 4, 5]);

    const ca = consume(a);
    const cb = consume(b);
    await transport.publish(
      't',
      Array.from({ length: 120 }, (_, i) => rec(`k${i % 13}`, `${i}`)),
    );
    await until(() => expect(ca.received.length + cb.received.length).toBe(120));
    expect(ca.received.length).toBeGreaterThan(0);
    expect(cb.received.length).toBeGreaterThan(0);
    expect(ca.received.every((d) => partitionsOf(a).includes(d.partition))).toBe(true);
    expect(cb.received.every((d) => partitionsOf(b).includes(d.partition))).toBe(true);
    const all = [...ca.received, ...cb.received].map((d) => Number(text(d)));
    expect(new Set(all).size).toBe(120);

    const description = await transport.admin.describeGroup('g');
    expect(description.members.map((m) => m.memberId)).toEqual([a.memberId, b.memberId]);
    expect(description.members[0]!.assignments).toEqual(a.assignments());
  });

  it('keeps per-key order with no duplicates while a second member joins mid-stream', async () => {
    const transport = openPostgres({ defaultPartitions: 4 });
    const keys = Array.from({ length: 12 }, (_, i) => `customer-${i}`);
    const perKey = 40;
    const received: Array<{ key: string; seq: number }> = [];
    // Acks are deferred, so the first member holds un-acked deliveries when the rebalance happens.
    const handle = (d: Delivery) => {
      received.push({ key: d.key, seq: Number(text(d)) });
      setImmediate(() => d.ack());
    };
    const first = consume(transport.subscribe({ group: 'g', topics: ['t'], prefetch: 16 }), handle);
    let second: ReturnType<typeof consume> | undefined;
    for (let seq = 0; seq < perKey; seq++) {
      await transport.publish(
        't',
        keys.map((key) => rec(key, `${seq}`)),
      );
      if (seq === perKey / 2) {
        second = consume(transport.subscribe({ group: 'g', topics: ['t'], prefetch: 16 }), handle);
      }
      await turns(1);
    }
    await until(() => expect(received.length).toBeGreaterThanOrEqual(keys.length * perKey));
    await turns();
    expect(received).toHaveLength(keys.length * perKey); // no duplicates
    for (const [, seqs] of sequencesByKey(received)) expect(seqs).toEqual(seqs.map((_, i) => i));
    expect(first.received.length).toBeGreaterThan(0);
    await until(() => expect(second!.received.length).toBeGreaterThan(0));
    await until(async () => {
      const { lag } = await transport.admin.describeGroup('g');
      expect(lag.every((p) => p.lag === 0)).toBe(true);
    });
  });

  it('keeps per-key order with no duplicates while a member leaves mid-stream', async () => {
    const transport = openPostgres({ defaultPartitions: 4 });
    const keys = Array.from({ length: 12 }, (_, i) => `customer-${i}`);
    const perKey = 40;
    const received: Array<{ key: string; seq: number }> = [];
    let leave = false;
    const leavingSub = transport.subscribe({ group: 'g', topics: ['t'], startFrom: 'earliest' });
    const stayingSub = transport.subscribe({ group: 'g', topics: ['t'], startFrom: 'earliest' });
    await until(() => expect(leavingSub.assignments().length + stayingSub.assignments().length).toBe(4));
    const leaving = consume(leavingSub, (d) => {
      received.push({ key: d.key, seq: Number(text(d)) });
      d.ack();
      return leave ? 'stop' : undefined;
    });
    const staying = consume(stayingSub, (d) => {
      received.push({ key: d.key, seq: Number(text(d)) });
      setImmediate(() => d.ack());
    });
    for (let seq = 0; seq < perKey; seq++) {
      await transport.publish(
        't',
        keys.map((key) => rec(key, `${seq}`)),
      );
      if (seq === perKey / 2) leave = true;
      await turns(1);
    }
    await leaving.done; // left the loop, which closed the subscription
    await until(() => expect(received.length).toBeGreaterThanOrEqual(keys.length * perKey));
    await turns();
    expect(received).toHaveLength(keys.length * perKey);
    for (const [, seqs] of sequencesByKey(received)) expect(seqs).toEqual(seqs.map((_, i) => i));
    expect(staying.received.length).toBeGreaterThan(0);
    const { members } = await transport.admin.describeGroup('g');
    expect(members).toHaveLength(1);
    expect(members[0]!.assignments).toHaveLength(4);
  });

  it('waits for the previous owner to settle before handing a partition over, then resumes without repeats', async () => {
    const transport = openPostgres({ defaultPartitions: 2 });
    const k1 = keyIn(1, 2);
    const a = transport.subscribe({ group: 'g', topics: ['t'] });
    const ia = a[Symbol.asyncIterator]();
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
    await new Promise((resolve) => setTimeout(resolve, 300)); // a rebalance step or two: b must still wait
    expect(bGot).toBeUndefined(); // a still holds offset 0 of partition 1

    held.ack();
    await until(() => expect(bGot).toBeDefined());
    expect([bGot!.partition, bGot!.offset, bGot!.deliveryCount, text(bGot!)]).toEqual([1, 1, 1, '1']);
  });

  it('hands a partition over after rebalanceTimeoutMs if the previous owner never settles, fencing it', async () => {
    const clock = createTestClock();
    const transport = openPostgres({ defaultPartitions: 2, rebalanceTimeoutMs: 5_000, clock });
    const k1 = keyIn(1, 2);
    const a = transport.subscribe({ group: 'g', topics: ['t'] });
    const ia = a[Symbol.asyncIterator]();
    await transport.publish('t', [rec(k1, '0'), rec(k1, '1')]);
    const stuck = (await ia.next()).value as Delivery;

    const bSub = transport.subscribe({ group: 'g', topics: ['t'] });
    const b = consume(bSub, () => undefined);
    await until(() => {
      expect(bSub.assignments()).toEqual([{ topic: 't', partition: 1 }]);
      expect(a.assignments()).toEqual([{ topic: 't', partition: 0 }]); // a is handing partition 1 over
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    clock.advance(4_999);
    await turns();
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
    expect(clock.sleepers()).toBe(0); // no timer left behind
  });
});

describe.skipIf(missing !== undefined)(
  suite('postgres transport: settlement, offsets and delivery counts'),
  () => {
    it('holds at most prefetch un-acked deliveries per member', async () => {
      const transport = openPostgres({ defaultPartitions: 3 });
      const sub = transport.subscribe({ group: 'g', topics: ['t'], prefetch: 5 });
      const iterator = sub[Symbol.asyncIterator]();
      await transport.publish(
        't',
        Array.from({ length: 50 }, (_, i) => rec(`k${i}`, `${i}`)),
      );
      const held: Delivery[] = [];
      for (let i = 0; i < 5; i++) held.push((await iterator.next()).value as Delivery);
      let sixth: Delivery | undefined;
      const sixthPromise = iterator.next().then((r) => (sixth = r.value as Delivery));
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(sixth).toBeUndefined();

      held[3]!.nack(); // a nack frees a slot too
      await sixthPromise;
      expect(sixth).toBeDefined();
      held.push(sixth!);

      // Under concurrent processing with random ack timing the bound still holds.
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
      const transport = openPostgres();
      await transport.admin.createTopic('t', { partitions: 1 });
      const sub = transport.subscribe({ group: 'g', topics: ['t'] });
      const iterator = sub[Symbol.asyncIterator]();
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
      const transport = openPostgres();
      await transport.admin.createTopic('t', { partitions: 1 });
      const a = transport.subscribe({ group: 'g', topics: ['t'] });
      const ia = a[Symbol.asyncIterator]();
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
      const transport = openPostgres({ clock });
      await transport.admin.createTopic('t', { partitions: 1 });
      const sub = transport.subscribe({ group: 'g', topics: ['t'] });
      const iterator = sub[Symbol.asyncIterator]();
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
      await turns();
      expect(redelivered).toBeUndefined();
      clock.advance(1);
      await until(() => expect(redelivered).toBeDefined());
      expect([redelivered!.offset, redelivered!.deliveryCount, text(redelivered!)]).toEqual([0, 2, '0']);

      redelivered!.nack(); // no delay: straight back
      const third = (await iterator.next()).value as Delivery;
      expect([third.offset, third.deliveryCount]).toEqual([0, 3]);
      third.ack();
      expect((await transport.admin.describeGroup('g')).lag[0]).toMatchObject({ committedOffset: 2, lag: 0 });
      expect(() => third.nack({ delayMs: -1 })).toThrow(/delayMs/);
    });

    it('keeps a delayed nack waiting across a handover, then gives it to the new owner', async () => {
      const clock = createTestClock();
      const transport = openPostgres({ clock });
      await transport.admin.createTopic('t', { partitions: 1 });
      const a = transport.subscribe({ group: 'g', topics: ['t'] });
      const ia = a[Symbol.asyncIterator]();
      await transport.publish('t', [rec('k', '0'), rec('k', '1')]);
      ((await ia.next()).value as Delivery).nack({ delayMs: 500 });
      ((await ia.next()).value as Delivery).ack();
      await a.close();

      // b starts at the committed offset (0, held back by the nack): offset 1 is read again at once, offset 0 only
      // once its delay has passed (loaded from the database: b never had it in memory).
      const b = consume(transport.subscribe({ group: 'g', topics: ['t'] }));
      await until(() => expect(b.received).toHaveLength(1));
      await turns();
      expect(b.received.map((d) => [d.offset, d.deliveryCount])).toEqual([[1, 2]]);
      clock.advance(500);
      await until(() => expect(b.received).toHaveLength(2));
      expect([b.received[1]!.offset, b.received[1]!.deliveryCount, text(b.received[1]!)]).toEqual([
        0,
        2,
        '0',
      ]);
      await until(async () =>
        expect((await transport.admin.describeGroup('g')).lag[0]).toMatchObject({
          committedOffset: 2,
          lag: 0,
        }),
      );
    });

    it("starts a new group at 'latest', 'earliest', an offset or a time", async () => {
      const clock = createTestClock(50_000);
      const transport = openPostgres({ clock });
      await transport.admin.createTopic('t', { partitions: 1 });
      for (let i = 0; i < 6; i++) {
        await transport.publish('t', [rec('k', `${i}`)]);
        clock.advance(1_000); // record i at 50_000 + 1000 i
      }
      const groups = {
        latest: consume(transport.subscribe({ group: 'latest', topics: ['t'] })),
        earliest: consume(transport.subscribe({ group: 'earliest', topics: ['t'], startFrom: 'earliest' })),
        offset: consume(transport.subscribe({ group: 'offset', topics: ['t'], startFrom: { offset: 4 } })),
        clamped: consume(transport.subscribe({ group: 'clamped', topics: ['t'], startFrom: { offset: 99 } })),
        time: consume(
          transport.subscribe({ group: 'time', topics: ['t'], startFrom: { timestamp: 52_500 } }),
        ),
      };
      await transport.publish('t', [rec('k', '6')]); // waits for the joins above: 'latest' includes it
      const offsets = (c: { received: Delivery[] }) => c.received.map((d) => d.offset);
      await until(() => {
        expect(offsets(groups.latest)).toEqual([6]);
        expect(offsets(groups.earliest)).toEqual([0, 1, 2, 3, 4, 5, 6]);
        expect(offsets(groups.offset)).toEqual([4, 5, 6]);
        expect(offsets(groups.clamped)).toEqual([6]);
        expect(offsets(groups.time)).toEqual([3, 4, 5, 6]);
      });
    });

    it('resets offsets of a group with no live member, and refuses while one is live', async () => {
      const transport = openPostgres();
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
      expect(refused.message).toContain(first.memberId);

      await first.close();
      await c1.done;
      await transport.admin.resetOffsets('g', 't', 'earliest');
      expect((await transport.admin.describeGroup('g')).lag.map((p) => p.committedOffset)).toEqual([0, 0]);
      const c2 = consume(transport.subscribe({ group: 'g', topics: ['t'] }));
      await until(() => expect(c2.received).toHaveLength(10));
      expect(c2.received.every((d) => d.deliveryCount === 1)).toBe(true);

      await expectTidingsError(transport.admin.resetOffsets('g', 'missing', 'earliest'), ErrorCode.NOT_FOUND);
    });

    it('reports lag per partition and it reaches 0 once the group has acked everything', async () => {
      const transport = openPostgres();
      await transport.admin.createTopic('t', { partitions: 2 });
      const sub = transport.subscribe({ group: 'g', topics: ['t'], startFrom: 'earliest' });
      const acks = await transport.publish(
        't',
        Array.from({ length: 10 }, (_, i) => rec(`k${i}`, `${i}`)),
      );
      await until(() => expect(sub.assignments()).toHaveLength(2));
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
  },
);

describe.skipIf(missing !== undefined)(suite('postgres transport: subscription lifecycle'), () => {
  it('throws when a subscription is iterated twice', async () => {
    const transport = openPostgres();
    const sub = transport.subscribe({ group: 'g', topics: ['t'] });
    sub[Symbol.asyncIterator]();
    expect(
      isTidingsError(
        syncError(() => sub[Symbol.asyncIterator]()),
        ErrorCode.INVALID_CONFIG,
      ),
    ).toBe(true);
    await sub.close();
  });

  it('closes on abort: a waiting iterator ends, closed resolves and the member leaves the group', async () => {
    const transport = openPostgres();
    const controller = new AbortController();
    const sub = transport.subscribe({ group: 'g', topics: ['t'], signal: controller.signal });
    const c = consume(sub);
    await until(() => expect(sub.assignments()).toHaveLength(4));
    controller.abort();
    await c.done;
    await expect(sub.closed).resolves.toBeUndefined();
    expect(sub.assignments()).toEqual([]);
    expect((await transport.admin.describeGroup('g')).members).toEqual([]);

    const aborted = transport.subscribe({ group: 'late', topics: ['t'], signal: AbortSignal.abort() });
    await expect(aborted.closed).resolves.toBeUndefined();
    expect(await transport.admin.listGroups()).toEqual(['g']);
  });

  it('closes idempotently and via await using', async () => {
    const transport = openPostgres();
    {
      await using sub = transport.subscribe({ group: 'g', topics: ['t'] });
      await until(() => expect(sub.assignments()).toHaveLength(4));
    }
    expect((await transport.admin.describeGroup('g')).members).toEqual([]);
    const sub = transport.subscribe({ group: 'g', topics: ['t'] });
    await Promise.all([sub.close(), sub.close()]);
    await expect(sub.closed).resolves.toBeUndefined();
  });

  it('transport close ends waiting iterators and rejects later calls with CLOSED', async () => {
    const transport = openPostgres();
    const subs = [
      transport.subscribe({ group: 'a', topics: ['t'] }),
      transport.subscribe({ group: 'b', topics: ['t'] }),
    ];
    const consumers = subs.map((sub) => consume(sub));
    await turns();
    await transport.close();
    await Promise.all(consumers.map((c) => c.done));
    await Promise.all(subs.map((sub) => expect(sub.closed).resolves.toBeUndefined()));
    await expectTidingsError(transport.publish('t', [rec('k', 'v')]), ErrorCode.CLOSED);
    await expectTidingsError(transport.admin.listTopics(), ErrorCode.CLOSED);
    expect(
      isTidingsError(
        syncError(() => transport.subscribe({ group: 'c', topics: ['t'] })),
        ErrorCode.CLOSED,
      ),
    ).toBe(true);
    await expect(transport.close()).resolves.toBeUndefined();
  });

  it('validates options at construction and subscribe', () => {
    const invalid = (call: () => unknown) =>
      expect(isTidingsError(syncError(call), ErrorCode.INVALID_CONFIG)).toBe(true);
    const url = 'postgresql://postgres@127.0.0.1:5432/test';
    invalid(() => createPostgresTransport({ url, defaultPartitions: 0 }));
    invalid(() => createPostgresTransport({ url, maxRecordBytes: 1.5 }));
    invalid(() => createPostgresTransport({ url, rebalanceTimeoutMs: -1 }));
    invalid(() => createPostgresTransport({ url, defaultPartition: 2 } as PostgresTransportOptions));
    invalid(() => createPostgresTransport({ url, leaseMs: 50 }));
    invalid(() => createPostgresTransport({ url, leaseMs: 1_000, heartbeatIntervalMs: 600 }));
    invalid(() => createPostgresTransport({ url, schema: 'Bad-Name' }));
    invalid(() => createPostgresTransport({ url, poolSize: 1 }));
    invalid(() => createPostgresTransport({ url: 'mysql://x' }));
    const secret = syncError(() => createPostgresTransport({ url: 'http://u:hunter2@h/db' })) as Error;
    expect(secret.message).not.toContain('hunter2');
    const transport = openPostgres();
    invalid(() => transport.subscribe({ group: 'g', topics: ['t'], prefetch: 0 }));
    invalid(() => transport.subscribe({ group: 'g', topics: ['t'], prefetch: 100_001 }));
    invalid(() => transport.subscribe({ group: '', topics: ['t'] }));
    invalid(() => transport.subscribe({ group: 'g', topics: [] }));
    invalid(() => transport.subscribe({ group: 'g', topics: ['t'], startFrom: { offset: -1 } }));
    expect(transport.name).toBe('postgres');
    expect(transport.url).toBe(url);
    expect(transport.stores).toBeUndefined();
    expect(transport.features).toEqual({
      persistent: true,
      consumerGroups: true,
      perKeyOrder: true,
      replayByOffset: true,
      replayByTime: true,
      nativeDelay: false,
      maxRecordBytes: 8 * 1024 * 1024,
    });
  });
});
