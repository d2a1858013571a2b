/**
 * Helpers of the PostgreSQL transport's tests (`test/postgres-*.spec.ts`): a transport in a schema of the test's
 * own on the shared server, and cleanup that closes the transports and drops the schemas. Generic helpers (records,
 * waits, consumers) come from `log-fixtures/helpers.ts`.
 */
import pg from 'pg';
import {
  createPostgresTransport,
  type PostgresTransport,
  type PostgresTransportOptions,
} from '../../src/postgres/index.js';
import { dropSchema, serverUrl, uniqueSchema } from '../conformance/children/postgres.js';

export {
  brokerMissing,
  serverUrl,
  startPrivatePostgres,
  privateBrokerMissing,
} from '../conformance/children/postgres.js';

const created: { transports: PostgresTransport[]; schemas: Set<string> } = {
  transports: [],
  schemas: new Set(),
};

/**
 * A transport on the shared server, in `options.schema` or a fresh schema (dropped by {@link cleanupPostgres}), with
 * a small pool. Closed by {@link cleanupPostgres}.
 */
export function openPostgres(options: PostgresTransportOptions = {}): PostgresTransport {
  const schema = options.schema ?? newSchema();
  const transport = createPostgresTransport({ url: serverUrl, poolSize: 3, ...options, schema });
  created.transports.push(transport);
  return transport;
}

/** A schema name for this test, dropped by {@link cleanupPostgres}. */
export function newSchema(): string {
  const schema = uniqueSchema('t');
  created.schemas.add(schema);
  return schema;
}

/** Closes every transport and drops every schema this test made. */
export async function cleanupPostgres(): Promise<void> {
  await Promise.all(created.transports.splice(0).map((transport) => transport.close()));
  for (const schema of [...created.schemas]) {
    created.schemas.delete(schema);
    await dropSchema(schema);
  }
}

/** Runs one statement on the shared server with a client of its own. */
export async function sql<T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}
