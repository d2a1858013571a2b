import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  createBus,
  createMemoryTransport,
  isTidingsError,
  silentLogger,
  type Bus,
  type Envelope,
  type Transport,
} from '../../src/index.js';
import { defineEvent } from '../../src/index.js';
import { createOutbox, type Outbox, type OutboxOptions } from '../../src/outbox/index.js';
import { createMemorySchemaStore, createSchemaRegistry } from '../../src/registry/index.js';
import { createFakeClock, waitUntil } from '../../src/testing/index.js';
import {
  OrderPlaced,
  createOrdersTable,
  openTestDb,
  type DialectName,
  type TestDb,
  openOutbox,
} from './helpers.js';

// The transactional outbox on the real servers: PostgreSQL, MariaDB and SQLite, each test with tables of its own.

const opened: TestDb[] = [];
const buses: Bus[] = [];
afterEach(async () => {
  await Promise.all(buses.splice(0).map((bus) => bus.close()));
  for (const db of opened.splice(0)) await db.close();
});

const setup = (dialect: DialectName, options: Partial<OutboxOptions> = {}) =>
  openOutbox(opened, dialect, options);

/** A bus on `transport` whose group `g` records every handled envelope, in order. */
function recordingBus(transport: Transport, seen: Envelope[], group = 'g'): Bus {
  const bus = createBus({ service: 'relay', transport, logger: silentLogger });
  buses.push(bus);
  bus.handle(group, [OrderPlaced], (_message, ctx) => void seen.push(ctx.envelope), { concurrency: 4 });
  return bus;
}

const dataOf = (envelope: Envelope) => envelope.data as { orderId: string; n: number };

describe.each(['postgres', 'mysql', 'sqlite'] as const)('outbox on %s', (dialect) => {
  it('stores the event with the transaction that commits and nothing for one that rolls back', async () => {
    const { db, outbox } = await setup(dialect);
    const orders = await createOrdersTable(db);
    const committed = await db.tx(async (tx, q) => {
      await q(`INSERT INTO ${orders} (id, n) VALUES (?, ?)`, ['o-1', 1]);
      return outbox.enqueue(tx, OrderPlaced, { orderId: 'o-1', n: 1 });
    });
    await db.rolledBack(async (tx) => {
      await outbox.enqueue(tx, OrderPlaced, { orderId: 'o-2', n: 1 });
    });
    expect(committed).toMatchObject({ topic: 'orders', key: 'o-1' });
    expect((await outbox.status()).backlog).toBe(1);

    const transport = createMemoryTransport();
    const seen: Envelope[] = [];
    const bus = recordingBus(transport, seen);
    bus.startRelay(outbox);
    await waitUntil(() => seen.length === 1);
    expect(seen[0]).toMatchObject({ id: committed.id, subject: 'o-1', source: 'tidings://shop' });
    await waitUntil(async () => (await outbox.status()).backlog === 0);
  });

  it('rejects bad data at enqueue, so the caller rolls back and nothing is stored', async () => {
    const { db, outbox } = await setup(dialect, { maxEventBytes: 2_000 });
    const failure = await db
      .tx((tx) => outbox.enqueue(tx, OrderPlaced, { orderId: 'o-1', n: 'one' as unknown as number }))
      .catch((error: unknown) => error);
    expect(isTidingsError(failure, 'VALIDATION_FAILED')).toBe(true);
    const tooLarge = await db
      .tx((tx) => outbox.enqueue(tx, OrderPlaced, { orderId: 'o-1', n: 1, note: 'x'.repeat(5_000) }))
      .catch((error: unknown) => error);
    expect(isTidingsError(tooLarge, 'EVENT_TOO_LARGE')).toBe(true);
    const notATransaction = await outbox
      .enqueue({}, OrderPlaced, { orderId: 'o-1', n: 1 })
      .catch((e: unknown) => e);
    expect(isTidingsError(notATransaction, 'INVALID_CONFIG')).toBe(true);
    expect(await outbox.status()).toEqual({ backlog: 0, oldestAgeMs: null, maxAttempts: 0 });
  });

  it('refuses at enqueue an event version the schema registry forbids, writing nothing', async () => {
    const registry = createSchemaRegistry({ store: createMemorySchemaStore() });
    const { db, outbox } = await setup(dialect, { registry });
    await db.tx((tx) => outbox.enqueue(tx, OrderPlaced, { orderId: 'o-1', n: 1 }));
    expect(await registry.versions('OrderPlaced')).toEqual([1]);
    // v2 makes a new field required: BACKWARD forbids it (a v2 reader cannot read v1 events).
    const OrderPlacedV2 = defineEvent('OrderPlaced', {
      schema: z.object({ orderId: z.string(), n: z.number().int(), currency: z.string() }),
      key: 'orderId',
      topic: 'orders',
      version: 2,
      upcast: { 1: (v1) => ({ ...(v1 as object), currency: 'EUR' }) },
    });
    const refused = await db
      .tx((tx) => outbox.enqueue(tx, OrderPlacedV2, { orderId: 'o-2', n: 2, currency: 'USD' }))
      .catch((error: unknown) => error);
    expect(isTidingsError(refused, 'SCHEMA_INCOMPATIBLE')).toBe(true);
    expect((await outbox.status()).backlog).toBe(1);
    if (dialect === 'sqlite') {
      // enqueueSync cannot wait for the registry: it needs the definition registered first (checked before the
      // database is touched).
      const unusedSqlite = {
        prepare: () => {
          throw new Error('not reached');
        },
      };
      expect(() =>
        outbox.enqueueSync(unusedSqlite, OrderPlacedV2, { orderId: 'o-3', n: 3, currency: 'USD' }),
      ).toThrow(/not registered with the outbox's schema registry yet/);
    }
    await expect(outbox.registerSchemas([OrderPlacedV2])).rejects.toMatchObject({
      code: 'SCHEMA_INCOMPATIBLE',
    });
    await registry.close();
  });

  it('publishes each key in enqueue order with the envelope fixed at enqueue, then removes the rows', async () => {
    const { db, outbox } = await setup(dialect);
    const enqueued: Array<{ id: string; key: string; n: number }> = [];
    for (let t = 0; t < 6; t++) {
      await db.tx(async (tx) => {
        for (let i = 0; i < 20; i++) {
          const key = `o-${(t + i) % 5}`;
          const n = t * 20 + i;
          const { id } = await outbox.enqueue(
            tx,
            OrderPlaced,
            { orderId: key, n },
            { correlationId: `flow-${n}` },
          );
          enqueued.push({ id, key, n });
        }
      });
    }
    const status = await outbox.status();
    expect(status.backlog).toBe(120);
    expect(status.oldestAgeMs).toBeGreaterThanOrEqual(0);

    const transport = createMemoryTransport();
    const seen: Envelope[] = [];
    const bus = recordingBus(transport, seen);
    const relay = bus.startRelay(outbox, { batchSize: 7 });
    await waitUntil(() => seen.length === 120);
    for (let k = 0; k < 5; k++) {
      const key = `o-${k}`;
      expect(seen.filter((e) => e.subject === key).map((e) => dataOf(e).n)).toEqual(
        enqueued.filter((e) => e.key === key).map((e) => e.n),
      );
    }
    const byN = new Map(enqueued.map((e) => [e.n, e.id]));
    for (const envelope of seen) {
      expect(envelope.id).toBe(byN.get(dataOf(envelope).n));
      expect(envelope.correlationid).toBe(`flow-${dataOf(envelope).n}`);
    }
    await waitUntil(async () => (await outbox.status()).backlog === 0);
    expect(relay.stats()).toMatchObject({ published: 120, errors: 0 });
    expect(
      Number((await db.query(`SELECT COUNT(*) AS n FROM ${quoted(db, db.table('outbox'))}`))[0]!['n']),
    ).toBe(0);
  });

  it('runs several relays on one outbox without publishing an event twice or out of key order', async () => {
    const { db, outbox } = await setup(dialect);
    const transport = createMemoryTransport();
    const seen: Envelope[] = [];
    recordingBus(transport, seen);
    // Three relays, each on a bus of its own over the shared transport, while producers keep committing.
    for (let r = 0; r < 3; r++) {
      const bus = createBus({ service: `relay-${r}`, transport, logger: silentLogger });
      buses.push(bus);
      bus.startRelay(createOutbox({ database: db.database, table: db.table('outbox') }), {
        batchSize: 5,
        pollIntervalMs: 1,
        maxPollIntervalMs: 20,
      });
    }
    const expected = new Map<string, number[]>();
    for (let t = 0; t < 30; t++) {
      await db.tx(async (tx) => {
        for (let i = 0; i < 5; i++) {
          const key = `o-${(t * 7 + i) % 11}`;
          const n = t * 5 + i;
          await outbox.enqueue(tx, OrderPlaced, { orderId: key, n });
          expected.set(key, [...(expected.get(key) ?? []), n]);
        }
      });
    }
    await waitUntil(() => seen.length >= 150, { timeoutMs: 20_000 });
    await waitUntil(async () => (await outbox.status()).backlog === 0);
    expect(new Set(seen.map((e) => e.id)).size).toBe(seen.length);
    expect(seen).toHaveLength(150);
    for (const [key, ns] of expected)
      expect(seen.filter((e) => e.subject === key).map((e) => dataOf(e).n)).toEqual(ns);
  });

  it('enqueueMany keeps the order of its items and stores none when one is invalid', async () => {
    const { db, outbox } = await setup(dialect);
    const items = Array.from({ length: 30 }, (_, n) => ({
      event: OrderPlaced,
      data: { orderId: `o-${n % 4}`, n },
    }));
    const enqueued = await db.tx((tx) => outbox.enqueueMany(tx, items));
    expect(enqueued.map((e) => e.key)).toEqual(items.map((i) => i.data.orderId));
    const invalid = await db
      .tx((tx) => outbox.enqueueMany(tx, [items[0]!, { event: OrderPlaced, data: { orderId: 'o-9' } }]))
      .catch((error: unknown) => error);
    expect(isTidingsError(invalid, 'VALIDATION_FAILED')).toBe(true);
    expect((await outbox.status()).backlog).toBe(30);
    const seen: Envelope[] = [];
    recordingBus(createMemoryTransport(), seen).startRelay(outbox, { batchSize: 4 });
    await waitUntil(() => seen.length === 30);
    for (let k = 0; k < 4; k++)
      expect(seen.filter((e) => e.subject === `o-${k}`).map((e) => dataOf(e).n)).toEqual(
        items.filter((i) => i.data.orderId === `o-${k}`).map((i) => i.data.n),
      );
  });

  it('keeps published rows for keepPublishedMs when asked, out of the backlog', async () => {
    const { db, outbox } = await setup(dialect, { keepPublishedMs: 3_600_000 });
    await db.tx((tx) => outbox.enqueue(tx, OrderPlaced, { orderId: 'o-1', n: 1 }));
    const seen: Envelope[] = [];
    recordingBus(createMemoryTransport(), seen).startRelay(outbox);
    await waitUntil(() => seen.length === 1);
    await waitUntil(async () => (await outbox.status()).backlog === 0);
    const rows = await db.query(`SELECT published_at FROM ${quoted(db, db.table('outbox'))}`);
    expect(rows).toHaveLength(1);
    expect(Number(rows[0]!['published_at'])).toBeGreaterThan(0);
  });

  it('deletes rows kept by keepPublishedMs once they are older than that', async () => {
    const clock = createFakeClock();
    const { db, outbox } = await setup(dialect, { keepPublishedMs: 1_000, clock });
    await db.tx((tx) => outbox.enqueue(tx, OrderPlaced, { orderId: 'o-1', n: 1 }));
    const seen: Envelope[] = [];
    const relay = recordingBus(createMemoryTransport(), seen).startRelay(outbox);
    await waitUntil(async () => (await outbox.status()).backlog === 0);
    const table = quoted(db, db.table('outbox'));
    expect(await db.query(`SELECT event_key FROM ${table}`)).toHaveLength(1);
    await clock.advance(120_000); // past keepPublishedMs and past the relay's once-a-minute purge
    await waitUntil(async () => {
      relay.wake();
      return (await db.query(`SELECT event_key FROM ${table}`)).length === 0;
    });
  });

  it('works from the statements of schemaSql() run by your own migrations', async () => {
    const db = await openTestDb(dialect);
    opened.push(db);
    const outbox = createOutbox({ database: db.database, table: db.table('migrated') });
    for (const statement of outbox.schemaSql()) await db.query(statement);
    await db.tx((tx) => outbox.enqueue(tx, OrderPlaced, { orderId: 'o-1', n: 1 }));
    expect((await outbox.status()).backlog).toBe(1);
  });

  it('needs a pool to relay, and refuses on a closed bus', async () => {
    const { db } = await setup(dialect);
    const producerOnly = createOutbox({ database: db.withoutPool(), table: db.table('outbox') });
    const bus = createBus({ service: 's', transport: createMemoryTransport(), logger: silentLogger });
    expect(() => bus.startRelay(producerOnly)).toThrow(expect.objectContaining({ code: 'INVALID_CONFIG' }));
    await bus.close();
    expect(() => bus.startRelay(producerOnly)).toThrow(expect.objectContaining({ code: 'CLOSED' }));
    // A producer-only outbox still enqueues inside the caller's transaction.
    await db.tx((tx) => producerOnly.enqueue(tx, OrderPlaced, { orderId: 'o-1', n: 1 }));
    expect(await db.query(`SELECT event_key FROM ${quoted(db, db.table('outbox'))}`)).toEqual([
      { event_key: 'o-1' },
    ]);
  });
});

function quoted(db: TestDb, table: string): string {
  return db.dialect === 'mysql' ? `\`${table}\`` : table;
}

describe('outbox on postgres: wake-ups', () => {
  it('wakes an idle relay at commit through NOTIFY, long before its next poll', async () => {
    const { db, outbox } = await setup('postgres');
    const seen: Envelope[] = [];
    // Polling alone would look again only after a minute; waitUntil gives up after 10 s.
    recordingBus(createMemoryTransport(), seen).startRelay(outbox, {
      pollIntervalMs: 60_000,
      maxPollIntervalMs: 60_000,
    });
    for (let n = 1; n <= 3; n++) {
      await db.tx((tx) => outbox.enqueue(tx, OrderPlaced, { orderId: 'o-1', n }));
      await waitUntil(() => seen.length === n);
    }
    expect(seen.map((e) => dataOf(e).n)).toEqual([1, 2, 3]);
  });
});

describe('outbox on postgres: a lost connection', () => {
  it('reconnects and goes on publishing after its backend is terminated', async () => {
    const { db, outbox } = await setup('postgres');
    const seen: Envelope[] = [];
    const relay = recordingBus(createMemoryTransport(), seen).startRelay(outbox, { maxPollIntervalMs: 50 });
    await db.tx((tx) => outbox.enqueue(tx, OrderPlaced, { orderId: 'o-1', n: 1 }));
    await waitUntil(() => seen.length === 1);
    const schema = db.table('outbox').split('.')[0]!;
    // Every other session whose last statement named this test's schema, until the relay's was among them.
    await waitUntil(async () => {
      await db.query(
        'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query LIKE ?',
        [`%${schema}%`],
      );
      return relay.stats().errors > 0;
    });
    await db.tx((tx) => outbox.enqueue(tx, OrderPlaced, { orderId: 'o-1', n: 2 }));
    await waitUntil(() => seen.some((e) => dataOf(e).n === 2));
    await waitUntil(async () => (await outbox.status()).backlog === 0);
    // A connection lost between publish and delete re-publishes (at-least-once); each event's first copy is in order.
    expect([...new Set(seen.map((e) => dataOf(e).n))]).toEqual([1, 2]);
  });
});

describe('outbox on sqlite: a relay sharing your connection', () => {
  it('never publishes a row of a transaction still open on that connection, nor joins it', async () => {
    const { db, outbox } = await setup('sqlite');
    const seen: Envelope[] = [];
    recordingBus(createMemoryTransport(), seen).startRelay(outbox, {
      pollIntervalMs: 1,
      maxPollIntervalMs: 2,
    });
    // Transactions that stay open across turns of the event loop while the relay keeps looking, then roll back.
    for (let t = 0; t < 20; t++) {
      await db.rolledBack(async (tx) => {
        await outbox.enqueue(tx, OrderPlaced, { orderId: `rolled-${t}`, n: t });
        for (let turn = 0; turn < 5; turn++) await new Promise((resolve) => setImmediate(resolve));
      });
    }
    await db.tx((tx) => outbox.enqueue(tx, OrderPlaced, { orderId: 'kept', n: 1 }));
    await waitUntil(() => seen.length >= 1);
    await waitUntil(async () => (await outbox.status()).backlog === 0);
    expect(seen.map((e) => e.subject)).toEqual(['kept']);
  });
});

describe('outbox options', () => {
  it('rejects a bad table name and a bad database at creation', async () => {
    const db = await openTestDb('sqlite');
    opened.push(db);
    expect(() => createOutbox({ database: db.database, table: 'orders; DROP TABLE x' })).toThrow(
      expect.objectContaining({ code: 'INVALID_CONFIG' }),
    );
    expect(() => createOutbox({ database: {} as never })).toThrow(
      expect.objectContaining({ code: 'INVALID_CONFIG' }),
    );
  });

  it('closes its relays when the bus closes', async () => {
    const db = await openTestDb('sqlite');
    opened.push(db);
    const outbox: Outbox = createOutbox({ database: db.database });
    await outbox.setup();
    const bus = createBus({ service: 's', transport: createMemoryTransport(), logger: silentLogger });
    const relay = bus.startRelay(outbox);
    await bus.close();
    await expect(relay.closed).resolves.toBeUndefined();
  });
});

describe('outbox: enqueue needs an open transaction where the driver tells', () => {
  it('refuses a better-sqlite3 Database in autocommit, so no row commits without the business write', async () => {
    const { db, outbox } = await setup('sqlite');
    const raw = (await db.tx((tx) => Promise.resolve(tx))) as { inTransaction: boolean };
    expect(raw.inTransaction).toBe(false);
    const failure = await outbox.enqueue(raw, OrderPlaced, { orderId: 'o-1', n: 1 }).catch((e: unknown) => e);
    expect(isTidingsError(failure, 'INVALID_CONFIG')).toBe(true);
    expect((failure as Error).message).toMatch(/no transaction is open .*db\.transaction/);
    const many = await outbox
      .enqueueMany(raw, [{ event: OrderPlaced, data: { orderId: 'o-1', n: 1 } }])
      .catch((e: unknown) => e);
    expect(isTidingsError(many, 'INVALID_CONFIG')).toBe(true);
    expect(() => outbox.enqueueSync(raw as never, OrderPlaced, { orderId: 'o-1', n: 1 })).toThrow(
      expect.objectContaining({ code: 'INVALID_CONFIG' }),
    );
    expect((await outbox.status()).backlog).toBe(0);
  });

  it('refuses a pg client outside BEGIN (pg reports its transaction status without a round trip)', async () => {
    const { db, outbox } = await setup('postgres');
    const failure = await db
      .tx(async (tx, q) => {
        await q('COMMIT'); // the client is back in autocommit
        try {
          return await outbox.enqueue(tx, OrderPlaced, { orderId: 'o-1', n: 1 });
        } finally {
          await q('BEGIN'); // for the fixture's own COMMIT or ROLLBACK
        }
      })
      .catch((e: unknown) => e);
    expect(isTidingsError(failure, 'INVALID_CONFIG')).toBe(true);
    expect((failure as Error).message).toMatch(/pg client.*BEGIN/);
    expect((await outbox.status()).backlog).toBe(0);
  });

  it('says the event "was not enqueued" when its key is empty', async () => {
    const { db, outbox } = await setup('sqlite');
    const failure = await db
      .tx((tx) => outbox.enqueue(tx, OrderPlaced, { orderId: '', n: 1 }))
      .catch((e: unknown) => e);
    expect(isTidingsError(failure, 'VALIDATION_FAILED')).toBe(true);
    expect((failure as Error).message).toMatch(/^OrderPlaced was not enqueued: its key is empty/);
  });
});

describe.each(['postgres', 'mysql'] as const)('outbox on %s: enqueueMany and key locks', (dialect) => {
  it('commits two transactions enqueueing the same keys in opposite orders, without a deadlock', async () => {
    const { db, outbox } = await setup(dialect);
    // Two groups of keys, each over more than one PostgreSQL statement (1,000 rows each).
    const group = (prefix: string) =>
      Array.from({ length: 1_000 }, (_, n) => ({
        event: OrderPlaced,
        data: { orderId: `${prefix}-${n % 10}`, n },
      }));
    const a = group('a');
    const b = group('b');
    const results = await Promise.allSettled([
      db.tx((tx) => outbox.enqueueMany(tx, [...a, ...b])),
      db.tx((tx) => outbox.enqueueMany(tx, [...b, ...a])),
    ]);
    expect(results.map((r) => (r.status === 'rejected' ? String(r.reason) : 'ok'))).toEqual(['ok', 'ok']);
    expect((await outbox.status()).backlog).toBe(4_000);
    // Each transaction's rows are contiguous per key: the second waited for the first's locks.
    const rows = await db.query(`SELECT event_key FROM ${quoted(db, db.table('outbox'))} ORDER BY seq`);
    expect(rows).toHaveLength(4_000);
  });
});
