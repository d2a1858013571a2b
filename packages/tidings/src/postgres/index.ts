/**
 * `tidings/postgres`: the PostgreSQL transport (client library `pg` 8, an optional peer dependency). Topics,
 * partitions, records, consumer groups and offsets live in tables of one schema; see {@link createPostgresTransport}
 * for what it promises and docs/transports/postgres.md for how to run it.
 */
export { createPostgresTransport, type PostgresSubscription, type PostgresTransport } from './transport.js';
export type { PostgresConnectionOptions, PostgresTransportOptions } from './options.js';
