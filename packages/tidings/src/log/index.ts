/**
 * `tidings/log`: the embedded durable log, the default transport. One SQLite database (better-sqlite3 12, WAL) in a
 * data directory shared by every process on the machine; see {@link createLogTransport} for what it promises.
 */
export {
  createLogTransport,
  type LogSubscription,
  type LogTransport,
  type LogTransportOptions,
} from './transport.js';
export {
  completedRequestRetentionMs,
  inboxMaxEntriesPerGroup,
  inboxTtlMs,
  maxParkedEventsPerKey,
} from './stores.js';
