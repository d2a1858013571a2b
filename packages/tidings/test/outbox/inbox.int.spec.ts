import type { Database as SqliteDatabase } from 'better-sqlite3';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { createBus, createMemoryTransport, silentLogger, type Bus, type Envelope } from '../../src/index.js';
import { createInbox, createOutbox, fromKysely, postgres } from '../../src/outbox/index.js';
import { createFakeClock, waitUntil } from '../../src/testing/index.js';
import { OrderPlaced, createOrdersTable, openTestDb, postgresUrl, type TestDb } from './helpers.js';

// The transactional inbox on the real servers, the synchronous SQLite forms, and the Kysely adapter on PostgreSQL.

const opened: TestDb[] = [];
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  for (const db of opened.splice(0)) await db.close();
});

async function open(dialect: 'postgres' | 'mysql' | 'sqlite') {
  const db = await openTestDb(dialect);
  opened.push(db);
  return db;
}

const envelope = (id: string): Envelope => ({
  id,
  source: 'tidings://test',
  type: 'OrderPlaced',
  specversion: '1.0',
  data: { orderId: 'o-1', n: 1 },
});

const count = async (db: TestDb, table: string) =>
  Number((await db.query(`SELECT COUNT(*) AS n FROM ${table}`))[0]!['n']);

describe.each(['postgres', 'mysql', 'sqlite'] as const)('transactional inbox on %s', (dialect) => {
  it('applies an event once: a redelivery returns false without calling fn', async () => {
    const db = await open(dialect);
    const orders = await createOrdersTable(db);
    const inbox = createInbox({ database: db.database, table: db.table('inbox') });
    cleanups.push(() => inbox.close());
    await inbox.setup();
    const ctx = { envelope: envelope('e-1'), group: 'billing' };
    const apply = (tx: unknown, q: (sql: string, params?: unknown[]) => Promise<unknown[]>) =>
      inbox.handle(tx, ctx, async () => {
        await q(`INSERT INTO ${orders} (id, n) VALUES (?, ?)`, ['o-1', 1]);
      });
    expect(await db.tx(apply)).toBe(true);
    expect(await db.tx(apply)).toBe(false);
    expect(await count(db, orders)).toBe(1);
    // Another group handles the same event on its own.
    expect(
      await db.tx((tx) => inbox.handle(tx, { envelope: envelope('e-1'), group: 'audit' }, () => undefined)),
    ).toBe(true);
  });

  it('forgets the record when the transaction rolls back, so the retry applies the event', async () => {
    const db = await open(dialect);
    const orders = await createOrdersTable(db);
    const inbox = createInbox({ database: db.database, table: db.table('inbox') });
    cleanups.push(() => inbox.close());
    await inbox.setup();
    const failed = await db
      .tx((tx, q) =>
        inbox.handle(tx, envelope('e-2'), async () => {
          await q(`INSERT INTO ${orders} (id, n) VALUES (?, ?)`, ['o-2', 1]);
          throw new Error('downstream failed');
        }),
      )
      .catch((error: unknown) => error);
    expect(failed).toEqual(new Error('downstream failed'));
    expect(await count(db, orders)).toBe(0);
    expect(
      await db.tx((tx, q) =>
        inbox.handle(tx, envelope('e-2'), async () => {
          await q(`INSERT INTO ${orders} (id, n) VALUES (?, ?)`, ['o-2', 1]);
        }),
      ),
    ).toBe(true);
    expect(await count(db, orders)).toBe(1);
  });

  it('deletes records older than the TTL, and only those', async () => {
    const db = await open(dialect);
    const clock = createFakeClock();
    const inbox = createInbox({ database: db.database, table: db.table('inbox'), ttlMs: 60_000, clock });
    cleanups.push(() => inbox.close());
    await inbox.setup();
    await db.tx((tx) => inbox.handle(tx, envelope('old'), () => undefined));
    await clock.advance(45_000);
    await db.tx((tx) => inbox.handle(tx, envelope('new'), () => undefined));
    await clock.advance(30_000);
    expect(await inbox.purgeExpired()).toBe(1);
    expect(await db.tx((tx) => inbox.handle(tx, envelope('new'), () => undefined))).toBe(false);
    expect(await db.tx((tx) => inbox.handle(tx, envelope('old'), () => undefined))).toBe(true);
  });

  it('dedupes a consumer end to end: outbox, relay, bus, inbox.transaction', async () => {
    const db = await open(dialect);
    const orders = await createOrdersTable(db);
    const outbox = createOutbox({ database: db.database, table: db.table('outbox') });
    await outbox.setup();
    const inbox = createInbox({ database: db.database, table: db.table('inbox') });
    cleanups.push(() => inbox.close());
    await inbox.setup();
    const transport = createMemoryTransport();
    const bus: Bus = createBus({ service: 's', transport, logger: silentLogger });
    cleanups.push(() => bus.close());
    let handled = 0;
    bus.handle('projector', [OrderPlaced], async ({ data }, ctx) => {
      handled++;
      await inbox.transaction(ctx, async (tx) => {
        // tx is the driver's own object (pg client, mysql2 connection, better-sqlite3 database).
        await runOn(db, tx, `INSERT INTO ${orders} (id, n) VALUES (?, ?)`, [data.orderId, data.n]);
      });
    });
    const { id } = await db.tx((tx) => outbox.enqueue(tx, OrderPlaced, { orderId: 'o-1', n: 7 }));
    bus.startRelay(outbox);
    await waitUntil(async () => (await count(db, orders)) === 1);
    // The same event again, as a relay re-publishes after a crash: same id, no second effect.
    const again = createOutbox({ database: db.database, table: db.table('outbox') });
    await db.tx((tx) => again.enqueue(tx, OrderPlaced, { orderId: 'o-1', n: 7 }, { id }));
    await waitUntil(() => handled === 2);
    expect(await count(db, orders)).toBe(1);
  });
});

describe('the inbox as the bus inbox store', () => {
  it('skips events the group already handled, across consumers on one table', async () => {
    const db = await open('postgres');
    const inbox = createInbox({ database: db.database, table: db.table('inbox') });
    cleanups.push(() => inbox.close());
    await inbox.setup();
    const store = inbox.store();
    expect(await store.has('g', 'e-1')).toBe(false);
    await store.add('g', 'e-1');
    await store.add('g', 'e-1'); // recording twice is harmless
    expect(await store.has('g', 'e-1')).toBe(true);
    expect(await store.has('other', 'e-1')).toBe(false);

    const transport = createMemoryTransport();
    const bus = createBus({ service: 's', transport, logger: silentLogger });
    cleanups.push(() => bus.close());
    const handled: number[] = [];
    const consumer = bus.handle('g', [OrderPlaced], ({ data }) => void handled.push(data.n), {
      inbox: store,
    });
    const first = await bus.publish(OrderPlaced, { orderId: 'o-1', n: 1 }, { id: 'e-1' });
    const second = await bus.publish(OrderPlaced, { orderId: 'o-1', n: 2 }, { id: 'e-2' });
    await consumer.waitFor([first, second]);
    expect(handled).toEqual([2]);
    expect(consumer.stats().duplicates).toBe(1);
  });
});

/** Runs a statement on the driver object `inbox.transaction` hands out. */
async function runOn(db: TestDb, tx: unknown, sql: string, params: unknown[]): Promise<void> {
  if (db.dialect === 'postgres') {
    let n = 0;
    await (tx as pg.PoolClient).query(
      sql.replace(/\?/g, () => `$${++n}`),
      params,
    );
  } else if (db.dialect === 'mysql') {
    await (tx as { query(sql: string, params: unknown[]): Promise<unknown> }).query(sql, params);
  } else {
    (tx as SqliteDatabase).prepare(sql).run(...params);
  }
}

describe('SQLite inside better-sqlite3 transactions', () => {
  it('enqueueSync and handleSync run inside db.transaction(), committing or rolling back with it', async () => {
    const db = await open('sqlite');
    const orders = await createOrdersTable(db);
    const outbox = createOutbox({ database: db.database });
    await outbox.setup();
    const inbox = createInbox({ database: db.database });
    await inbox.setup();
    cleanups.push(() => inbox.close());
    const raw = (await db.tx((tx) => Promise.resolve(tx))) as SqliteDatabase;
    const placeOrder = raw.transaction((id: string, fail: boolean) => {
      raw.prepare(`INSERT INTO ${orders} (id, n) VALUES (?, 1)`).run(id);
      outbox.enqueueSync(raw, OrderPlaced, { orderId: id, n: 1 });
      if (fail) throw new Error('rolled back');
    });
    placeOrder('o-1', false);
    expect(() => placeOrder('o-2', true)).toThrow('rolled back');
    expect((await outbox.status()).backlog).toBe(1);
    const handleOnce = raw.transaction((id: string) => inbox.handleSync(raw, envelope(id), () => undefined));
    expect(handleOnce('e-1')).toBe(true);
    expect(handleOnce('e-1')).toBe(false);
    expect(() => outbox.enqueueSync(raw, OrderPlaced, { orderId: 'o-3', n: 1.5 })).toThrow(
      expect.objectContaining({ code: 'VALIDATION_FAILED' }),
    );
  });
});

describe('Kysely transactions on PostgreSQL', () => {
  it('enqueues and handles inside db.transaction().execute(), committing or rolling back with it', async () => {
    const db = await open('postgres');
    const pool = new pg.Pool({ connectionString: postgresUrl, max: 3 });
    const kysely = new Kysely<Record<string, { id: string; n: number }>>({
      dialect: new PostgresDialect({ pool }),
    });
    cleanups.push(() => kysely.destroy());
    const orders = await createOrdersTable(db);
    const outbox = createOutbox({ database: postgres(pool), table: db.table('outbox') });
    await outbox.setup();
    const inbox = createInbox({ database: postgres(pool), table: db.table('inbox') });
    cleanups.push(() => inbox.close());
    await inbox.setup();

    await kysely.transaction().execute(async (trx) => {
      await trx.insertInto(orders).values({ id: 'o-1', n: 1 }).execute();
      await outbox.enqueue(trx, OrderPlaced, { orderId: 'o-1', n: 1 });
    });
    await kysely
      .transaction()
      .execute(async (trx) => {
        await outbox.enqueue(fromKysely(trx, 'postgres'), OrderPlaced, { orderId: 'o-2', n: 1 });
        throw new Error('rolled back');
      })
      .catch(() => undefined);
    expect((await outbox.status()).backlog).toBe(1);
    expect(await count(db, orders)).toBe(1);

    const handle = () =>
      kysely.transaction().execute((trx) =>
        inbox.handle(trx, envelope('e-1'), async (tx) => {
          await tx.insertInto(orders).values({ id: 'o-x', n: 2 }).execute();
        }),
      );
    expect(await handle()).toBe(true);
    expect(await handle()).toBe(false);
    expect(await count(db, orders)).toBe(2);
  });
});

describe('the inbox needs an open transaction where the driver tells', () => {
  it('refuses a better-sqlite3 Database in autocommit, so a redelivery after a failed fn is not dropped', async () => {
    const db = await open('sqlite');
    const inbox = createInbox({ database: db.database });
    cleanups.push(() => inbox.close());
    await inbox.setup();
    const raw = (await db.tx((tx) => Promise.resolve(tx))) as SqliteDatabase;
    let ran = 0;
    const failure = await inbox
      .handle(raw, envelope('e-1'), () => {
        ran++;
        throw new Error('handler failed');
      })
      .catch((e: unknown) => e);
    expect(failure).toMatchObject({ code: 'INVALID_CONFIG' });
    expect((failure as Error).message).toMatch(/no transaction is open/);
    expect(() => inbox.handleSync(raw, envelope('e-1'), () => ran++)).toThrow(
      expect.objectContaining({ code: 'INVALID_CONFIG' }),
    );
    expect(ran).toBe(0);
    expect(await count(db, 'tidings_inbox')).toBe(0);
    // Inside a transaction the same event is handled.
    expect(raw.transaction(() => inbox.handleSync(raw, envelope('e-1'), () => ran++))()).toBe(true);
    expect(ran).toBe(1);
  });

  it('refuses a pg client outside BEGIN', async () => {
    const db = await open('postgres');
    const inbox = createInbox({ database: db.database, table: db.table('inbox') });
    cleanups.push(() => inbox.close());
    await inbox.setup();
    const failure = await db
      .tx(async (tx, q) => {
        await q('COMMIT');
        try {
          return await inbox.handle(tx, envelope('e-1'), () => undefined);
        } finally {
          await q('BEGIN');
        }
      })
      .catch((e: unknown) => e);
    expect(failure).toMatchObject({ code: 'INVALID_CONFIG' });
    expect(await count(db, db.table('inbox'))).toBe(0);
  });
});
