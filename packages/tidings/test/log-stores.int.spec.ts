import { createRequire } from 'node:module';
import * as path from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCode, isTidingsError } from '../src/core/errors.js';
import type { ParkedEvent } from '../src/core/parking.js';
import { inboxMaxEntriesPerGroup, inboxTtlMs, maxParkedEventsPerKey } from '../src/log/index.js';
import {
  cleanup,
  createTestClock,
  expectTidingsError,
  openLog,
  tempDir,
  until,
} from './log-fixtures/helpers.js';

afterEach(cleanup);

const Database = createRequire(import.meta.url)('better-sqlite3') as typeof BetterSqlite3;

function inboxRows(dataDir: string, group: string): string[] {
  const db = new Database(path.join(dataDir, 'log.db'), { readonly: true });
  try {
    return db
      .prepare('SELECT event_id FROM inbox WHERE group_name = ? ORDER BY seq')
      .pluck()
      .all(group) as string[];
  } finally {
    db.close();
  }
}

const event = (offset: number, value = `v${offset}`): ParkedEvent => ({
  partition: 1,
  offset,
  headers: { 'ce-id': `id-${offset}` },
  value: new TextEncoder().encode(value),
  timestamp: 1_000 + offset,
  parkedAt: 2_000 + offset,
});

describe('log transport: durable stores', () => {
  it('parks a key with the events behind it, in order, durably and visibly to other transports', async () => {
    const dataDir = tempDir();
    const clock = createTestClock(5_000);
    const one = openLog({ dataDir, clock });
    const { parking } = one.stores;
    const ref = { group: 'billing', topic: 'orders', key: 'order-7' };
    expect(parking.isParked(ref)).toBe(false);
    await parking.append(ref, event(3), { error: 'Error: boom', attempts: 3 });
    await parking.append(ref, event(4));
    await parking.append({ ...ref, key: 'order-8' }, event(9), { error: 'Error: other', attempts: 1 });
    await parking.append({ ...ref, group: 'audit' }, event(5), { error: 'Error: audit', attempts: 1 });
    expect(parking.isParked(ref)).toBe(true);
    await parking.recordFailure(ref, { error: 'Error: boom again', attempts: 4 });

    const two = openLog({ dataDir });
    const parked = await two.stores.parking.get(ref);
    expect(parked).toEqual({
      ...ref,
      error: 'Error: boom again',
      attempts: 4,
      events: [event(3), event(4)].map((e) => ({ ...e, headers: e.headers })),
    });
    expect((await two.stores.parking.list('billing')).map((k) => k.key)).toEqual(['order-7', 'order-8']);
    expect((await two.stores.parking.list()).map((k) => `${k.group}/${k.key}`)).toEqual([
      'billing/order-7',
      'billing/order-8',
      'audit/order-7',
    ]);

    await two.stores.parking.shift(ref);
    expect((await one.stores.parking.get(ref))!.events.map((e) => e.offset)).toEqual([4]);
    await one.stores.parking.shift(ref);
    expect(one.stores.parking.isParked(ref)).toBe(false);
    expect(await one.stores.parking.get(ref)).toBeUndefined();
    await one.stores.parking.shift(ref); // nothing left: a no-op

    await one.close();
    const reopened = openLog({ dataDir });
    expect((await reopened.stores.parking.list()).map((k) => `${k.group}/${k.key}`)).toEqual([
      'billing/order-8',
      'audit/order-7',
    ]);
  });

  it(`refuses more than ${maxParkedEventsPerKey} events behind one parked key with a retryable CONFLICT`, async () => {
    const { parking } = openLog().stores;
    const ref = { group: 'g', topic: 't', key: 'k' };
    await Promise.all(
      Array.from({ length: maxParkedEventsPerKey }, (_, i) => Promise.resolve(parking.append(ref, event(i)))),
    );
    const error = await expectTidingsError(
      Promise.resolve(parking.append(ref, event(99_999))),
      ErrorCode.CONFLICT,
    );
    expect(error.retryable).toBe(true);
    expect((await parking.get(ref))!.events).toHaveLength(maxParkedEventsPerKey);
  });

  it('remembers inbox ids per group for the TTL, across reopening, and bounds them per group', async () => {
    const dataDir = tempDir();
    const clock = createTestClock(1_000_000);
    const one = openLog({ dataDir, clock });
    const { inbox } = one.stores;
    expect(inbox.has('billing', 'evt-1')).toBe(false);
    await inbox.add('billing', 'evt-1');
    await inbox.add('billing', 'evt-1'); // twice is harmless
    expect(inbox.has('billing', 'evt-1')).toBe(true);
    expect(inbox.has('shipping', 'evt-1')).toBe(false);
    await one.close();

    const two = openLog({ dataDir, clock, retentionIntervalMs: 10 });
    expect(two.stores.inbox.has('billing', 'evt-1')).toBe(true);
    clock.advance(inboxTtlMs + 1);
    expect(two.stores.inbox.has('billing', 'evt-1')).toBe(false); // expired at once for `has`...
    await two.stores.inbox.add('billing', 'evt-2');
    // ...and deleted by the retention pass; the newest inboxMaxEntriesPerGroup ids of each group are kept.
    expect(inboxMaxEntriesPerGroup).toBe(100_000);
    await until(() => expect(inboxRows(dataDir, 'billing')).toEqual(['evt-2']));
    expect(two.stores.inbox.has('billing', 'evt-2')).toBe(true);
  });

  it('files operator requests, lists them pending oldest first, and keeps the first outcome', async () => {
    const dataDir = tempDir();
    const cli = openLog({ dataDir });
    const consumer = openLog({ dataDir });
    const first = await cli.stores.requests.add({
      group: 'billing',
      topic: 'orders',
      key: 'o-1',
      kind: 'retry-parked',
    });
    const second = await cli.stores.requests.add({
      group: 'billing',
      topic: 'orders.dlq',
      key: 'o-2',
      kind: 'retry-dead-letter',
      deadLetterId: '0:17',
    });
    await cli.stores.requests.add({ group: 'audit', topic: 'orders', key: 'o-3', kind: 'skip-parked' });

    const pending = await consumer.stores.requests.pending('billing', 10);
    expect(pending.map((r) => [r.id, r.kind, r.key])).toEqual([
      [first, 'retry-parked', 'o-1'],
      [second, 'retry-dead-letter', 'o-2'],
    ]);
    expect(pending[1]).toMatchObject({ deadLetterId: '0:17', topic: 'orders.dlq' });
    expect(await consumer.stores.requests.pending('billing', 1)).toHaveLength(1);

    await consumer.stores.requests.complete(first, { ok: true, message: 'Retried 2 events of key o-1.' });
    await consumer.stores.requests.complete(first, { ok: false, message: 'second outcome, ignored' });
    expect(await cli.stores.requests.get(first)).toMatchObject({
      id: first,
      outcome: { ok: true, message: 'Retried 2 events of key o-1.' },
    });
    expect((await cli.stores.requests.get(second))!.outcome).toBeUndefined();
    expect(await cli.stores.requests.get('no-such-id')).toBeUndefined();
    expect((await cli.stores.requests.pending('billing', 10)).map((r) => r.id)).toEqual([second]);
    let invalid: unknown;
    try {
      await cli.stores.requests.add({ group: 'g', topic: 't', key: 'k', kind: 'explode' } as never);
    } catch (error) {
      invalid = error;
    }
    expect(isTidingsError(invalid, ErrorCode.INVALID_CONFIG)).toBe(true);
  });
});
