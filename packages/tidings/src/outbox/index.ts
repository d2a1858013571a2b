/**
 * `tidings/outbox`: the transactional outbox and inbox for PostgreSQL (`pg`), MariaDB/MySQL (`mysql2/promise`) and
 * SQLite (`better-sqlite3`). No driver is imported: you pass your pool, client, connection or database, and the
 * drivers stay optional peers. `openDatabaseUrl` (used by `tidings relay`) loads a driver on demand.
 *
 * ```ts
 * const outbox = createOutbox({ database: postgres(pool), service: 'orders' });
 * await client.query('BEGIN');
 * await client.query('INSERT INTO orders ...');
 * await outbox.enqueue(client, OrderPlaced, { orderId, total });
 * await client.query('COMMIT');
 * const relay = bus.startRelay(outbox);
 * ```
 * @module
 */
export {
  createOutbox,
  type Outbox,
  type OutboxOptions,
  type OutboxStatus,
  type EnqueueOptions,
  type Enqueued,
} from './outbox.js';
export { missingObject, type MissingObject, type RelayOptions } from './relay.js';
export {
  createInbox,
  type TransactionalInbox,
  type TransactionalInboxOptions,
  type InboxMessage,
} from './inbox.js';
export {
  postgres,
  mysql,
  sqlite,
  type OutboxDatabase,
  type DatabaseSession,
  type PgPoolLike,
  type PgClientLike,
  type MysqlPoolLike,
  type MysqlConnectionLike,
} from './database.js';
export {
  fromKysely,
  fromDrizzle,
  type Dialect,
  type AdaptedTransaction,
  type KyselyLike,
  type DrizzleSqlTag,
  type DrizzleTransactionLike,
  type SqliteDatabaseLike,
  type SqliteStatementLike,
} from './sql.js';
export { openDatabaseUrl, type OpenedDatabase, type OpenDatabaseUrlOptions } from './url.js';
export { outboxLanes } from './names.js';
