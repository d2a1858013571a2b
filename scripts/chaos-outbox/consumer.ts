// A chaos consumer: handles OrderRevised in the group through the bus, and applies each event in one transaction
// of the consumer database with the transactional inbox (inbox.transaction): an effect row (no unique key, so a
// second application would show), the order's projection, and a violation row when a version arrives out of order.
// Runs until killed.
// Prints "ready <pid>" once subscribed.
//   node --import tsx --conditions=tidings-source consumer.ts '<config JSON>'
import { createBus, createConsoleLogger, type Transport } from 'tidings';
import { createInbox } from 'tidings/outbox';
import { OrderRevised, consumerGroup, parseConfig } from './config.js';
import { openSide, type Conn } from './db.js';
import { openChaosTransport } from './transport.js';

const config = parseConfig(process.argv[2]);
const side = openSide(config, 'c');
const inbox = createInbox({ database: side.database, table: side.libTable('inbox') });
const transport: Transport = await openChaosTransport(config);
const bus = createBus({ service: 'chaos-consumer', transport, logger: createConsoleLogger('error') });

bus.handle(
  consumerGroup,
  [OrderRevised],
  async ({ data }, ctx) => {
    // The effect and the inbox record commit in one transaction of the consumer database; a copy is skipped.
    await inbox.transaction(ctx, (tx) => apply(side.wrap(tx), data.orderId, data.version, ctx.envelope.id));
  },
  { concurrency: 4, retry: { maxAttempts: 1000, initialDelayMs: 20, maxDelayMs: 500 } },
);
process.stdout.write(`ready ${process.pid}\n`);

async function apply(conn: Conn, key: string, version: number, eventId: string): Promise<void> {
  const [row] = await conn.q(`SELECT version FROM ${side.t('projection')} WHERE k = ?${side.forUpdate}`, [
    key,
  ]);
  const last = row === undefined ? 0 : Number(row['version']);
  if (version !== last + 1)
    await conn.q(`INSERT INTO ${side.t('violations')} (k, expected, got) VALUES (?, ?, ?)`, [
      key,
      last + 1,
      version,
    ]);
  if (row === undefined)
    await conn.q(`INSERT INTO ${side.t('projection')} (k, version) VALUES (?, ?)`, [key, version]);
  else
    await conn.q(`UPDATE ${side.t('projection')} SET version = ? WHERE k = ?`, [
      Math.max(last, version),
      key,
    ]);
  await conn.q(`INSERT INTO ${side.t('effects')} (event_id, k, version) VALUES (?, ?, ?)`, [
    eventId,
    key,
    version,
  ]);
}
