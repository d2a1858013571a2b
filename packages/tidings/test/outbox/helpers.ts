/**
 * Fixtures of the outbox and inbox tests: a database of each dialect on the real servers (a schema of its own on
 * PostgreSQL, a table prefix of its own on MariaDB, a temporary file for SQLite), with a transaction helper and a
 * cleanup that drops everything the test made.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import mysql2 from 'mysql2/promise';
import pg from 'pg';
import { z } from 'zod';
import { defineEvent } from '../../src/index.js';
import {
  createOutbox,
  mysql,
  postgres,
  sqlite,
  type Outbox,
  type OutboxDatabase,
  type OutboxOptions,
} from '../../src/outbox/index.js';

export const postgresUrl = process.env['TIDINGS_POSTGRES_URL'] ?? 'postgresql://postgres@127.0.0.1:5432/test';
export const mariadbUrl = process.env['TIDINGS_MARIADB_URL'] ?? 'mysql://root@127.0.0.1:3306/test';

export type DialectName = 'postgres' | 'mysql' | 'sqlite';

export const OrderPlaced = defineEvent('OrderPlaced', {
  schema: z.object({ orderId: z.string(), n: z.number().int(), note: z.string().optional() }),
  key: 'orderId',
  topic: 'orders',
});

/** A database of one dialect for one test. */
export interface TestDb {
  dialect: DialectName;
  database: OutboxDatabase;
  /** A table name unique to this fixture. */
  table(name: string): string;
  /** Runs `fn` inside a transaction and commits, or rolls back when it throws or returns 'rollback'. */
  tx<T>(
    fn: (tx: unknown, q: (sql: string, params?: unknown[]) => Promise<unknown[]>) => Promise<T>,
  ): Promise<T>;
  /** Runs `fn` in a transaction that is rolled back. */
  rolledBack(fn: (tx: unknown) => Promise<unknown>): Promise<void>;
  /** One statement outside any transaction. */
  query(sql: string, params?: unknown[]): Promise<Record<string, unknown>[]>;
  /** A second database object over the same data, without a pool (producers that only enqueue). */
  withoutPool(): OutboxDatabase;
  close(): Promise<void>;
}

const toDollar = (sql: string) => {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
};

export async function openTestDb(dialect: DialectName): Promise<TestDb> {
  const id = randomBytes(4).toString('hex');
  if (dialect === 'postgres') {
    const schema = `tidings_outbox_t_${id}`;
    const pool = new pg.Pool({ connectionString: postgresUrl, max: 5 });
    pool.on('error', () => undefined); // idle clients whose backend a test terminated
    await pool.query(`CREATE SCHEMA ${schema}`);
    return {
      dialect,
      database: postgres(pool),
      table: (name) => `${schema}.${name}`,
      async tx(fn) {
        const client = await pool.connect();
        try {
          await client.query('BEGIN');
          const result = await fn(
            client,
            async (sql, params = []) => (await client.query(toDollar(sql), params)).rows as unknown[],
          );
          await client.query('COMMIT');
          return result;
        } catch (error) {
          await client.query('ROLLBACK');
          throw error;
        } finally {
          client.release();
        }
      },
      async rolledBack(fn) {
        const client = await pool.connect();
        try {
          await client.query('BEGIN');
          await fn(client);
        } finally {
          await client.query('ROLLBACK');
          client.release();
        }
      },
      query: async (sql, params = []) =>
        (await pool.query(toDollar(sql), params)).rows as Record<string, unknown>[],
      withoutPool: () => postgres(),
      async close() {
        await pool.query(`DROP SCHEMA ${schema} CASCADE`);
        await pool.end();
      },
    };
  }
  if (dialect === 'mysql') {
    const prefix = `tidings_ob_${id}_`;
    const pool = mysql2.createPool({ uri: mariadbUrl, connectionLimit: 5 });
    const made = new Set<string>();
    return {
      dialect,
      database: mysql(pool),
      table(name) {
        made.add(`${prefix}${name}`);
        made.add(`${prefix}${name}_locks`);
        return `${prefix}${name}`;
      },
      async tx(fn) {
        const conn = await pool.getConnection();
        try {
          await conn.query('START TRANSACTION');
          const result = await fn(
            conn,
            async (sql, params = []) => (await conn.query(sql, params))[0] as unknown[],
          );
          await conn.query('COMMIT');
          return result;
        } catch (error) {
          await conn.query('ROLLBACK');
          throw error;
        } finally {
          conn.release();
        }
      },
      async rolledBack(fn) {
        const conn = await pool.getConnection();
        try {
          await conn.query('START TRANSACTION');
          await fn(conn);
        } finally {
          await conn.query('ROLLBACK');
          conn.release();
        }
      },
      query: async (sql, params = []) => {
        const [rows] = await pool.query(sql, params);
        return Array.isArray(rows) ? (rows as Record<string, unknown>[]) : [];
      },
      withoutPool: () => mysql(),
      async close() {
        for (const name of made) await pool.query(`DROP TABLE IF EXISTS \`${name}\``);
        await pool.end();
      },
    };
  }
  const dir = mkdtempSync(join(tmpdir(), 'tidings-outbox-test-'));
  const db = new Database(join(dir, 'app.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('busy_timeout = 5000');
  const q = (sql: string, params: unknown[] = []) =>
    new Promise<Record<string, unknown>[]>((resolve) => {
      const statement = db.prepare(sql);
      if (statement.reader) resolve(statement.all(...params) as Record<string, unknown>[]);
      else resolve((statement.run(...params), []));
    });
  return {
    dialect,
    database: sqlite(db),
    table: (name) => name,
    async tx(fn) {
      db.exec('BEGIN IMMEDIATE');
      try {
        const result = await fn(db, q);
        db.exec('COMMIT');
        return result;
      } catch (error) {
        db.exec('ROLLBACK');
        throw error;
      }
    },
    async rolledBack(fn) {
      db.exec('BEGIN IMMEDIATE');
      try {
        await fn(db);
      } finally {
        db.exec('ROLLBACK');
      }
    },
    query: q,
    withoutPool: () => sqlite(),
    close() {
      db.close();
      rmSync(dir, { recursive: true, force: true });
      return Promise.resolve();
    },
  };
}

/** A business table `orders (id, n)` in the fixture's database. */
/**
 * A test database of `dialect` (pushed onto `opened`, for the caller to close) with an outbox table of its own,
 * created with `options`.
 */
export async function openOutbox(
  opened: TestDb[],
  dialect: DialectName,
  options: Partial<OutboxOptions> = {},
): Promise<{ db: TestDb; outbox: Outbox }> {
  const db = await openTestDb(dialect);
  opened.push(db);
  const outbox = createOutbox({
    database: db.database,
    table: db.table('outbox'),
    service: 'shop',
    ...options,
  });
  await outbox.setup();
  return { db, outbox };
}

export async function createOrdersTable(db: TestDb): Promise<string> {
  const name = db.table('orders');
  const quoted = db.dialect === 'mysql' ? `\`${name}\`` : name;
  await db.query(`CREATE TABLE ${quoted} (id VARCHAR(100) NOT NULL, n INTEGER NOT NULL)`);
  return quoted;
}
