/**
 * The SQL of the outbox and inbox, per dialect: table definitions, and the statements whose text differs between
 * PostgreSQL, MariaDB/MySQL and SQLite. Statements use `?` placeholders (see `sql.ts`).
 */
import type { Dialect } from './sql.js';
import { hashInt32, type TableName } from './names.js';

/** Quotes an identifier: `"name"` (PostgreSQL, SQLite) or `` `name` `` (MariaDB/MySQL). */
export function quoteIdent(dialect: Dialect, name: string): string {
  return dialect === 'mysql' ? `\`${name}\`` : `"${name}"`;
}

/** A (possibly schema-qualified) table name, quoted. */
export function quoteTable(dialect: Dialect, table: TableName, suffix = ''): string {
  const parts = [...table.parts];
  parts[parts.length - 1] = `${table.base}${suffix}`;
  return parts.map((p) => quoteIdent(dialect, p)).join('.');
}

/** `?, ?, ?` for n values. */
export const placeholders = (n: number): string => Array.from({ length: n }, () => '?').join(', ');

/** Everything the outbox needs to know about its tables in one dialect. */
export interface OutboxStatements {
  /** Statements creating the tables and indexes if they do not exist, in order. */
  ddl: string[];
  /** Statements an enqueue runs, in order, each with its parameters (from the row). */
  enqueue(row: OutboxRowInput): Array<[string, unknown[]]>;
  /**
   * Statements enqueueing several rows at once, in item order, after taking every distinct key lock of the call in
   * ascending order (PostgreSQL: with the first of one statement per {@link enqueueChunk} rows; MariaDB/MySQL: one
   * lock-slot statement, then multi-row inserts, per {@link enqueueChunk}); SQLite: the single-row statements in
   * turn (one writer, no key locks).
   */
  enqueueMany(rows: readonly OutboxRowInput[]): Array<[string, unknown[]]>;
  /** The PostgreSQL NOTIFY channel relays listen on. */
  channel: string;
  /**
   * Lanes with unpublished rows among the oldest `limit` rows outside `excluded` lanes (those a relay backs off).
   * Parameters: the excluded lanes, then limit.
   */
  pendingLanes(excluded: number): string;
  /** Unpublished rows (seq, lane, topic, key, envelope) of the given lanes after a seq, oldest first. Parameters: lanes, seq, limit. */
  fetch(lanes: number): string;
  /** The parameters naming rows by seq (one array on PostgreSQL, one per row elsewhere). */
  seqParams(seqs: readonly number[]): unknown[];
  /** Deletes rows by seq. */
  remove(count: number): string;
  /** Marks rows published at a time (first parameter), by seq. */
  markPublished(count: number): string;
  /** Records a failed attempt: parameters error text, then seqs. */
  markFailed(count: number): string;
  /** Deletes up to `chunk` rows published before a time (parameter). */
  purgePublished(chunk: number): string;
  /** backlog, oldest created_at, max attempts, last error of unpublished rows. */
  status: string;
}

/** The values of one outbox row. */
export interface OutboxRowInput {
  eventId: string;
  topic: string;
  key: string;
  lane: number;
  envelope: string;
  createdAt: number;
  /** The key's lock: an int4 hash (PostgreSQL) or a slot number (MariaDB/MySQL). */
  keyLock: number;
}

// Unpublished rows are read in sequence order through an index on seq (partial where the database has them), the
// lanes a relay holds being a filter: a batch costs about its own size, whatever the backlog.

/** The columns of the outbox table, per dialect. */
function outboxColumns(dialect: Dialect): string {
  const [seq, text, key, envelope, big, small, int] = {
    postgres: ['bigserial PRIMARY KEY', 'text', 'text', 'text', 'bigint', 'smallint', 'integer'],
    mysql: [
      'BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY',
      'VARCHAR(255)',
      'VARCHAR(1024)',
      'LONGTEXT',
      'BIGINT',
      'SMALLINT',
      'INT',
    ],
    sqlite: ['INTEGER PRIMARY KEY AUTOINCREMENT', 'TEXT', 'TEXT', 'TEXT', 'INTEGER', 'INTEGER', 'INTEGER'],
  }[dialect];
  return (
    `seq ${seq}, event_id ${text} NOT NULL, topic ${text} NOT NULL, event_key ${key} NOT NULL, ` +
    `lane ${small} NOT NULL, envelope ${envelope} NOT NULL, created_at ${big} NOT NULL, published_at ${big} NULL, ` +
    `attempts ${int} NOT NULL DEFAULT 0, last_error ${dialect === 'mysql' ? 'TEXT' : text} NULL`
  );
}

/** The outbox's statements for `table` in `dialect`. */
export function outboxStatements(dialect: Dialect, table: TableName): OutboxStatements {
  const t = quoteTable(dialect, table);
  const q = (name: string) => quoteIdent(dialect, name);
  const lockNamespace = hashInt32(`tidings-outbox-keys:${table.text}`);
  const channel = `tidings_outbox_${(hashInt32(table.text) >>> 0).toString(16)}`;
  const seqList = (n: number) =>
    dialect === 'postgres' ? 'seq = ANY(?::bigint[])' : `seq IN (${placeholders(n)})`;
  const ddl: string[] = [];
  if (dialect === 'postgres') {
    ddl.push(
      `CREATE TABLE IF NOT EXISTS ${t} (${outboxColumns(dialect)})`,
      `CREATE INDEX IF NOT EXISTS ${q(`${table.base}_pending`)} ON ${t} (seq) WHERE published_at IS NULL`,
      `CREATE INDEX IF NOT EXISTS ${q(`${table.base}_published`)} ON ${t} (published_at) WHERE published_at IS NOT NULL`,
    );
  } else if (dialect === 'mysql') {
    ddl.push(
      `CREATE TABLE IF NOT EXISTS ${t} (${outboxColumns(dialect)}, ` +
        `INDEX ${q(`${table.base}_pending`)} (published_at, seq)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`,
      `CREATE TABLE IF NOT EXISTS ${quoteTable(dialect, table, '_locks')} ` +
        `(slot INT NOT NULL PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB`,
    );
  } else {
    const schema = table.parts.length === 2 ? `${q(table.parts[0]!)}.` : '';
    ddl.push(
      `CREATE TABLE IF NOT EXISTS ${t} (${outboxColumns(dialect)})`,
      `CREATE INDEX IF NOT EXISTS ${schema}${q(`${table.base}_pending`)} ON ${q(table.base)} (seq) ` +
        'WHERE published_at IS NULL',
      `CREATE TABLE IF NOT EXISTS ${quoteTable(dialect, table, '_lease')} ` +
        '(id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT NOT NULL, expires_at INTEGER NOT NULL)',
    );
  }
  const insertColumns = '(event_id, topic, event_key, lane, envelope, created_at)';
  const statements: OutboxStatements = {
    ddl,
    channel,
    enqueueMany(rows) {
      // Every distinct key lock of the call is taken first, in ascending order, so two transactions enqueueing the
      // same keys in different orders queue behind each other instead of deadlocking; rows go in in item order.
      const locks = [...new Set(rows.map((r) => r.keyLock))].sort((a, b) => a - b);
      if (dialect === 'sqlite') return rows.flatMap((row) => statements.enqueue(row));
      const batches: Array<[string, unknown[]]> = [];
      if (dialect === 'mysql') {
        const slots = quoteTable(dialect, table, '_locks');
        for (let i = 0; i < locks.length; i += enqueueChunk) {
          const chunk = locks.slice(i, i + enqueueChunk);
          batches.push([
            `INSERT INTO ${slots} (slot, n) VALUES ${chunk.map(() => '(?, 1)').join(', ')} ON DUPLICATE KEY UPDATE n = n + 1`,
            chunk,
          ]);
        }
        // Multi-row inserts of at most enqueueChunk rows and about 4 MB of text, well under max_allowed_packet.
        let chunk: OutboxRowInput[] = [];
        let bytes = 0;
        const flush = () => {
          if (chunk.length === 0) return;
          batches.push([
            `INSERT INTO ${t} ${insertColumns} VALUES ${chunk.map(() => `(${placeholders(6)})`).join(', ')}`,
            chunk.flatMap((r) => [r.eventId, r.topic, r.key, r.lane, r.envelope, r.createdAt]),
          ]);
          chunk = [];
          bytes = 0;
        };
        for (const row of rows) {
          const size = row.envelope.length + row.key.length + row.eventId.length + row.topic.length;
          if (chunk.length === enqueueChunk || (chunk.length > 0 && bytes + size > mysqlInsertBytes)) flush();
          chunk.push(row);
          bytes += size;
        }
        flush();
        return batches;
      }
      for (let i = 0; i < rows.length; i += enqueueChunk) {
        const chunk = rows.slice(i, i + enqueueChunk);
        batches.push([
          `WITH l AS (SELECT pg_advisory_xact_lock(?::int4, h) FROM (SELECT DISTINCT unnest(?::int4[]) AS h ORDER BY h) AS k), ` +
            `i AS (INSERT INTO ${t} ${insertColumns} SELECT e, tp, k, ln, env, c FROM unnest(?::text[], ?::text[], ?::text[], ?::smallint[], ?::text[], ?::bigint[]) ` +
            'WITH ORDINALITY AS r(e, tp, k, ln, env, c, o) WHERE (SELECT count(*) FROM l) >= 0 ORDER BY o RETURNING seq) ' +
            `SELECT pg_notify(?::text, '') FROM (SELECT 1 FROM i LIMIT 1) AS one`,
          [
            lockNamespace,
            i === 0 ? locks : [], // all of the call's locks with the first chunk (they last until commit)
            chunk.map((r) => r.eventId),
            chunk.map((r) => r.topic),
            chunk.map((r) => r.key),
            chunk.map((r) => r.lane),
            chunk.map((r) => r.envelope),
            chunk.map((r) => r.createdAt),
            channel,
          ],
        ]);
      }
      return batches;
    },
    enqueue(row) {
      const values = [row.eventId, row.topic, row.key, row.lane, row.envelope, row.createdAt];
      if (dialect === 'postgres') {
        // One round trip: the key's transaction lock (so a key's seq order is its commit order), the row, and a
        // NOTIFY that PostgreSQL delivers at commit (and coalesces within the transaction).
        return [
          [
            `WITH l AS (SELECT pg_advisory_xact_lock(?::int4, ?::int4)), ` +
              `i AS (INSERT INTO ${t} ${insertColumns} SELECT ?::text, ?::text, ?::text, ?::smallint, ?::text, ?::bigint FROM l RETURNING seq) ` +
              `SELECT pg_notify(?::text, '') FROM i`,
            [lockNamespace, row.keyLock, ...values, channel],
          ],
        ];
      }
      if (dialect === 'mysql') {
        return [
          [
            `INSERT INTO ${quoteTable(dialect, table, '_locks')} (slot, n) VALUES (?, 1) ON DUPLICATE KEY UPDATE n = n + 1`,
            [row.keyLock],
          ],
          [`INSERT INTO ${t} ${insertColumns} VALUES (${placeholders(6)})`, values],
        ];
      }
      return [[`INSERT INTO ${t} ${insertColumns} VALUES (${placeholders(6)})`, values]];
    },
    pendingLanes: (excluded) =>
      `SELECT DISTINCT lane FROM (SELECT lane FROM ${t} WHERE published_at IS NULL ` +
      `${excluded > 0 ? `AND lane NOT IN (${placeholders(excluded)}) ` : ''}ORDER BY seq LIMIT ?) AS oldest`,
    fetch: (lanes) =>
      `SELECT seq, lane, topic, event_key, envelope FROM ${t} WHERE published_at IS NULL AND lane IN (${placeholders(lanes)}) ` +
      'AND seq > ? ORDER BY seq LIMIT ?',
    seqParams: (seqs) => (dialect === 'postgres' ? [seqs] : [...seqs]),
    remove: (n) => `DELETE FROM ${t} WHERE ${seqList(n)}`,
    markPublished: (n) => `UPDATE ${t} SET published_at = ? WHERE ${seqList(n)}`,
    markFailed: (n) =>
      `UPDATE ${t} SET attempts = attempts + 1, last_error = ? WHERE ${seqList(n)} AND published_at IS NULL`,
    purgePublished: (chunk) =>
      dialect === 'mysql'
        ? `DELETE FROM ${t} WHERE published_at IS NOT NULL AND published_at < ? LIMIT ${chunk}`
        : `DELETE FROM ${t} WHERE seq IN (SELECT seq FROM ${t} WHERE published_at IS NOT NULL AND published_at < ? LIMIT ${chunk})`,
    status:
      `SELECT COUNT(*) AS backlog, MIN(created_at) AS oldest, MAX(attempts) AS attempts FROM ${t} ` +
      'WHERE published_at IS NULL',
  };
  return statements;
}

/** The most rows (or lock slots) one `enqueueMany` statement inserts. */
export const enqueueChunk = 1_000;
/** About the most characters of row text one MariaDB/MySQL `enqueueMany` insert carries. */
const mysqlInsertBytes = 4 * 1024 * 1024;

/** What the inbox needs to know about its table in one dialect. */
export interface InboxStatements {
  ddl: string[];
  /** Records (group, event id, time); affects 0 rows when the pair is recorded already. */
  insert: string;
  /** Whether (group, event id) is recorded. */
  exists: string;
  /** Deletes up to `chunk` records older than a time (parameter). */
  purge(chunk: number): string;
}

/** The inbox's statements for `table` in `dialect`. */
export function inboxStatements(dialect: Dialect, table: TableName): InboxStatements {
  const t = quoteTable(dialect, table);
  const q = (name: string) => quoteIdent(dialect, name);
  const [group, id, big] =
    dialect === 'mysql' ? ['VARCHAR(200)', 'VARCHAR(255)', 'BIGINT'] : ['TEXT', 'TEXT', 'BIGINT'];
  const columns = `group_name ${group} NOT NULL, event_id ${id} NOT NULL, handled_at ${big} NOT NULL, PRIMARY KEY (group_name, event_id)`;
  const ddl =
    dialect === 'mysql'
      ? [
          `CREATE TABLE IF NOT EXISTS ${t} (${columns}, INDEX ${q(`${table.base}_handled`)} (handled_at)) ` +
            'ENGINE=InnoDB DEFAULT CHARSET=utf8mb4',
        ]
      : [
          `CREATE TABLE IF NOT EXISTS ${t} (${columns})`,
          dialect === 'postgres'
            ? `CREATE INDEX IF NOT EXISTS ${q(`${table.base}_handled`)} ON ${t} (handled_at)`
            : `CREATE INDEX IF NOT EXISTS ${table.parts.length === 2 ? `${q(table.parts[0]!)}.` : ''}` +
              `${q(`${table.base}_handled`)} ON ${q(table.base)} (handled_at)`,
        ];
  const values = '(group_name, event_id, handled_at) VALUES (?, ?, ?)';
  return {
    ddl,
    insert:
      dialect === 'postgres'
        ? `INSERT INTO ${t} ${values} ON CONFLICT DO NOTHING`
        : dialect === 'mysql'
          ? `INSERT IGNORE INTO ${t} ${values}`
          : `INSERT OR IGNORE INTO ${t} ${values}`,
    exists: `SELECT 1 AS found FROM ${t} WHERE group_name = ? AND event_id = ?`,
    purge: (chunk) =>
      dialect === 'postgres'
        ? `DELETE FROM ${t} WHERE ctid IN (SELECT ctid FROM ${t} WHERE handled_at < ? LIMIT ${chunk})`
        : dialect === 'mysql'
          ? `DELETE FROM ${t} WHERE handled_at < ? LIMIT ${chunk}`
          : `DELETE FROM ${t} WHERE rowid IN (SELECT rowid FROM ${t} WHERE handled_at < ? LIMIT ${chunk})`,
  };
}
