/**
 * Who may publish which relay lane, per dialect. PostgreSQL: session advisory locks; MariaDB/MySQL: `GET_LOCK`
 * named locks. Both belong to the relay's connection, so a relay that dies (even by SIGKILL) loses them as soon as
 * the server sees its connection close. SQLite has no lock server: one lease row names the relay that owns every
 * lane until the lease expires (`leaseMs`), renewed before each batch.
 */
import { hash32, hashInt32, type TableName } from './names.js';
import { placeholders, quoteTable } from './statements.js';
import type { Dialect, SqlRunner } from './sql.js';

/** Taking and giving back lanes on the relay's own session. */
export interface LaneLocks {
  /**
   * Whether holding lanes across batches is safe without touching the locks again: true for connection-bound locks,
   * false for the SQLite lease, which must be renewed before every batch.
   */
  readonly keepAcrossBatches: boolean;
  /** Tries to take the locks of `lanes` without waiting; resolves with the lanes now held. */
  acquire(run: SqlRunner, lanes: readonly number[]): Promise<number[]>;
  /** Gives back lanes taken by `acquire` (a no-op for the SQLite lease, which is kept while renewed). */
  release(run: SqlRunner, lanes: readonly number[]): Promise<void>;
  /** Gives back everything on close (ends the SQLite lease). */
  releaseAll(run: SqlRunner): Promise<void>;
}

const truthy = (value: unknown) => value === true || Number(value) === 1;

/** Lane locks for an outbox table; `owner` and `leaseMs` matter only to the SQLite lease. */
export function laneLocks(
  dialect: Dialect,
  table: TableName,
  owner: string,
  leaseMs: number,
  now: () => number,
): LaneLocks {
  if (dialect === 'postgres') {
    const ns = hashInt32(`tidings-outbox-lanes:${table.text}`);
    return {
      keepAcrossBatches: true,
      async acquire(run, lanes) {
        const { rows } = await run(
          'SELECT l FROM unnest(?::int[]) AS u(l) WHERE pg_try_advisory_lock(?::int4, l)',
          [lanes, ns],
        );
        return rows.map((row) => Number(row['l']));
      },
      async release(run, lanes) {
        if (lanes.length > 0)
          await run('SELECT pg_advisory_unlock(?::int4, l) FROM unnest(?::int[]) AS u(l)', [ns, lanes]);
      },
      async releaseAll() {},
    };
  }
  if (dialect === 'mysql') {
    // Lock names are at most 64 characters: a hash of the table name keeps them short.
    const prefix = `tidings-outbox-${hash32(table.text).toString(16)}-`;
    const aliases = (lanes: readonly number[]) => lanes.map((_, i) => `l${i}`);
    return {
      keepAcrossBatches: true,
      async acquire(run, lanes) {
        if (lanes.length === 0) return [];
        const names = aliases(lanes);
        const { rows } = await run(
          `SELECT ${names.map((a) => `GET_LOCK(?, 0) AS ${a}`).join(', ')}`,
          lanes.map((lane) => `${prefix}${lane}`),
        );
        const row = rows[0] ?? {};
        return lanes.filter((_, i) => truthy(row[names[i]!]));
      },
      async release(run, lanes) {
        if (lanes.length === 0) return;
        await run(
          `SELECT ${aliases(lanes)
            .map((a) => `RELEASE_LOCK(?) AS ${a}`)
            .join(', ')}`,
          lanes.map((lane) => `${prefix}${lane}`),
        );
      },
      async releaseAll() {},
    };
  }
  const lease = quoteTable(dialect, table, '_lease');
  return {
    keepAcrossBatches: false,
    async acquire(run, lanes) {
      const at = now();
      const { affected } = await run(
        `INSERT INTO ${lease} (id, owner, expires_at) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE ` +
          'SET owner = excluded.owner, expires_at = excluded.expires_at WHERE owner = excluded.owner OR expires_at < ?',
        [owner, at + leaseMs, at],
      );
      return affected === 1 ? [...lanes] : [];
    },
    async release() {},
    async releaseAll(run) {
      await run(`UPDATE ${lease} SET expires_at = 0 WHERE owner = ${placeholders(1)}`, [owner]);
    },
  };
}
