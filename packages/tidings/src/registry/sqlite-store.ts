/**
 * The schema registry in the embedded log's data directory: `registry.db`, a SQLite database beside `log.db`, so a
 * registry lives and is backed up with the log it describes, and every process on the directory shares it.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';
import { ErrorCode, TidingsError } from '../core/errors.js';
import { defaultCompatibilityMode, isCompatibilityMode, type CompatibilityMode } from './modes.js';
import {
  promised,
  type Registration,
  type SchemaStore,
  type StoredSchema,
  type StoredVersion,
} from './store.js';

/** The registry's file inside the data directory. */
export const registryFileName = 'registry.db';

const schemaSql = `
CREATE TABLE IF NOT EXISTS registry_schemas (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  hash TEXT NOT NULL UNIQUE,
  schema TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_versions (
  subject TEXT NOT NULL,
  version INTEGER NOT NULL,
  schema_id INTEGER NOT NULL REFERENCES registry_schemas (id),
  registered_at INTEGER NOT NULL,
  PRIMARY KEY (subject, version)
);
CREATE TABLE IF NOT EXISTS registry_config (
  subject TEXT PRIMARY KEY,
  mode TEXT NOT NULL
);
`;

/** Options of {@link createSqliteSchemaStore}. */
export interface SqliteSchemaStoreOptions {
  /** The data directory (the embedded log's); created if missing. */
  dataDir: string;
  /** How long a registration waits for another process's write lock. Default 5,000 ms. */
  busyTimeoutMs?: number;
}

interface VersionRow {
  subject: string;
  version: number;
  id: number;
  schema: string;
  registered_at: number;
}

const toVersion = (row: VersionRow): StoredVersion => ({
  subject: row.subject,
  version: row.version,
  id: row.id,
  schema: row.schema,
  registeredAt: row.registered_at,
});

/** SHA-256 of the canonical text: the unique key of a schema document. */
export function schemaHash(schema: string): string {
  return createHash('sha256').update(schema).digest('hex');
}

/**
 * Opens (creating) the registry of a data directory. Needs better-sqlite3 12; throws `INVALID_CONFIG` saying how to
 * install it when it is missing, `TRANSPORT_UNAVAILABLE` when the directory cannot be written. Registrations are
 * committed with `synchronous = FULL` (durable when they resolve) and serialised across processes by SQLite's write
 * lock.
 */
export function createSqliteSchemaStore(options: SqliteSchemaStoreOptions): SchemaStore {
  const file = path.join(options.dataDir, registryFileName);
  let Database: typeof BetterSqlite3;
  try {
    Database = createRequire(import.meta.url)('better-sqlite3') as typeof BetterSqlite3;
  } catch (error) {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `the schema registry in a data directory needs better-sqlite3 12, which could not be loaded ` +
        `(${(error as Error).message}); install it with 'npm install better-sqlite3@12'`,
      { cause: error },
    );
  }
  let db: BetterSqlite3.Database | undefined;
  try {
    fs.mkdirSync(options.dataDir, { recursive: true });
    db = new Database(file, { timeout: options.busyTimeoutMs ?? 5_000 });
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.exec(schemaSql);
  } catch (error) {
    if (db?.open === true) db.close();
    throw new TidingsError(
      ErrorCode.TRANSPORT_UNAVAILABLE,
      `the schema registry ${file} cannot be opened (${(error as Error).message}); give this process write ` +
        `access to the data directory ${options.dataDir}, or choose another one`,
      { cause: error, retryable: false },
    );
  }
  const selectVersions = db.prepare<[string], VersionRow>(
    `SELECT v.subject, v.version, s.id, s.schema, v.registered_at FROM registry_versions v
     JOIN registry_schemas s ON s.id = v.schema_id WHERE v.subject = ? ORDER BY v.version`,
  );
  const selectSchemaByHash = db.prepare<[string], { id: number }>(
    'SELECT id FROM registry_schemas WHERE hash = ?',
  );
  const insertSchema = db.prepare<[string, string, number]>(
    'INSERT INTO registry_schemas (hash, schema, created_at) VALUES (?, ?, ?)',
  );
  const insertVersion = db.prepare<[string, number, number, number]>(
    'INSERT INTO registry_versions (subject, version, schema_id, registered_at) VALUES (?, ?, ?, ?)',
  );
  const selectMode = db.prepare<[string], { mode: string }>(
    'SELECT mode FROM registry_config WHERE subject = ?',
  );
  const upsertMode = db.prepare<[string, string]>(
    'INSERT INTO registry_config (subject, mode) VALUES (?, ?) ON CONFLICT (subject) DO UPDATE SET mode = excluded.mode',
  );
  const global = '';
  const readMode = (subject: string): CompatibilityMode | undefined => {
    const mode = selectMode.get(subject)?.mode;
    return isCompatibilityMode(mode) ? mode : undefined;
  };
  let closed = false;
  const open = () => {
    if (closed) throw new TidingsError(ErrorCode.CLOSED, `the schema registry ${file} is closed`);
  };

  return {
    name: `sqlite:${file}`,
    register(subject, schema, admit): Promise<Registration> {
      return promised(() => {
        open();
        const run = db.transaction((): Registration => {
          const history = selectVersions.all(subject).map(toVersion);
          const existing = history.find((version) => version.schema === schema);
          if (existing !== undefined) return { version: existing, created: false };
          admit({ history, mode: readMode(subject) ?? readMode(global) ?? defaultCompatibilityMode });
          const hash = schemaHash(schema);
          const now = Date.now();
          const id =
            selectSchemaByHash.get(hash)?.id ?? Number(insertSchema.run(hash, schema, now).lastInsertRowid);
          const version = (history.at(-1)?.version ?? 0) + 1;
          insertVersion.run(subject, version, id, now);
          return { version: { subject, version, id, schema, registeredAt: now }, created: true };
        });
        return run.immediate();
      });
    },
    subjects() {
      return promised(() => {
        open();
        return db
          .prepare<[], { subject: string }>('SELECT DISTINCT subject FROM registry_versions ORDER BY subject')
          .all()
          .map((row) => row.subject);
      });
    },
    versions(subject) {
      return promised(() => {
        open();
        return selectVersions.all(subject).map(toVersion);
      });
    },
    schemaById(id): Promise<StoredSchema | undefined> {
      return promised(() => {
        open();
        const row = db
          .prepare<[number], { id: number; schema: string }>(
            'SELECT id, schema FROM registry_schemas WHERE id = ?',
          )
          .get(id);
        return row === undefined ? undefined : { id: row.id, schema: row.schema };
      });
    },
    getMode(subject) {
      return promised(() => {
        open();
        return readMode(subject ?? global);
      });
    },
    setMode(mode, subject) {
      return promised(() => {
        open();
        upsertMode.run(subject ?? global, mode);
      });
    },
    close() {
      return promised(() => {
        if (closed) return;
        closed = true;
        db.close();
      });
    },
  };
}
