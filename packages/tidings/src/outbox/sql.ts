/**
 * Running SQL on whatever the caller holds: a `pg` client, a `mysql2/promise` connection, a `better-sqlite3`
 * database, a Kysely transaction, or a Drizzle transaction wrapped with {@link fromDrizzle}. Statements are written
 * with `?` placeholders; PostgreSQL's `$1, $2, ...` are produced here. No driver is imported: the objects' own
 * methods are called.
 */
import { ErrorCode, TidingsError } from '../core/errors.js';

/** The dialects the outbox and inbox speak. */
export type Dialect = 'postgres' | 'mysql' | 'sqlite';

/** What a statement returned: its rows (empty for writes) and the rows it changed. */
export interface SqlResult {
  rows: Record<string, unknown>[];
  affected: number;
}

/** Runs one statement (with `?` placeholders) and resolves with its result. */
export type SqlRunner = (sql: string, params: readonly unknown[]) => Promise<SqlResult>;

const runnerBrand = Symbol.for('tidings.outbox.sqlRunner');

/** A transaction handle made by an adapter ({@link fromDrizzle}, {@link fromKysely}): the outbox and inbox accept it. */
export interface AdaptedTransaction {
  readonly dialect: Dialect;
  readonly [runnerBrand]: SqlRunner;
}

/** Turns `?` placeholders into PostgreSQL's `$1, $2, ...` (the statements here never contain a literal `?`). */
export function toPostgresPlaceholders(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

const affectedOf = (value: unknown): number => {
  const n = Number(value ?? 0);
  return Number.isFinite(n) ? n : 0;
};

type AnyFn = (...args: unknown[]) => unknown;
const fn = (value: unknown, name: string): AnyFn | undefined => {
  const candidate = (value as Record<string, unknown> | null | undefined)?.[name];
  return typeof candidate === 'function' ? (candidate as AnyFn).bind(value) : undefined;
};

/** Prepared better-sqlite3 statements per database, reused across calls. */
const sqliteStatements = new WeakMap<object, Map<string, SqliteStatementLike>>();

/** The part of a better-sqlite3 statement used here. */
export interface SqliteStatementLike {
  readonly reader: boolean;
  run(...params: unknown[]): { changes: number | bigint };
  all(...params: unknown[]): unknown[];
}

/** The part of a better-sqlite3 `Database` used here. */
export interface SqliteDatabaseLike {
  prepare(sql: string): SqliteStatementLike;
  readonly inTransaction?: boolean;
}

/** Runs a synchronous function and settles a promise with its result or its exception. */
export function settle<T>(fn: () => T): Promise<T> {
  return new Promise((resolve) => resolve(fn()));
}

/** Runs a statement on a better-sqlite3 database, synchronously (for `enqueueSync` / `handleSync`). */
export function runSqliteSync(db: SqliteDatabaseLike, sql: string, params: readonly unknown[]): SqlResult {
  let cache = sqliteStatements.get(db);
  if (!cache) sqliteStatements.set(db, (cache = new Map<string, SqliteStatementLike>()));
  let statement = cache.get(sql);
  if (!statement) {
    statement = db.prepare(sql);
    if (cache.size >= 200) cache.clear(); // bounded; the outbox and inbox use a handful of statements
    cache.set(sql, statement);
  }
  const values = params.map((p) => (typeof p === 'boolean' ? Number(p) : p));
  if (statement.reader) return { rows: statement.all(...values) as Record<string, unknown>[], affected: 0 };
  return { rows: [], affected: affectedOf(statement.run(...values).changes) };
}

/**
 * Runs `remove(chunk)` (a DELETE of at most `chunk` rows) while it removes a full chunk, for at most `budgetMs` of
 * real time, yielding to the event loop between chunks. Resolves with how many rows it removed and whether more may
 * remain (the budget ran out on a full chunk).
 */
export async function purgeInChunks(
  remove: (chunk: number) => Promise<{ affected: number }>,
  chunk: number,
  budgetMs: number,
): Promise<{ removed: number; more: boolean }> {
  const started = performance.now();
  let removed = 0;
  for (;;) {
    const { affected } = await remove(chunk);
    removed += affected;
    if (affected < chunk) return { removed, more: false };
    if (performance.now() - started >= budgetMs) return { removed, more: true };
    await new Promise((resolve) => setImmediate(resolve));
  }
}

function notInTransaction(where: string, dialect: 'postgres' | 'sqlite'): TidingsError {
  const how =
    dialect === 'sqlite'
      ? 'call it between BEGIN and COMMIT on that Database, or inside db.transaction(() => ...) with ' +
        'outbox.enqueueSync / inbox.handleSync'
      : "call it on a client from pool.connect() after await client.query('BEGIN'), then COMMIT";
  return new TidingsError(
    ErrorCode.INVALID_CONFIG,
    `${where}: no transaction is open on the ${dialect === 'sqlite' ? 'better-sqlite3 Database' : 'pg client'}, ` +
      `so the write would commit on its own, apart from your changes; ${how}`,
  );
}

/**
 * Throws `INVALID_CONFIG` unless a transaction is open on the better-sqlite3 `db`: in autocommit an outbox row would
 * commit without the business write, and an inbox record without the handler's effects.
 */
export function requireSqliteTransaction(db: SqliteDatabaseLike, where: string): void {
  if (db.inTransaction !== true) throw notInTransaction(where, 'sqlite');
}

function wrong(dialect: Dialect, where: string, got: unknown): TidingsError {
  const expected = {
    postgres:
      'a pg client inside BEGIN/COMMIT (pool.connect()), a Kysely transaction, or fromDrizzle(tx, sql)',
    mysql:
      'a mysql2/promise connection inside a transaction (pool.getConnection() + beginTransaction()), a Kysely transaction, or fromDrizzle(tx, sql)',
    sqlite: 'a better-sqlite3 Database inside a transaction, a Kysely transaction, or fromDrizzle(tx, sql)',
  }[dialect];
  return new TidingsError(
    ErrorCode.INVALID_CONFIG,
    `${where}: the transaction argument must be ${expected}; got ${got === null ? 'null' : typeof got}`,
  );
}

/**
 * A runner for the caller's transaction handle `tx` in `dialect`. Recognises, in this order: an adapted handle
 * ({@link fromDrizzle}, {@link fromKysely}), a Kysely transaction (`executeQuery`), then the dialect's driver object.
 *
 * With `transaction: 'required'` (the default, for `enqueue` and `inbox.handle`), each statement first checks, where
 * the driver tells without a round trip, that a transaction is open on `tx`, and rejects with `INVALID_CONFIG`
 * otherwise: a better-sqlite3 `Database` must be `inTransaction`, a pg client (pg 8 with `getTransactionStatus()`)
 * must not be idle. MariaDB/MySQL connections, Kysely and Drizzle transactions expose no such state and are not
 * checked. `'none'` is for sessions of the outbox's own (relay, setup, purge).
 *
 * @throws {TidingsError} `INVALID_CONFIG` when `tx` is none of these.
 */
export function runnerFor(
  tx: unknown,
  dialect: Dialect,
  where: string,
  transaction: 'required' | 'none' = 'required',
): SqlRunner {
  const adapted = (tx as Partial<AdaptedTransaction> | null | undefined)?.[runnerBrand];
  if (typeof adapted === 'function') {
    const txDialect = (tx as AdaptedTransaction).dialect;
    if (txDialect !== dialect) {
      throw new TidingsError(
        ErrorCode.INVALID_CONFIG,
        `${where}: the transaction was adapted for ${txDialect} but this outbox or inbox uses ${dialect}`,
      );
    }
    return adapted;
  }
  if (fn(tx, 'executeQuery')) return kyselyRunner(tx, dialect);
  if (dialect === 'sqlite') {
    if (!fn(tx, 'prepare')) throw wrong(dialect, where, tx);
    const db = tx as SqliteDatabaseLike;
    return (sql, params) =>
      settle(() => {
        if (transaction === 'required') requireSqliteTransaction(db, where);
        return runSqliteSync(db, sql, params);
      });
  }
  const query = fn(tx, 'query');
  if (!query) throw wrong(dialect, where, tx);
  if (dialect === 'postgres') {
    const status = transaction === 'required' ? fn(tx, 'getTransactionStatus') : undefined;
    return async (sql, params) => {
      // pg 8.x reports the status of the last ReadyForQuery, without a round trip: 'I' is idle (no BEGIN).
      if (status?.() === 'I') throw notInTransaction(where, 'postgres');
      const result = (await query(toPostgresPlaceholders(sql), [...params])) as {
        rows?: Record<string, unknown>[];
        rowCount?: number | null;
      };
      return { rows: result.rows ?? [], affected: affectedOf(result.rowCount) };
    };
  }
  return async (sql, params) => {
    const pending = query(sql, [...params]);
    if (typeof (pending as { then?: unknown } | undefined)?.then !== 'function') {
      throw new TidingsError(
        ErrorCode.INVALID_CONFIG,
        `${where}: the mysql2 connection is callback-style; use the promise API (import from 'mysql2/promise')`,
      );
    }
    const [result] = (await pending) as [unknown, unknown];
    if (Array.isArray(result)) return { rows: result as Record<string, unknown>[], affected: 0 };
    return { rows: [], affected: affectedOf((result as { affectedRows?: unknown }).affectedRows) };
  };
}

/**
 * The part of a Kysely `Transaction` (or `Kysely`) used here: `executeQuery`, called with the shape of
 * `CompiledQuery.raw(sql, parameters)`. Typed loosely so that every Kysely version's signature fits.
 */
export interface KyselyLike {
  executeQuery(query: never, ...rest: never[]): Promise<unknown>;
}

type KyselyExecute = (query: {
  sql: string;
  parameters: readonly unknown[];
  query: unknown;
  queryId: unknown;
}) => Promise<{ rows: unknown[]; numAffectedRows?: bigint }>;

function kyselyRunner(tx: unknown, dialect: Dialect): SqlRunner {
  const db = tx as KyselyLike;
  const execute = db.executeQuery.bind(db) as unknown as KyselyExecute;
  let seq = 0;
  return async (sql, params) => {
    const text = dialect === 'postgres' ? toPostgresPlaceholders(sql) : sql;
    // The shape of Kysely's CompiledQuery.raw(sql, parameters): a RawNode holding the whole statement.
    const result = await execute({
      sql: text,
      parameters: [...params],
      query: { kind: 'RawNode', sqlFragments: [text], parameters: [] },
      queryId: { queryId: `tidings-outbox-${++seq}` },
    });
    return { rows: result.rows as Record<string, unknown>[], affected: affectedOf(result.numAffectedRows) };
  };
}

/**
 * Adapts a Kysely transaction (from `db.transaction().execute(async (trx) => ...)`) for a dialect explicitly. A Kysely
 * transaction passed directly is recognised too; this makes the dialect check explicit.
 */
export function fromKysely(trx: KyselyLike, dialect: Dialect): AdaptedTransaction {
  return { dialect, [runnerBrand]: kyselyRunner(trx, dialect) };
}

/** Drizzle's `sql` tagged template function, as imported from `drizzle-orm`. */
export type DrizzleSqlTag = (strings: TemplateStringsArray, ...params: unknown[]) => unknown;

/** The part of a Drizzle transaction used here: `execute` (PostgreSQL, MySQL) or `all` / `run` (SQLite). */
export interface DrizzleTransactionLike {
  execute?(query: unknown): Promise<unknown>;
  all?(query: unknown): unknown;
  run?(query: unknown): unknown;
}

/**
 * Adapts a Drizzle transaction (`db.transaction(async (tx) => ...)`) so that `outbox.enqueue` and `inbox.handle` run
 * inside it. Pass Drizzle's own `sql` tag (`import { sql } from 'drizzle-orm'`): statements are built with it, so
 * values travel as bound parameters. Tidings does not import Drizzle; this relies on Drizzle's documented
 * `tx.execute(sql\`...\`)` (node-postgres, mysql2) and `tx.all` / `tx.run` (better-sqlite3).
 */
export function fromDrizzle(
  tx: DrizzleTransactionLike,
  sqlTag: DrizzleSqlTag,
  dialect: Dialect,
): AdaptedTransaction {
  const build = (sql: string, params: readonly unknown[]) => {
    const strings = sql.split('?');
    const template: TemplateStringsArray = Object.assign([...strings], { raw: [...strings] });
    return sqlTag(template, ...params);
  };
  const runner: SqlRunner = async (sql, params) => {
    const query = build(sql, params);
    const isRead = /^\s*(select|with)\b/i.test(sql) || /\breturning\b/i.test(sql);
    if (dialect === 'sqlite') {
      if (isRead && tx.all) return { rows: (await tx.all(query)) as Record<string, unknown>[], affected: 0 };
      const result = (await tx.run?.(query)) as { changes?: unknown } | undefined;
      return { rows: [], affected: affectedOf(result?.changes) };
    }
    if (!tx.execute)
      throw new TidingsError(ErrorCode.INVALID_CONFIG, 'fromDrizzle: the transaction has no execute()');
    const result = await tx.execute(query);
    if (dialect === 'mysql') {
      const [first] = (Array.isArray(result) ? result : [result]) as [unknown];
      if (Array.isArray(first)) return { rows: first as Record<string, unknown>[], affected: 0 };
      return { rows: [], affected: affectedOf((first as { affectedRows?: unknown }).affectedRows) };
    }
    const pgResult = result as { rows?: Record<string, unknown>[]; rowCount?: number | null };
    return { rows: pgResult.rows ?? [], affected: affectedOf(pgResult.rowCount) };
  };
  return { dialect, [runnerBrand]: runner };
}
