/**
 * Where the outbox and inbox keep their rows: a database of one dialect, with (optionally) a way to open sessions of
 * their own for the relay, table setup and clean-up. Producers that only enqueue inside their own transactions may
 * pass no pool; a relay needs one. No driver is imported here: the pool's own methods are called.
 */
import { ErrorCode, TidingsError } from '../core/errors.js';
import {
  runSqliteSync,
  runnerFor,
  settle,
  type Dialect,
  type SqlRunner,
  type SqliteDatabaseLike,
} from './sql.js';

/** A session on the database: statements, notifications (PostgreSQL) and release. */
export interface DatabaseSession {
  run: SqlRunner;
  /** The driver's own object behind the session (a pg client, a mysql2 connection, a better-sqlite3 database). */
  handle: unknown;
  /** Calls `onNotify` for each NOTIFY on `channel` (PostgreSQL only; elsewhere undefined). */
  listen?(channel: string, onNotify: () => void): Promise<void>;
  /**
   * Gives the session back. With `broken`, the connection is destroyed instead of reused, which also frees any
   * session-level lock it held.
   */
  release(broken: boolean): Promise<void>;
}

/** A database for the outbox and inbox: its dialect and, when a pool was given, sessions of its own. */
export interface OutboxDatabase {
  readonly dialect: Dialect;
  /** Opens a session; rejects with `INVALID_CONFIG` when the database was created without a pool. */
  session(purpose: string): Promise<DatabaseSession>;
  /** Whether {@link OutboxDatabase.session} can open sessions (a pool or database was given). */
  readonly hasSessions: boolean;
  /** Runs `fn` in a transaction of a session of its own (BEGIN ... COMMIT, or ROLLBACK when `fn` throws). */
  transaction<T>(purpose: string, fn: (tx: unknown) => Promise<T>): Promise<T>;
}

/** The part of a `pg` client used here. */
export interface PgClientLike {
  query(text: string, values?: unknown[]): Promise<{ rows: unknown[]; rowCount: number | null }>;
  on?(event: 'notification' | 'error', listener: (message: { channel: string }) => void): unknown;
  removeListener?(event: 'notification' | 'error', listener: (message: { channel: string }) => void): unknown;
}

/** The part of a `pg` Pool used here: `connect()` lends a client, `release(err)` returns or destroys it. */
export interface PgPoolLike {
  connect(): Promise<PgClientLike & { release(destroy?: boolean | Error): void }>;
}

/** The part of a `mysql2/promise` connection used here. */
export interface MysqlConnectionLike {
  query(sql: string, values?: unknown[]): Promise<[unknown, unknown]>;
}

/** The part of a `mysql2/promise` Pool used here. */
export interface MysqlPoolLike {
  getConnection(): Promise<MysqlConnectionLike & { release(): void; destroy(): void }>;
}

function noPool(dialect: Dialect, purpose: string): TidingsError {
  const how = {
    postgres: 'postgres(pool) with a pg Pool',
    mysql: 'mysql(pool) with a mysql2/promise Pool',
    sqlite: 'sqlite(db) with a better-sqlite3 Database',
  }[dialect];
  return new TidingsError(
    ErrorCode.INVALID_CONFIG,
    `${purpose} needs a connection of its own: create the database with ${how}`,
  );
}

/**
 * `OutboxDatabase.transaction` over sessions of a pool (PostgreSQL, MariaDB/MySQL): opens a session, runs `begin`,
 * `fn` with the driver's object, then COMMIT, or ROLLBACK when `fn` throws; a session that failed anywhere is
 * destroyed rather than reused.
 */
async function sessionTransaction<T>(
  open: (purpose: string) => Promise<DatabaseSession>,
  purpose: string,
  begin: string,
  fn: (tx: unknown) => Promise<T>,
): Promise<T> {
  const session = await open(purpose);
  let broken = false;
  try {
    await session.run(begin, []);
    let result: T;
    try {
      result = await fn(session.handle);
    } catch (error) {
      await session.run('ROLLBACK', []).catch(() => undefined);
      throw error;
    }
    await session.run('COMMIT', []);
    return result;
  } catch (error) {
    broken = true;
    throw error;
  } finally {
    await session.release(broken);
  }
}

/**
 * A PostgreSQL database (the `pg` driver). `pool` (a `pg.Pool`) is needed by the relay, `setup()`, `status()` and
 * inbox clean-up; enqueueing inside your own transactions needs none.
 */
export function postgres(pool?: PgPoolLike): OutboxDatabase {
  const session = async (purpose: string): Promise<DatabaseSession> => {
    if (!pool) throw noPool('postgres', purpose);
    const client = await pool.connect();
    const listeners: Array<(message: { channel: string }) => void> = [];
    // A connection lost while the session holds the client emits 'error' on it; without a listener that would end
    // the process. The next statement fails instead, and its owner (e.g. the relay) opens a new session.
    const onError = () => undefined;
    client.on?.('error', onError);
    return {
      run: runnerFor(client, 'postgres', purpose, 'none'),
      handle: client,
      async listen(channel, onNotify) {
        const listener = (message: { channel: string }) => {
          if (message.channel === channel) onNotify();
        };
        client.on?.('notification', listener);
        listeners.push(listener);
        await client.query(`LISTEN "${channel}"`);
      },
      async release(broken) {
        for (const listener of listeners.splice(0)) client.removeListener?.('notification', listener);
        client.removeListener?.('error', onError);
        if (!broken) {
          try {
            await client.query('UNLISTEN *');
          } catch {
            broken = true;
          }
        }
        client.release(broken ? true : undefined);
      },
    };
  };
  const database: OutboxDatabase = {
    dialect: 'postgres',
    hasSessions: pool !== undefined,
    session,
    transaction: (purpose, fn) => sessionTransaction(session, purpose, 'BEGIN', fn),
  };
  return database;
}

/**
 * A MariaDB or MySQL database (the `mysql2/promise` driver). `pool` (from `mysql2/promise`'s `createPool`) is needed
 * by the relay, `setup()`, `status()` and inbox clean-up; enqueueing inside your own transactions needs none.
 */
export function mysql(pool?: MysqlPoolLike): OutboxDatabase {
  const session = async (purpose: string): Promise<DatabaseSession> => {
    if (!pool) throw noPool('mysql', purpose);
    const connection = await pool.getConnection();
    return {
      run: runnerFor(connection, 'mysql', purpose, 'none'),
      handle: connection,
      release(broken) {
        if (broken) connection.destroy();
        else connection.release();
        return Promise.resolve();
      },
    };
  };
  return {
    dialect: 'mysql',
    hasSessions: pool !== undefined,
    session,
    transaction: (purpose, fn) => sessionTransaction(session, purpose, 'START TRANSACTION', fn),
  };
}

/** How long a SQLite session waits for a transaction open on the shared connection to end. */
const sqliteIdleTimeoutMs = 60_000;

/**
 * A SQLite database (the `better-sqlite3` driver). `db` is needed by the relay, `setup()`, `status()` and inbox
 * clean-up; open it in WAL mode with a busy timeout when several processes share the file.
 *
 * better-sqlite3 has one connection per `Database`, and a transaction belongs to the connection, not to the code
 * that began it. So the relay, `setup()`, `status()`, the purge and `inbox.transaction` run their statements only
 * while no transaction is open on `db`, checked in the same synchronous step as the statement: a relay sharing your
 * connection never reads rows of your uncommitted transaction nor joins it, and `inbox.transaction` calls from
 * concurrent handlers take turns.
 */
export function sqlite(db?: SqliteDatabaseLike): OutboxDatabase {
  /** Runs `fn` synchronously as soon as no transaction is open on `db`. */
  const whenIdle = async <T>(database: SqliteDatabaseLike, purpose: string, fn: () => T): Promise<T> => {
    const deadline = performance.now() + sqliteIdleTimeoutMs;
    while (database.inTransaction === true) {
      if (performance.now() > deadline)
        throw new TidingsError(
          ErrorCode.TIMEOUT,
          `${purpose}: a transaction stayed open on the SQLite connection for ${sqliteIdleTimeoutMs / 1000} s; ` +
            'commit or roll back your transactions, or give tidings/outbox a Database object of its own',
        );
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    return fn();
  };
  const session = (purpose: string): Promise<DatabaseSession> =>
    settle(() => {
      if (!db) throw noPool('sqlite', purpose);
      return {
        run: (sql, params) => whenIdle(db, purpose, () => runSqliteSync(db, sql, params)),
        handle: db,
        release: () => Promise.resolve(),
      };
    });
  return {
    dialect: 'sqlite',
    hasSessions: db !== undefined,
    session,
    async transaction(purpose, fn) {
      if (!db) throw noPool('sqlite', purpose);
      // BEGIN IMMEDIATE takes the write lock at once, so the transaction cannot fail to upgrade later.
      await whenIdle(db, purpose, () => runSqliteSync(db, 'BEGIN IMMEDIATE', []));
      let result: Awaited<ReturnType<typeof fn>>;
      try {
        result = await fn(db);
      } catch (error) {
        if (db.inTransaction !== false) runSqliteSync(db, 'ROLLBACK', []);
        throw error;
      }
      runSqliteSync(db, 'COMMIT', []);
      return result;
    },
  };
}
