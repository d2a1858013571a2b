/**
 * The embedded log's SQLite database: locating and creating the data directory, opening `log.db` in WAL mode, the
 * schema, and turning SQLite's failures into TidingsErrors that say what to do.
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';
import { ErrorCode, TidingsError } from '../core/errors.js';

export type Database = BetterSqlite3.Database;

/** The file name of the database inside the data directory. */
export const databaseFileName = 'log.db';

/** The schema version this code writes; a database with a newer one is refused. */
export const schemaVersion = 1;

/**
 * The schema. One row per stored record batch (Kafka RecordBatch v2 blob), never one row per record.
 *
 * - `topics`: name, partition count, retention.
 * - `partitions`: one row per topic partition with the next offset to assign (read and bumped inside every append
 *   transaction, so two processes never assign the same offset), the first stored offset, the stored record bytes
 *   (what `retentionBytes` counts) and the running maximum record timestamp.
 * - `batches`: `(pid, base_offset)` → the batch blob, its last offset, its own max timestamp (age retention), the
 *   running max timestamp (time lookups: monotonic per partition, so binary-searched over the primary key; no
 *   second index to write on every append) and its record bytes.
 * - `consumer_groups`, `members`, `group_partitions`: membership with leases, and per group partition the committed
 *   offset, the owning member and the ownership epoch that fences stale owners (see `transport.ts`).
 * - `parked_keys`, `parked_events`, `inbox`, `operator_requests`: the durable stores (`stores.ts`).
 */
const schema = `
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS topics (
  name TEXT PRIMARY KEY,
  partitions INTEGER NOT NULL,
  retention_ms INTEGER,
  retention_bytes INTEGER,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS partitions (
  pid INTEGER PRIMARY KEY,
  topic TEXT NOT NULL,
  partition INTEGER NOT NULL,
  next_offset INTEGER NOT NULL,
  low_offset INTEGER NOT NULL,
  stored_bytes INTEGER NOT NULL,
  max_timestamp INTEGER NOT NULL,
  UNIQUE (topic, partition)
);

CREATE TABLE IF NOT EXISTS batches (
  pid INTEGER NOT NULL,
  base_offset INTEGER NOT NULL,
  last_offset INTEGER NOT NULL,
  max_timestamp INTEGER NOT NULL,
  running_max_timestamp INTEGER NOT NULL,
  record_bytes INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (pid, base_offset)
);

CREATE TABLE IF NOT EXISTS consumer_groups (
  name TEXT PRIMARY KEY,
  version INTEGER NOT NULL,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS members (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  group_name TEXT NOT NULL,
  member_id TEXT NOT NULL UNIQUE,
  topics TEXT NOT NULL,
  host TEXT NOT NULL,
  process_id INTEGER NOT NULL,
  joined_at INTEGER NOT NULL,
  lease_until INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS members_by_group ON members (group_name, seq);

CREATE TABLE IF NOT EXISTS group_partitions (
  group_name TEXT NOT NULL,
  topic TEXT NOT NULL,
  partition INTEGER NOT NULL,
  committed INTEGER,
  owner TEXT,
  epoch INTEGER NOT NULL DEFAULT 0,
  delivered_high INTEGER,
  carry TEXT,
  PRIMARY KEY (group_name, topic, partition)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS parked_keys (
  group_name TEXT NOT NULL,
  topic TEXT NOT NULL,
  key TEXT NOT NULL,
  error TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  parked_at INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  event_count INTEGER NOT NULL,
  next_event_seq INTEGER NOT NULL,
  PRIMARY KEY (group_name, topic, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS parked_keys_by_age ON parked_keys (group_name, parked_at, seq);

CREATE TABLE IF NOT EXISTS parked_events (
  group_name TEXT NOT NULL,
  topic TEXT NOT NULL,
  key TEXT NOT NULL,
  seq INTEGER NOT NULL,
  partition INTEGER NOT NULL,
  offset INTEGER NOT NULL,
  headers TEXT NOT NULL,
  value BLOB NOT NULL,
  timestamp INTEGER NOT NULL,
  parked_at INTEGER NOT NULL,
  PRIMARY KEY (group_name, topic, key, seq)
);

CREATE TABLE IF NOT EXISTS inbox (
  seq INTEGER PRIMARY KEY,
  group_name TEXT NOT NULL,
  event_id TEXT NOT NULL,
  added_at INTEGER NOT NULL,
  UNIQUE (group_name, event_id)
);
CREATE INDEX IF NOT EXISTS inbox_by_age ON inbox (added_at);
CREATE INDEX IF NOT EXISTS inbox_by_group ON inbox (group_name, seq);

CREATE TABLE IF NOT EXISTS operator_requests (
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  group_name TEXT NOT NULL,
  topic TEXT NOT NULL,
  key TEXT NOT NULL,
  kind TEXT NOT NULL,
  dead_letter_id TEXT,
  requested_at INTEGER NOT NULL,
  outcome_ok INTEGER,
  outcome_message TEXT,
  completed_at INTEGER
);
CREATE INDEX IF NOT EXISTS operator_requests_pending ON operator_requests (group_name, completed_at, seq);
`;

type DatabaseConstructor = typeof BetterSqlite3;

let loadedDriver: DatabaseConstructor | undefined;

/** better-sqlite3, loaded on first use so that a missing optional peer dependency gives a clear error. */
function driver(): DatabaseConstructor {
  if (loadedDriver !== undefined) return loadedDriver;
  try {
    const require = createRequire(import.meta.url);
    loadedDriver = require('better-sqlite3') as DatabaseConstructor;
    return loadedDriver;
  } catch (error) {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `The embedded log (tidings/log) needs the better-sqlite3 package (version 12), which could not be loaded: ` +
        `${(error as Error).message}. Install it with 'npm install better-sqlite3@12'.`,
      { cause: error },
    );
  }
}

export interface OpenOptions {
  dataDir: string;
  createIfMissing: boolean;
  /** How long opening waits for a lock held by another process (schema creation, WAL recovery). */
  busyTimeoutMs: number;
}

/**
 * Opens (creating if allowed) the data directory and its database, in WAL mode with the schema in place. The
 * connection comes back with `busy_timeout = 0`: the transport never lets SQLite sleep on the event loop thread; it
 * retries busy writes asynchronously (see `write-queue.ts`).
 */
export function openDatabase(options: OpenOptions): Database {
  const { dataDir } = options;
  const file = path.join(dataDir, databaseFileName);
  prepareDirectory(dataDir, options.createIfMissing);
  if (!options.createIfMissing && !fs.existsSync(file)) {
    throw new TidingsError(
      ErrorCode.NOT_FOUND,
      `The data directory ${dataDir} holds no Tidings log (${databaseFileName} is missing). Point dataDir (or ` +
        `TIDINGS_DATA_DIR, or --data-dir) at the directory your services write to, or create the log by starting ` +
        `a service with createIfMissing: true.`,
      { dataDir },
    );
  }
  const Database = driver();
  let db: Database;
  try {
    db = new Database(file, { fileMustExist: !options.createIfMissing, timeout: options.busyTimeoutMs });
  } catch (error) {
    throw openError(error, dataDir, file);
  }
  try {
    const mode = db.pragma('journal_mode = WAL', { simple: true });
    if (String(mode).toLowerCase() !== 'wal') {
      throw new TidingsError(
        ErrorCode.TRANSPORT_UNAVAILABLE,
        `The log database ${file} cannot use write-ahead logging (journal mode stayed '${String(mode)}'); ` +
          `WAL needs a local file system with shared memory. Put the data directory on a local disk.`,
        { dataDir, retryable: false },
      );
    }
    // Checkpoint every ~16 MiB of WAL rather than 4 MiB (fewer checkpoint stalls under load), and truncate the
    // WAL file back to 64 MiB after a checkpoint so that it does not stay at its high-water size.
    db.pragma('wal_autocheckpoint = 4000');
    db.pragma('journal_size_limit = 67108864');
    // Commits write the WAL without syncing it; the write queue fdatasyncs the WAL before durable writes complete
    // (see write-queue.ts). Checkpoints still sync the WAL before copying it and the database file after.
    db.pragma('synchronous = NORMAL');
    db.pragma('temp_store = MEMORY');
    // An 8 MiB page cache (better-sqlite3 builds with 16 MiB): consumers read sequentially and writers append, so a
    // larger cache buys little and costs resident memory in every process.
    db.pragma('cache_size = -8192');
    db.exec('BEGIN IMMEDIATE');
    try {
      db.exec(schema);
      const row = db.prepare('SELECT value FROM meta WHERE key = ?').get('schema_version') as
        { value: string } | undefined;
      if (row === undefined) {
        db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run(
          'schema_version',
          String(schemaVersion),
        );
      } else if (Number(row.value) > schemaVersion) {
        throw new TidingsError(
          ErrorCode.INVALID_CONFIG,
          `The log database ${file} has schema version ${row.value}, newer than this version of Tidings ` +
            `understands (${schemaVersion}). Upgrade Tidings in this service to the version that wrote it.`,
          { dataDir },
        );
      }
      db.exec('COMMIT');
    } catch (error) {
      if (db.inTransaction) db.exec('ROLLBACK');
      throw error;
    }
    db.pragma('busy_timeout = 0');
  } catch (error) {
    db.close();
    if (error instanceof TidingsError) throw error;
    throw openError(error, dataDir, file);
  }
  return db;
}

function prepareDirectory(dataDir: string, createIfMissing: boolean): void {
  let stat: fs.Stats | undefined;
  try {
    stat = fs.statSync(dataDir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw directoryError(error, dataDir);
  }
  if (stat === undefined) {
    if (!createIfMissing) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `The data directory ${dataDir} does not exist. Point dataDir (or TIDINGS_DATA_DIR, or --data-dir) at the ` +
          `directory your services write to, or create the log by starting a service with createIfMissing: true.`,
        { dataDir },
      );
    }
    try {
      fs.mkdirSync(dataDir, { recursive: true });
    } catch (error) {
      throw directoryError(error, dataDir);
    }
    return;
  }
  if (!stat.isDirectory()) {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `The data directory ${dataDir} is a file, not a directory. Choose another dataDir.`,
      { dataDir },
    );
  }
  try {
    fs.accessSync(dataDir, fs.constants.W_OK | fs.constants.R_OK);
  } catch (error) {
    throw directoryError(error, dataDir);
  }
}

function directoryError(error: unknown, dataDir: string): TidingsError {
  const code = (error as NodeJS.ErrnoException).code;
  return new TidingsError(
    ErrorCode.TRANSPORT_UNAVAILABLE,
    `The data directory ${dataDir} cannot be created or written (${code ?? (error as Error).message}). Give this ` +
      `process write access to it (and its parent), or choose another dataDir / TIDINGS_DATA_DIR.`,
    { dataDir, cause: error, retryable: false },
  );
}

function openError(error: unknown, dataDir: string, file: string): TidingsError {
  const code = sqliteCode(error);
  if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') return lockedError(file, undefined, error);
  if (code === 'SQLITE_CANTOPEN' || code === 'SQLITE_READONLY' || code?.startsWith('SQLITE_READONLY_')) {
    return new TidingsError(
      ErrorCode.TRANSPORT_UNAVAILABLE,
      `The log database ${file} cannot be opened for writing (${code}). Give this process write access to the ` +
        `data directory ${dataDir} and the files in it (log.db, log.db-wal, log.db-shm), or choose another dataDir.`,
      { dataDir, cause: error, retryable: false },
    );
  }
  if (code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB') {
    return new TidingsError(
      ErrorCode.TRANSPORT_UNAVAILABLE,
      `The file ${file} is not a valid Tidings log database (${code}). Move it aside and start with an empty ` +
        `data directory, or restore it from a backup.`,
      { dataDir, cause: error, retryable: false },
    );
  }
  return new TidingsError(
    ErrorCode.TRANSPORT_UNAVAILABLE,
    `Opening the log database ${file} failed: ${(error as Error).message}.`,
    { dataDir, cause: error, retryable: false },
  );
}

/** The error for a write lock another process held for longer than the busy timeout. */
export function lockedError(file: string, waitedMs: number | undefined, cause?: unknown): TidingsError {
  return new TidingsError(
    ErrorCode.TRANSPORT_UNAVAILABLE,
    `The log database ${file} is locked by another process` +
      (waitedMs === undefined ? '' : ` (waited ${Math.round(waitedMs)} ms for its write lock)`) +
      `; nothing was written. Another process holds a long write transaction on it: find it (for example with ` +
      `'fuser ${file}') and let it finish or stop it, or raise busyTimeoutMs. Retrying later may succeed.`,
    { retryable: true, cause },
  );
}

/** The SQLite result code of a better-sqlite3 error (`SQLITE_BUSY`, ...), if it is one. */
export function sqliteCode(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && code.startsWith('SQLITE_') ? code : undefined;
}

/** True for SQLite's "try again later" errors. */
export function isBusy(error: unknown): boolean {
  const code = sqliteCode(error);
  return code !== undefined && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'));
}
