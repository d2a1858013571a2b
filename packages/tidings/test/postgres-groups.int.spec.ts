import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '../src/core/errors.js';
import type { Delivery } from '../src/core/transport.js';
import { pauseHeartbeatsForTesting } from '../src/postgres/transport.js';
import {
  consume,
  expectTidingsError,
  keyIn,
  rec,
  sequencesByKey,
  text,
  turns,
  until,
} from './log-fixtures/helpers.js';
import { brokerMissing, cleanupPostgres, newSchema, openPostgres, sql } from './postgres-fixtures/helpers.js';

// Two transports on one schema behave as two processes (or hosts) would: separate pools that see each other only
// through the database and its notifications.

const missing = await brokerMissing();
const suite = (name: string) => (missing === undefined ? name : `${name} — skipped: ${missing}`);

afterEach(cleanupPostgres);

describe.skipIf(missing !== undefined)(suite('postgres transport: consumer groups across transports'), () => {
  it('splits the partitions between members of two transports and delivers records published by either', async () => {
    const schema = newSchema();
    const one = openPostgres({ schema });
    const two = openPostgres({ schema });
    await one.admin.createTopic('t', { partitions: 4 });
    const a = one.subscribe({ group: 'g', topics: ['t'] });
    await until(() => expect(a.assignments()).toHaveLength(4));
    const b = two.subscribe({ group: 'g', topics: ['t'] });
    await until(() => {
      expect(a.assignments()).toHaveLength(2);
      expect(b.assignments()).toHaveLength(2);
    });
    expect(a.assignments()).toEqual([
      { topic: 't', partition: 0 },
      { topic: 't', partition: 2 },
    ]); // round-robin in join order

    const ca = consume(a);
    const cb = consume(b);
    await until(async () => {
      const { members } = await two.admin.describeGroup('g');
      expect(members.map((m) => m.assignments.length)).toEqual([2, 2]);
    });
    await one.publish(
      't',
      Array.from({ length: 50 }, (_, i) => rec(`k${i % 7}`, `${i}`)),
    );
    await two.publish(
      't',
      Array.from({ length: 50 }, (_, i) => rec(`k${i % 7}`, `${50 + i}`)),
    );
    await until(() => expect(ca.received.length + cb.received.length).toBe(100));
    const partitionsOf = (sub: typeof a) => sub.assignments().map((x) => x.partition);
    expect(ca.received.every((d) => partitionsOf(a).includes(d.partition))).toBe(true);
    expect(cb.received.every((d) => partitionsOf(b).includes(d.partition))).toBe(true);
    expect(new Set([...ca.received, ...cb.received].map((d) => text(d))).size).toBe(100);

    const seen = await two.admin.describeGroup('g');
    expect(seen.members.map((m) => m.memberId)).toEqual([a.memberId, b.memberId]);
    await until(async () =>
      expect((await one.admin.describeGroup('g')).lag.every((p) => p.lag === 0)).toBe(true),
    );
  });

  it('hands every partition to the remaining member at once when the other transport closes, in key order', async () => {
    const schema = newSchema();
    const one = openPostgres({ schema, defaultPartitions: 4 });
    const two = openPostgres({ schema, defaultPartitions: 4 });
    const received: Array<{ key: string; seq: number }> = [];
    const handle = (d: Delivery) => {
      received.push({ key: d.key, seq: Number(text(d)) });
      setImmediate(() => d.ack());
    };
    await one.admin.createTopic('t', { partitions: 4 });
    const a = one.subscribe({ group: 'g', topics: ['t'], startFrom: 'earliest' });
    const b = two.subscribe({ group: 'g', topics: ['t'], startFrom: 'earliest' });
    consume(a, handle);
    consume(b, handle);
    await until(() => {
      expect(a.assignments()).toHaveLength(2);
      expect(b.assignments()).toHaveLength(2);
    });
    const keys = Array.from({ length: 8 }, (_, i) => `customer-${i}`);
    for (let seq = 0; seq < 20; seq++) {
      await two.publish(
        't',
        keys.map((key) => rec(key, `${seq}`)),
      );
    }
    await until(() => expect(received.length).toBeGreaterThanOrEqual(keys.length * 10));
    await one.close(); // releases its partitions with their committed offsets; no lease to wait for
    await until(() => expect(b.assignments()).toHaveLength(4), 5_000);
    for (let seq = 20; seq < 40; seq++) {
      await two.publish(
        't',
        keys.map((key) => rec(key, `${seq}`)),
      );
    }
    await until(() => expect(received.length).toBeGreaterThanOrEqual(keys.length * 40));
    await turns();
    // a settled what it received before closing, so nothing is delivered twice, and every key stays in order.
    expect(received).toHaveLength(keys.length * 40);
    for (const [, seqs] of sequencesByKey(received)) expect(seqs).toEqual(seqs.map((_, i) => i));
  });

  it('takes over from a member that stops heartbeating after its lease, and fences the stale member', async () => {
    const schema = newSchema();
    const stale = openPostgres({ schema, leaseMs: 1_000, defaultPartitions: 2 });
    const fresh = openPostgres({ schema, leaseMs: 1_000, defaultPartitions: 2 });
    const k0 = keyIn(0, 2);
    const k1 = keyIn(1, 2);
    const a = stale.subscribe({ group: 'g', topics: ['t'], startFrom: 'earliest' });
    await until(() => expect(a.assignments()).toHaveLength(2));
    await stale.publish('t', [rec(k0, 'a0'), rec(k0, 'a1'), rec(k1, 'b0'), rec(k1, 'b1')]);
    const ia = a[Symbol.asyncIterator]();
    const held = (await ia.next()).value as Delivery; // handed out, never settled in time

    pauseHeartbeatsForTesting(stale, true); // as a hung process: alive, but no longer renewing its lease
    const b = fresh.subscribe({ group: 'g', topics: ['t'] });
    const cb = consume(b, () => undefined);
    await until(() => expect(b.assignments()).toHaveLength(1));
    const refused = await expectTidingsError(
      fresh.admin.resetOffsets('g', 't', 'earliest'),
      ErrorCode.CONFLICT,
    );
    expect(refused.message).toContain(a.memberId);
    expect(refused.message).toContain(b.memberId);

    // Once a's lease has passed, b owns both partitions and gets every record, the held one as a redelivery.
    await until(() => expect(cb.received).toHaveLength(4), 10_000);
    expect(b.assignments()).toHaveLength(2);
    const redelivered = cb.received.find((d) => d.partition === held.partition && d.offset === held.offset)!;
    expect(redelivered.deliveryCount).toBe(2);
    // Records a had read ahead (its page) count as handed out once, as a broker counts prefetched messages.
    expect(cb.received.every((d) => d.deliveryCount === 1 || d.deliveryCount === 2)).toBe(true);

    // a's own lease lapsed too: it hands out nothing more, although its partitions have records it never delivered.
    let aGot: IteratorResult<Delivery, undefined> | undefined;
    void ia.next().then((result) => (aGot = result));
    await fresh.publish('t', [rec(k0, 'a2'), rec(k1, 'b2')]);
    await until(() => expect(cb.received).toHaveLength(6));
    await turns();
    expect(aGot).toBeUndefined();

    // a's late ack is fenced: the committed offset does not move past the record b still holds.
    held.ack();
    await until(async () => {
      const { lag } = await stale.admin.describeGroup('g');
      expect(lag.find((p) => p.partition === held.partition)!.committedOffset).toBe(0);
    });
    for (const d of cb.received) d.ack();
    await until(async () => {
      const { lag, members } = await fresh.admin.describeGroup('g');
      expect(lag.map((p) => [p.partition, p.committedOffset, p.lag])).toEqual([
        [0, 3, 0],
        [1, 3, 0],
      ]);
      expect(members.map((m) => m.memberId)).toEqual([b.memberId]); // a is not live any more
    });

    // A reset is allowed once no member is live: a's lease has passed and b leaves.
    await b.close();
    await fresh.admin.resetOffsets('g', 't', { offset: 1 });
    expect((await fresh.admin.describeGroup('g')).lag.map((p) => p.committedOffset)).toEqual([1, 1]);
  });

  it('resumes from the committed offsets of a group after every member left, in a new transport', async () => {
    const schema = newSchema();
    const first = openPostgres({ schema, defaultPartitions: 1 });
    await first.publish(
      't',
      Array.from({ length: 10 }, (_, i) => rec('k', `${i}`)),
    );
    const sub = first.subscribe({ group: 'g', topics: ['t'], startFrom: 'earliest' });
    const c1 = consume(sub, (d) => {
      if (d.offset < 6) d.ack();
      return d.offset === 7 ? 'stop' : undefined;
    });
    await c1.done;
    await first.close();

    const second = openPostgres({ schema });
    const c2 = consume(second.subscribe({ group: 'g', topics: ['t'], startFrom: 'latest' }));
    await until(() => expect(c2.received).toHaveLength(4));
    expect(c2.received.map((d) => [d.offset, d.deliveryCount])).toEqual([
      [6, 2],
      [7, 2],
      [8, 1],
      [9, 1],
    ]);
  });

  it('wakes a consumer of another transport through NOTIFY, well before the poll interval', async () => {
    const schema = newSchema();
    const producer = openPostgres({ schema });
    const consumer = openPostgres({ schema, pollIntervalMs: 60_000 });
    await producer.admin.createTopic('t', { partitions: 1 });
    const sub = consumer.subscribe({ group: 'g', topics: ['t'] });
    const c = consume(sub);
    await until(() => expect(sub.assignments()).toHaveLength(1));
    await until(async () => {
      // The LISTEN connection is up once the server lists a session of ours waiting for notifications.
      const rows = await sql<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE 'LISTEN %tidings:${schema}%'`,
      );
      expect(rows[0]!.n).toBeGreaterThan(0);
    });
    for (let i = 0; i < 3; i++) {
      await producer.publish('t', [rec('k', `${i}`)]);
      await until(() => expect(c.received).toHaveLength(i + 1), 5_000);
    }
  });
});
