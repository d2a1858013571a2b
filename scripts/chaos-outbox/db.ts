// The chaos run's databases: the producer's (orders, changes, the outbox) and the consumer's (effects, projection,
// order violations, the inbox), for PostgreSQL (two schemas), MariaDB (two table prefixes in one database) and SQLite
// (two files). Connections expose one small interface with `?` placeholders.
import { join } from 'node:path';
import Database from 'better-sqlite3';
import mysql2 from 'mysql2/promise';
import pg from 'pg';
import {
  mysql as mysqlDatabase,
  postgres as postgresDatabase,
  sqlite as sqliteDatabase,
  type OutboxDatabase,
} from 'tidings/outbox';
import type { ChaosConfig } from './config.js';

export type Row = Record<string, unknown>;

/** One connection: statements with `?` placeholders, and the driver object for the outbox and inbox. */
export interface Conn {
  q(sql: string, params?: unknown[]): Promise<Row[]>;
  handle: unknown;
  release(): Promise<void>;
}

/** One side's database. */
export interface Side {
  database: OutboxDatabase;
  conn(): Promise<Conn>;
  /** A connection over a driver object the library handed out (`inbox.transaction`'s `tx`); not released here. */
  wrap(handle: unknown): Conn;
  /** Qualified table name. */
  t(name: string): string;
  /** The outbox / inbox table name as the library takes it. */
  libTable(name: string): string;
  /** The statement starting a transaction. */
  begin: string;
  /** The locking read suffix (`FOR UPDATE`, or nothing on SQLite). */
  forUpdate: string;
  close(): Promise<void>;
}

const toDollar = (sql: string) => {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
};

export function openSide(config: ChaosConfig, side: 'p' | 'c'): Side {
  const prefix = `chaos_${config.run}_${side}`;
  if (config.db === 'postgres') {
    const pool = new pg.Pool({ connectionString: config.url, max: 4 });
    pool.on('error', () => undefined);
    return {
      database: postgresDatabase(pool),
      async conn() {
        const client = await pool.connect();
        return { ...wrapPg(client), release: () => Promise.resolve(client.release()) };
      },
      wrap: (handle) => wrapPg(handle as pg.PoolClient),
      t: (name) => `"${prefix}"."${name}"`,
      libTable: (name) => `${prefix}.${name}`,
      begin: 'BEGIN',
      forUpdate: ' FOR UPDATE',
      close: () => pool.end(),
    };
  }
  if (config.db === 'mariadb') {
    const pool = mysql2.createPool({ uri: config.url, connectionLimit: 4 });
    return {
      database: mysqlDatabase(pool),
      async conn() {
        const connection = await pool.getConnection();
        return { ...wrapMysql(connection), release: () => Promise.resolve(connection.release()) };
      },
      wrap: (handle) => wrapMysql(handle as mysql2.PoolConnection),
      t: (name) => `\`${prefix}_${name}\``,
      libTable: (name) => `${prefix}_${name}`,
      begin: 'START TRANSACTION',
      forUpdate: ' FOR UPDATE',
      close: () => pool.end(),
    };
  }
  const db = new Database(join(config.dir, `${side}.db`));
  db.pragma('journal_mode = WAL');
  db.pragma('busy_timeout = 10000');
  return {
    database: sqliteDatabase(db),
    conn: () => Promise.resolve(wrapSqlite(db)),
    wrap: (handle) => wrapSqlite(handle as Database.Database),
    t: (name) => `"${name}"`,
    libTable: (name) => name,
    begin: 'BEGIN IMMEDIATE',
    forUpdate: '',
    close: () => {
      db.close();
      return Promise.resolve();
    },
  };
}

function wrapPg(client: pg.PoolClient): Conn {
  return {
    q: async (sql, params = []) => (await client.query(toDollar(sql), params)).rows as Row[],
    handle: client,
    release: () => Promise.resolve(),
  };
}

function wrapMysql(connection: mysql2.PoolConnection): Conn {
  return {
    q: async (sql, params = []) => {
      const [result] = await connection.query(sql, params);
      return Array.isArray(result) ? (result as Row[]) : [];
    },
    handle: connection,
    release: () => Promise.resolve(),
  };
}

function wrapSqlite(db: Database.Database): Conn {
  return {
    q: (sql: string, params: unknown[] = []) =>
      new Promise<Row[]>((resolve) => {
        const statement = db.prepare(sql);
        if (statement.reader) resolve(statement.all(...params) as Row[]);
        else resolve((statement.run(...params), []));
      }),
    handle: db,
    release: () => Promise.resolve(),
  };
}

/** Runs `fn` in a transaction on a connection of its own; rolls back when it throws or returns 'rollback'. */
export async function inTransaction(
  side: Side,
  fn: (conn: Conn) => Promise<'commit' | 'rollback'>,
): Promise<'commit' | 'rollback'> {
  const conn = await side.conn();
  try {
    await conn.q(side.begin);
    let outcome: 'commit' | 'rollback';
    try {
      outcome = await fn(conn);
    } catch (error) {
      await conn.q('ROLLBACK').catch(() => undefined);
      throw error;
    }
    await conn.q(outcome === 'commit' ? 'COMMIT' : 'ROLLBACK');
    return outcome;
  } finally {
    await conn.release();
  }
}

/** Increments an order's version inside the transaction and returns the new version. */
export async function bumpVersion(config: ChaosConfig, side: Side, conn: Conn, key: string): Promise<number> {
  const orders = side.t('orders');
  if (config.db === 'mariadb') {
    await conn.q(
      `INSERT INTO ${orders} (k, version) VALUES (?, 1) ON DUPLICATE KEY UPDATE version = version + 1`,
      [key],
    );
    const [row] = await conn.q(`SELECT version FROM ${orders} WHERE k = ?`, [key]);
    return Number(row?.['version']);
  }
  const [row] = await conn.q(
    `INSERT INTO ${orders} AS o (k, version) VALUES (?, 1) ON CONFLICT (k) DO UPDATE SET version = o.version + 1 RETURNING version`,
    [key],
  );
  return Number(row?.['version']);
}

/** Creates the business and consumer tables (the outbox and inbox tables are made by the library). */
export async function createTables(config: ChaosConfig, producer: Side, consumer: Side): Promise<void> {
  const p = await producer.conn();
  const c = await consumer.conn();
  try {
    if (config.db === 'postgres') {
      await p.q(`CREATE SCHEMA IF NOT EXISTS "chaos_${config.run}_p"`);
      await c.q(`CREATE SCHEMA IF NOT EXISTS "chaos_${config.run}_c"`);
    }
    const text = config.db === 'mariadb' ? 'VARCHAR(100)' : 'TEXT';
    const engine = config.db === 'mariadb' ? ' ENGINE=InnoDB' : '';
    await p.q(
      `CREATE TABLE ${producer.t('orders')} (k ${text} PRIMARY KEY, version BIGINT NOT NULL)${engine}`,
    );
    await p.q(
      `CREATE TABLE ${producer.t('changes')} (event_id ${text} PRIMARY KEY, k ${text} NOT NULL, version BIGINT NOT NULL)${engine}`,
    );
    await c.q(
      `CREATE TABLE ${consumer.t('projection')} (k ${text} PRIMARY KEY, version BIGINT NOT NULL)${engine}`,
    );
    // No unique key on purpose: an effect applied twice shows as two rows.
    await c.q(
      `CREATE TABLE ${consumer.t('effects')} (event_id ${text} NOT NULL, k ${text} NOT NULL, version BIGINT NOT NULL)${engine}`,
    );
    await c.q(
      `CREATE TABLE ${consumer.t('violations')} (k ${text} NOT NULL, expected BIGINT NOT NULL, got BIGINT NOT NULL)${engine}`,
    );
  } finally {
    await p.release();
    await c.release();
  }
}

/** Drops everything the run created in the servers (SQLite files go with the run directory). */
export async function dropAll(config: ChaosConfig, producer: Side, consumer: Side): Promise<void> {
  if (config.db === 'sqlite') return;
  const p = await producer.conn();
  try {
    if (config.db === 'postgres') {
      await p.q(`DROP SCHEMA IF EXISTS "chaos_${config.run}_p" CASCADE`);
      await p.q(`DROP SCHEMA IF EXISTS "chaos_${config.run}_c" CASCADE`);
    } else {
      const names = [
        ...['orders', 'changes', 'outbox', 'outbox_locks'].map((n) => producer.t(n)),
        ...['projection', 'effects', 'violations', 'inbox'].map((n) => consumer.t(n)),
      ];
      await p.q(`DROP TABLE IF EXISTS ${names.join(', ')}`);
    }
  } finally {
    await p.release();
  }
}
