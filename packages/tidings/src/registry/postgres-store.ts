/**
 * The schema registry in PostgreSQL, for services that share a database rather than a data directory. `pg` (8) is
 * loaded when the store is created, so the registry entry never loads it otherwise.
 */
import type { Pool, PoolClient, PoolConfig } from 'pg';
import { ErrorCode, TidingsError } from '../core/errors.js';
import { defaultCompatibilityMode, isCompatibilityMode, type CompatibilityMode } from './modes.js';
import { schemaHash } from './sqlite-store.js';
import type { Registration, SchemaStore, StoredSchema, StoredVersion } from './store.js';

/** Options of {@link createPostgresSchemaStore}: a connection string or a pool, and where the tables go. */
export interface PostgresSchemaStoreOptions {
  /** e.g. `postgres://user@127.0.0.1:5432/app`. Ignored when `pool` is given. */
  url?: string;
  /** A `pg` pool to use; it is not closed by `close()`. */
  pool?: Pool;
  /** The PostgreSQL schema (namespace) of the registry's tables, created if missing. Default `tidings`. */
  schema?: string;
}

interface VersionRow {
  subject: string;
  version: number;
  id: number;
  schema: string;
  registered_at: string;
}

const toVersion = (row: VersionRow): StoredVersion => ({
  subject: row.subject,
  version: Number(row.version),
  id: Number(row.id),
  schema: row.schema,
  registeredAt: Number(row.registered_at),
});

/**
 * Connects and creates the registry's tables (`registry_schemas`, `registry_versions`, `registry_config`) in
 * `schema` if missing. Registrations of one subject are serialised across processes with a transaction-scoped
 * advisory lock. Rejects with `INVALID_CONFIG` for a bad schema name or a missing `pg` package and
 * `TRANSPORT_UNAVAILABLE` when the server cannot be reached.
 */
export async function createPostgresSchemaStore(options: PostgresSchemaStoreOptions): Promise<SchemaStore> {
  const namespace = options.schema ?? 'tidings';
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(namespace)) {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `createPostgresSchemaStore: "schema" must be a lower-case identifier (letters, digits, '_'), got ${JSON.stringify(namespace)}`,
    );
  }
  if (options.pool === undefined && options.url === undefined) {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      'createPostgresSchemaStore: pass "url" (e.g. postgres://127.0.0.1:5432/app) or a "pool"',
    );
  }
  let pool = options.pool;
  const ownsPool = pool === undefined;
  if (pool === undefined) {
    let PoolClass: new (config: PoolConfig) => Pool;
    try {
      PoolClass = (await import('pg')).default.Pool;
    } catch (error) {
      throw new TidingsError(
        ErrorCode.INVALID_CONFIG,
        `the PostgreSQL schema registry needs the pg package (version 8): install it with 'npm install pg@8'`,
        { cause: error },
      );
    }
    pool = new PoolClass({
      connectionString: options.url,
      max: 4,
      allowExitOnIdle: true,
      application_name: 'tidings-registry',
    });
    pool.on('error', () => {});
  }
  const db = pool;
  const t = (table: string) => `"${namespace}"."registry_${table}"`;
  const unavailable = (error: unknown) =>
    new TidingsError(
      ErrorCode.TRANSPORT_UNAVAILABLE,
      `the PostgreSQL schema registry (schema "${namespace}") failed: ${(error as Error).message}; check the server ` +
        `is reachable and the user may create tables there`,
      { cause: error },
    );
  const query = async <R extends object>(text: string, values: unknown[] = []): Promise<R[]> => {
    try {
      return (await db.query(text, values)).rows as R[];
    } catch (error) {
      throw unavailable(error);
    }
  };
  try {
    await db.query(`CREATE SCHEMA IF NOT EXISTS "${namespace}"`);
    await db.query(`
      CREATE TABLE IF NOT EXISTS ${t('schemas')} (
        id BIGSERIAL PRIMARY KEY, hash TEXT NOT NULL UNIQUE, schema TEXT NOT NULL, created_at BIGINT NOT NULL);
      CREATE TABLE IF NOT EXISTS ${t('versions')} (
        subject TEXT NOT NULL, version INTEGER NOT NULL, schema_id BIGINT NOT NULL REFERENCES ${t('schemas')} (id),
        registered_at BIGINT NOT NULL, PRIMARY KEY (subject, version));
      CREATE TABLE IF NOT EXISTS ${t('config')} (subject TEXT PRIMARY KEY, mode TEXT NOT NULL);`);
  } catch (error) {
    if (ownsPool) await pool.end().catch(() => undefined);
    throw unavailable(error);
  }
  const selectVersions = `SELECT v.subject, v.version, s.id, s.schema, v.registered_at FROM ${t('versions')} v
    JOIN ${t('schemas')} s ON s.id = v.schema_id WHERE v.subject = $1 ORDER BY v.version`;
  const global = '';
  const readMode = async (
    client: Pool | PoolClient,
    subject: string,
  ): Promise<CompatibilityMode | undefined> => {
    const mode = (
      await client.query<{ mode: string }>(`SELECT mode FROM ${t('config')} WHERE subject = $1`, [subject])
    ).rows[0]?.mode;
    return isCompatibilityMode(mode) ? mode : undefined;
  };
  let closed = false;
  const open = () => {
    if (closed) throw new TidingsError(ErrorCode.CLOSED, `the PostgreSQL schema registry is closed`);
  };

  return {
    name: `postgres:${namespace}`,
    async register(subject, schema, admit): Promise<Registration> {
      open();
      let client: PoolClient;
      try {
        client = await db.connect();
      } catch (error) {
        throw unavailable(error);
      }
      let admitted = false;
      let released = false;
      try {
        await client.query('BEGIN');
        await client.query(`SELECT pg_advisory_xact_lock(hashtext($1))`, [
          `tidings.registry:${namespace}:${subject}`,
        ]);
        const history = (await client.query<VersionRow>(selectVersions, [subject])).rows.map(toVersion);
        const existing = history.find((version) => version.schema === schema);
        if (existing !== undefined) {
          await client.query('COMMIT');
          return { version: existing, created: false };
        }
        const mode =
          (await readMode(client, subject)) ?? (await readMode(client, global)) ?? defaultCompatibilityMode;
        admitted = true;
        admit({ history, mode });
        admitted = false;
        const now = Date.now();
        const hash = schemaHash(schema);
        await client.query(
          `INSERT INTO ${t('schemas')} (hash, schema, created_at) VALUES ($1, $2, $3) ON CONFLICT (hash) DO NOTHING`,
          [hash, schema, now],
        );
        const id = Number(
          (await client.query<{ id: string }>(`SELECT id FROM ${t('schemas')} WHERE hash = $1`, [hash]))
            .rows[0]?.id,
        );
        const version = (history.at(-1)?.version ?? 0) + 1;
        await client.query(
          `INSERT INTO ${t('versions')} (subject, version, schema_id, registered_at) VALUES ($1, $2, $3, $4)`,
          [subject, version, id, now],
        );
        await client.query('COMMIT');
        return { version: { subject, version, id, schema, registeredAt: now }, created: true };
      } catch (error) {
        // A client whose ROLLBACK failed is broken: release it with the error so the pool drops it.
        const rollbackFailure = await client.query('ROLLBACK').then(
          () => undefined,
          (rollbackError: unknown) => rollbackError,
        );
        client.release(rollbackFailure instanceof Error ? rollbackFailure : undefined);
        released = true;
        if (admitted) throw error; // the admission check refused: its own error
        throw error instanceof TidingsError ? error : unavailable(error);
      } finally {
        if (!released) client.release();
      }
    },
    async subjects() {
      open();
      const rows = await query<{ subject: string }>(
        `SELECT DISTINCT subject FROM ${t('versions')} ORDER BY subject`,
      );
      return rows.map((row) => row.subject);
    },
    async versions(subject) {
      open();
      return (await query<VersionRow>(selectVersions, [subject])).map(toVersion);
    },
    async schemaById(id): Promise<StoredSchema | undefined> {
      open();
      const row = (
        await query<{ id: string; schema: string }>(`SELECT id, schema FROM ${t('schemas')} WHERE id = $1`, [
          id,
        ])
      )[0];
      return row === undefined ? undefined : { id: Number(row.id), schema: row.schema };
    },
    async getMode(subject) {
      open();
      try {
        return await readMode(db, subject ?? global);
      } catch (error) {
        throw unavailable(error);
      }
    },
    async setMode(mode, subject) {
      open();
      await query(
        `INSERT INTO ${t('config')} (subject, mode) VALUES ($1, $2) ON CONFLICT (subject) DO UPDATE SET mode = excluded.mode`,
        [subject ?? global, mode],
      );
    },
    async close() {
      if (closed) return;
      closed = true;
      if (ownsPool) await db.end();
    },
  };
}
