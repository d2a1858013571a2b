// The transactional outbox and inbox end to end on PostgreSQL (docs/outbox.md). Run it:
//   npm run outbox -w examples        (TIDINGS_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/test)
// The order service writes an order and its OrderPlaced event in one transaction; a relay publishes the event to
// the embedded log; the billing service writes an invoice and its inbox record in one transaction, so a
// re-published event (what a relay killed mid-batch leaves behind) has no second effect.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { z } from 'zod';
import { createBus, defineEvent, isTidingsError } from 'tidings';
import { createInbox, createOutbox, postgres } from 'tidings/outbox';

const OrderPlaced = defineEvent('OrderPlaced', {
  schema: z.object({ orderId: z.string(), customer: z.string(), total: z.number().positive() }),
  key: 'orderId',
  topic: 'orders',
});

const pool = new pg.Pool({
  connectionString: process.env['TIDINGS_POSTGRES_URL'] ?? 'postgresql://postgres@127.0.0.1:5432/test',
});
// A schema of this run's own, so the example leaves nothing behind (your tables would live in your own schema).
const schema = `tidings_example_${process.pid}`;
await pool.query(`CREATE SCHEMA ${schema}`);
await pool.query(
  `CREATE TABLE ${schema}.orders (id text PRIMARY KEY, customer text NOT NULL, total numeric NOT NULL)`,
);
await pool.query(`CREATE TABLE ${schema}.invoices (order_id text NOT NULL, amount numeric NOT NULL)`);
const dataDir = mkdtempSync(join(tmpdir(), 'tidings-outbox-example-'));

// 1. The outbox and the inbox live in your database. setup() creates their tables (or put schemaSql() in a migration).
const outbox = createOutbox({
  database: postgres(pool),
  table: `${schema}.tidings_outbox`,
  service: 'orders',
});
const inbox = createInbox({
  database: postgres(pool),
  table: `${schema}.tidings_inbox`,
  ttlMs: 7 * 86_400_000,
});
await outbox.setup();
await inbox.setup();

// 2. The order and its event commit together, in your transaction.
async function placeOrder(orderId: string, customer: string, total: number, commit = true) {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query(`INSERT INTO ${schema}.orders (id, customer, total) VALUES ($1, $2, $3)`, [
      orderId,
      customer,
      total,
    ]);
    const event = await outbox.enqueue(client, OrderPlaced, { orderId, customer, total }); // validated here
    await client.query(commit ? 'COMMIT' : 'ROLLBACK');
    return event;
  } catch (error) {
    await client.query('ROLLBACK');
    throw error;
  } finally {
    client.release();
  }
}

const placed = await placeOrder('o-1', 'ada', 42);
await placeOrder('o-2', 'bob', 10, false); // rolled back: its event never existed
try {
  await placeOrder('o-3', 'eve', -5); // bad data fails *your* transaction, not the relay later
} catch (error) {
  console.log(`rejected at enqueue: ${isTidingsError(error) ? error.code : String(error)}`);
}
console.log(`outbox backlog before the relay: ${(await outbox.status()).backlog}`);

// 3. The billing service: the invoice and the inbox record commit in one transaction of its database.
const bus = createBus({ service: 'shop', dataDir });
let deliveries = 0;
const billing = bus.handle('billing', [OrderPlaced], async ({ data }, ctx) => {
  deliveries++;
  await inbox.transaction(ctx, async (tx) => {
    await (tx as pg.PoolClient).query(`INSERT INTO ${schema}.invoices (order_id, amount) VALUES ($1, $2)`, [
      data.orderId,
      data.total,
    ]);
  });
});

// 4. The relay publishes what committed, in key order, woken by NOTIFY at each commit.
const relay = bus.startRelay(outbox);
const until = async (condition: () => Promise<boolean> | boolean) => {
  for (let i = 0; i < 1_000 && !(await condition()); i++) await new Promise((r) => setTimeout(r, 10));
};
await until(async () => (await outbox.status()).backlog === 0 && deliveries === 1);

// 5. A relay that died after publishing and before deleting publishes the same event again, with the same id.
const client = await pool.connect();
await client.query('BEGIN');
await outbox.enqueue(client, OrderPlaced, { orderId: 'o-1', customer: 'ada', total: 42 }, { id: placed.id });
await client.query('COMMIT');
client.release();
await until(() => deliveries === 2);

const invoices = await pool.query<{ order_id: string }>(`SELECT order_id FROM ${schema}.invoices`);
console.log(
  `o-1 delivered ${deliveries} times, applied once; invoices: ${invoices.rows.map((r) => r.order_id).join(', ')}`,
);
console.log(`relay errors: ${relay.stats().errors}, billing handled ${billing.stats().processed} deliveries`);

await bus.close(); // closes the relay too
await inbox.close();
await pool.query(`DROP SCHEMA ${schema} CASCADE`);
await pool.end();
rmSync(dataDir, { recursive: true, force: true });
if (deliveries !== 2 || invoices.rows.length !== 1 || invoices.rows[0]?.order_id !== 'o-1') {
  console.log('outbox example FAILED');
  process.exit(1);
}
console.log('outbox example ok');
