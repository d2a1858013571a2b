/**
 * Opening a database from a URL, for the standalone relay (`tidings relay --database-url ...`) and scripts: the
 * driver is imported only here, on demand, so it stays an optional peer.
 *
 * - `postgres://` or `postgresql://` → `pg` (a Pool)
 * - `mysql://` or `mariadb://` → `mysql2/promise` (a Pool)
 * - `sqlite:<path>` or `file:<path>` → `better-sqlite3` (WAL, 5 s busy timeout)
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { ErrorCode, TidingsError, describeError } from '../core/errors.js';
import {
  mysql,
  postgres,
  sqlite,
  type MysqlPoolLike,
  type OutboxDatabase,
  type PgPoolLike,
} from './database.js';
import type { SqliteDatabaseLike } from './sql.js';

/** A database opened from a URL, with the way to close it. */
export interface OpenedDatabase {
  database: OutboxDatabase;
  /** The URL without its password, for messages. */
  display: string;
  close(): Promise<void>;
}

/** Hides the password of a URL. */
function redact(url: string): string {
  return url.replace(/^([a-z]+:\/\/[^:/@]*):[^@]*@/i, '$1:***@');
}

async function load<T>(name: string, url: string): Promise<T> {
  try {
    return (await import(name)) as T;
  } catch (error) {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `${redact(url)} needs the "${name}" package, which could not be loaded (${describeError(error)}); install it with npm install ${name.split('/')[0]}`,
      { cause: error },
    );
  }
}

/** Options of {@link openDatabaseUrl}. */
export interface OpenDatabaseUrlOptions {
  /** The size of the connection pool (PostgreSQL, MariaDB/MySQL); default 4. */
  poolSize?: number;
  /**
   * SQLite: reject with `NOT_FOUND` when the database file does not exist, instead of creating an empty one
   * (better-sqlite3's `fileMustExist`). Default false.
   */
  fileMustExist?: boolean;
}

/**
 * Opens the database a URL names, with a small pool (`poolSize`, default 4). Rejects with `INVALID_CONFIG` for an
 * unknown scheme or a missing driver, with `NOT_FOUND` for a missing SQLite file under `fileMustExist`, and with the
 * driver's error when the database cannot be reached (checked with one round trip).
 */
export async function openDatabaseUrl(
  url: string,
  options: OpenDatabaseUrlOptions = {},
): Promise<OpenedDatabase> {
  const display = redact(url);
  const poolSize = options.poolSize ?? 4;
  if (/^postgres(ql)?:\/\//i.test(url)) {
    const pg = await load<{
      default: {
        Pool: new (config: object) => PgPoolLike & {
          end(): Promise<void>;
          on(event: 'error', listener: () => void): unknown;
        };
      };
    }>('pg', url);
    const pool = new pg.default.Pool({ connectionString: url, max: poolSize });
    pool.on('error', () => undefined); // an idle client's lost connection: the pool replaces it
    const client = await pool.connect().catch(async (error: unknown) => {
      await pool.end().catch(() => undefined);
      throw error;
    });
    client.release();
    return { database: postgres(pool), display, close: () => pool.end() };
  }
  if (/^(mysql|mariadb):\/\//i.test(url)) {
    const driver = await load<{
      createPool(config: object): MysqlPoolLike & { end(): Promise<void> };
    }>('mysql2/promise', url);
    const pool = driver.createPool({
      uri: url.replace(/^mariadb:/i, 'mysql:'),
      connectionLimit: poolSize,
      supportBigNumbers: true,
    });
    const connection = await pool.getConnection().catch(async (error: unknown) => {
      await pool.end().catch(() => undefined);
      throw error;
    });
    connection.release();
    return { database: mysql(pool), display, close: () => pool.end() };
  }
  const file = /^sqlite:(.+)$/i.exec(url)?.[1] ?? /^file:(.+)$/i.exec(url)?.[1];
  if (file !== undefined) {
    const driver = await load<{
      default: new (
        path: string,
        options?: { fileMustExist?: boolean },
      ) => SqliteDatabaseLike & { pragma(text: string): unknown; close(): void };
    }>('better-sqlite3', url);
    const path = file.replace(/^\/\/(?=\/)/, '');
    const fileMustExist = options.fileMustExist === true;
    let db: InstanceType<typeof driver.default>;
    try {
      db = new driver.default(path, { fileMustExist });
    } catch (error) {
      // better-sqlite3 says SQLITE_CANTOPEN, or a TypeError when even the directory is missing.
      if (fileMustExist && !existsSync(path))
        throw new TidingsError(
          ErrorCode.NOT_FOUND,
          `no SQLite database file ${resolve(path)} (${display}); check the path of the URL (a relative path is ` +
            'resolved from the current directory)',
          { cause: error },
        );
      throw error;
    }
    db.pragma('journal_mode = WAL');
    db.pragma('busy_timeout = 5000');
    return { database: sqlite(db), display, close: () => Promise.resolve(db.close()) };
  }
  throw new TidingsError(
    ErrorCode.INVALID_CONFIG,
    `unsupported database URL ${display}; use postgres://..., mysql://... (or mariadb://...), or sqlite:<path>`,
  );
}
