// A chaos producer: in a loop, one transaction per change: bump an order's version, record the change, enqueue
// OrderRevised in the outbox; roll back a share of the transactions on purpose (after enqueueing). Runs until
// killed. Prints "ready <pid>" once its first transaction committed.
//   node --import tsx --conditions=tidings-source producer.ts '<config JSON>'
import { randomInt } from 'node:crypto';
import { createOutbox } from 'tidings/outbox';
import { OrderRevised, parseConfig } from './config.js';
import { bumpVersion, inTransaction, openSide } from './db.js';

const config = parseConfig(process.argv[2]);
const side = openSide(config, 'p');
const outbox = createOutbox({
  database: side.database,
  table: side.libTable('outbox'),
  service: 'chaos-producer',
});
let ready = false;

for (;;) {
  const key = `order-${randomInt(config.keys)}`;
  const rollback = Math.random() < config.rollbackRate;
  try {
    await inTransaction(side, async (conn) => {
      const version = await bumpVersion(config, side, conn, key);
      const { id } = await outbox.enqueue(conn.handle, OrderRevised, { orderId: key, version });
      await conn.q(`INSERT INTO ${side.t('changes')} (event_id, k, version) VALUES (?, ?, ?)`, [
        id,
        key,
        version,
      ]);
      return rollback ? 'rollback' : 'commit';
    });
  } catch (error) {
    // A deadlock or lock timeout rolls the transaction back: that change never happened. Go on.
    process.stderr.write(`producer ${process.pid}: ${(error as Error).message}\n`);
  }
  if (!ready && !rollback) {
    ready = true;
    process.stdout.write(`ready ${process.pid}\n`);
  }
  await new Promise((resolve) => setTimeout(resolve, randomInt(2, 12)));
}
