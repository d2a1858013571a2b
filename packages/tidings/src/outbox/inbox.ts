/**
 * The transactional inbox: a consumer's own writes and the record "group G handled event E" commit in one
 * transaction in the consumer's database, so an event delivered again (at-least-once) has no second effect.
 */
import { systemClock, type Clock } from '../core/clock.js';
import type { Envelope } from '../core/envelope.js';
import { ErrorCode, TidingsError } from '../core/errors.js';
import type { InboxStore } from '../core/inbox.js';
import type { OutboxDatabase } from './database.js';
import { parseTableName } from './names.js';
import {
  purgeInChunks,
  requireSqliteTransaction,
  runSqliteSync,
  runnerFor,
  type SqliteDatabaseLike,
} from './sql.js';
import { inboxStatements } from './statements.js';

/** Options of {@link createInbox}. */
export interface TransactionalInboxOptions {
  /** The consumer's database: `postgres(pool)`, `mysql(pool)` or `sqlite(db)`. */
  database: OutboxDatabase;
  /** The inbox table, `name` or `schema.name`. Default `tidings_inbox`. */
  table?: string;
  /**
   * How long a record is kept. An event redelivered after this is handled again, so keep it well above your
   * transport's redelivery window. Default 7 days.
   */
  ttlMs?: number;
  /**
   * How often expired records are deleted, when the database has a pool: each time, chunks of 10,000 while they come
   * back full, for up to a second, then again a second later while any remain. Default 60,000 ms.
   */
  purgeIntervalMs?: number;
  /** The group recorded when `handle` is given a bare envelope. Default `default`. */
  group?: string;
  /** Time, for tests. Default: the system clock. */
  clock?: Clock;
}

/** What identifies a handled event: a handler context (`ctx`), or an envelope (with the inbox's default group). */
export type InboxMessage = Envelope | { readonly envelope: Envelope; readonly group: string };

/** A transactional inbox. See {@link createInbox}. */
export interface TransactionalInbox {
  /**
   * Inside your open transaction `tx` (the same kinds `outbox.enqueue` takes), records that the group handled the
   * event, then runs `fn(tx)` for your writes. Resolves `true` when `fn` ran, `false` when the event was recorded
   * already (a duplicate: `fn` is not called). Commit afterwards: the record and your writes commit together, or
   * roll back together if `fn` throws (it rethrows). A concurrent copy of the same event waits for this
   * transaction's row lock, then sees the record. Rejects with `INVALID_CONFIG` when no transaction is open on a
   * better-sqlite3 `Database` or a pg client (in autocommit the record would commit even when `fn` throws, and the
   * redelivery would be dropped as a duplicate); MariaDB/MySQL connections cannot be checked.
   */
  handle<Tx>(tx: Tx, message: InboxMessage, fn: (tx: Tx) => unknown): Promise<boolean>;
  /**
   * `handle` for SQLite inside better-sqlite3's synchronous `db.transaction(() => ...)` (or BEGIN ... COMMIT);
   * throws `INVALID_CONFIG` when no transaction is open on `tx`.
   */
  handleSync<Tx extends SqliteDatabaseLike>(tx: Tx, message: InboxMessage, fn: (tx: Tx) => unknown): boolean;
  /**
   * Opens a transaction on the inbox database's pool, runs `handle` in it with your `fn`, and commits (or rolls back
   * and rethrows). `tx` is the driver's own object: a pg client, a mysql2 connection, the better-sqlite3 database.
   * Resolves as `handle` does.
   */
  transaction(message: InboxMessage, fn: (tx: unknown) => unknown): Promise<boolean>;
  /**
   * An {@link InboxStore} over the same table, for `bus.handle(..., { inbox })`: it skips events the group
   * handled, but records them after the handler in a separate statement, so it is not transactional (prefer
   * `handle`). Needs the pool. Starts the background purge, as `handle` does.
   */
  store(): InboxStore;
  /** Creates the inbox table if it does not exist (idempotent). Needs the pool. */
  setup(): Promise<void>;
  /** The statements that create the inbox table, for your migrations. */
  schemaSql(): string[];
  /**
   * Deletes records older than `ttlMs`, in chunks of 10,000, up to `limit` (default 100,000); resolves with how
   * many. Needs the pool. For a clean-up of your own scheduling; the background purge needs no call.
   */
  purgeExpired(limit?: number): Promise<number>;
  /** Stops the background purge. Idempotent. */
  close(): Promise<void>;
}

const purgeChunk = 10_000;
/** The real time one background purge may spend; when rows remain, the next one runs this much later. */
const purgeBudgetMs = 1_000;
const maxGroupLength = 200;
const maxIdLength = 255;

/**
 * Creates a transactional inbox. Validates its options at once (`INVALID_CONFIG`). When the database has a pool,
 * expired records are purged in the background every `purgeIntervalMs` from the first `handle`, `handleSync`,
 * `transaction` or `store()` on (the timer does not keep the process alive; `close()` stops it); otherwise call
 * `purgeExpired` yourself.
 */
export function createInbox(options: TransactionalInboxOptions): TransactionalInbox {
  const where = 'createInbox';
  const invalid = (message: string) => new TidingsError(ErrorCode.INVALID_CONFIG, `${where}: ${message}`);
  const database = options?.database;
  if (typeof database?.session !== 'function')
    throw invalid('"database" must come from postgres(pool), mysql(pool) or sqlite(db) of tidings/outbox');
  const dialect = database.dialect;
  const table = parseTableName(options.table ?? 'tidings_inbox', where);
  const ttlMs = options.ttlMs ?? 7 * 24 * 3_600_000;
  if (!Number.isInteger(ttlMs) || ttlMs < 1)
    throw invalid(`"ttlMs" must be a positive whole number of ms, got ${ttlMs}`);
  const purgeIntervalMs = options.purgeIntervalMs ?? 60_000;
  if (!Number.isInteger(purgeIntervalMs) || purgeIntervalMs < 100)
    throw invalid(`"purgeIntervalMs" must be a whole number of ms >= 100, got ${purgeIntervalMs}`);
  const defaultGroup = options.group ?? 'default';
  const clock = options.clock ?? systemClock;
  const statements = inboxStatements(dialect, table);

  /** The (group, event id) of a message, checked. */
  function identify(message: InboxMessage, method: string): [string, string] {
    const envelope = (message as { envelope?: Envelope }).envelope ?? (message as Envelope);
    const group = (message as { group?: unknown }).group;
    const groupName = typeof group === 'string' && 'envelope' in message ? group : defaultGroup;
    const id = envelope?.id;
    if (typeof id !== 'string' || id.length === 0 || id.length > maxIdLength)
      throw new TidingsError(
        ErrorCode.INVALID_CONFIG,
        `inbox.${method}: pass the handler context (ctx) or an envelope with an id of 1 to ${maxIdLength} characters`,
      );
    if (groupName.length === 0 || groupName.length > maxGroupLength)
      throw new TidingsError(
        ErrorCode.INVALID_CONFIG,
        `inbox.${method}: the group name must be 1 to ${maxGroupLength} characters`,
      );
    return [groupName, id];
  }

  let timer: NodeJS.Timeout | undefined;
  let again: NodeJS.Timeout | undefined;
  let closed = false;
  let purging = false;
  /**
   * One background purge: chunks while they come back full, for up to a second, yielding between chunks; skipped
   * while one runs; when rows remain, it runs again a second later instead of at the next tick.
   */
  const backgroundPurge = async () => {
    if (purging || closed) return;
    purging = true;
    try {
      const before = clock.now() - ttlMs;
      const { more } = await withSession('inbox purge', (run) =>
        purgeInChunks((chunk) => run(statements.purge(chunk), [before]), purgeChunk, purgeBudgetMs),
      );
      if (more && !closed) {
        again = setTimeout(() => void backgroundPurge(), purgeBudgetMs);
        again.unref();
      }
    } catch {
      // retried at the next tick
    } finally {
      purging = false;
    }
  };
  const schedulePurge = () => {
    if (timer !== undefined || closed || !database.hasSessions) return;
    timer = setInterval(() => void backgroundPurge(), purgeIntervalMs);
    timer.unref();
  };

  async function withSession<T>(purpose: string, fn: (run: DatabaseRun) => Promise<T>): Promise<T> {
    const session = await database.session(purpose);
    let broken = false;
    try {
      return await fn(session.run);
    } catch (error) {
      broken = true;
      throw error;
    } finally {
      await session.release(broken);
    }
  }

  const inbox: TransactionalInbox = {
    async handle(tx, message, fn) {
      const [group, id] = identify(message, 'handle');
      const run = runnerFor(tx, dialect, 'inbox.handle');
      schedulePurge();
      const { affected } = await run(statements.insert, [group, id, clock.now()]);
      if (affected === 0) return false;
      await fn(tx);
      return true;
    },
    handleSync(tx, message, fn) {
      if (dialect !== 'sqlite')
        throw new TidingsError(
          ErrorCode.INVALID_CONFIG,
          `inbox.handleSync works on SQLite only; this inbox uses ${dialect}, use await inbox.handle(tx, ...)`,
        );
      const [group, id] = identify(message, 'handleSync');
      if (typeof (tx as { prepare?: unknown } | null)?.prepare !== 'function')
        throw new TidingsError(
          ErrorCode.INVALID_CONFIG,
          'inbox.handleSync: pass the better-sqlite3 Database',
        );
      requireSqliteTransaction(tx, 'inbox.handleSync');
      schedulePurge();
      if (runSqliteSync(tx, statements.insert, [group, id, clock.now()]).affected === 0) return false;
      const result = fn(tx);
      if (result instanceof Promise)
        throw new TidingsError(
          ErrorCode.INVALID_CONFIG,
          'inbox.handleSync: fn returned a promise; a better-sqlite3 transaction must be synchronous',
        );
      return true;
    },
    transaction(message, fn) {
      identify(message, 'transaction');
      return database.transaction('inbox.transaction', (tx) => inbox.handle(tx, message, fn));
    },
    store() {
      schedulePurge();
      return {
        has: (group, eventId) =>
          withSession(
            'inbox.store',
            async (run) => (await run(statements.exists, [group, eventId])).rows.length > 0,
          ),
        add: (group, eventId) =>
          withSession('inbox.store', async (run) => {
            await run(statements.insert, [group, eventId, clock.now()]);
          }),
      };
    },
    async setup() {
      await withSession('inbox.setup', async (run) => {
        for (const sql of statements.ddl) await run(sql, []);
      });
    },
    schemaSql: () => [...statements.ddl],
    async purgeExpired(limit = 100_000) {
      if (!Number.isInteger(limit) || limit < 1)
        throw new TidingsError(
          ErrorCode.INVALID_CONFIG,
          `inbox.purgeExpired: limit must be a positive integer`,
        );
      return withSession('inbox.purgeExpired', async (run) => {
        let removed = 0;
        const before = clock.now() - ttlMs;
        while (removed < limit) {
          const chunk = Math.min(purgeChunk, limit - removed);
          const { affected } = await run(statements.purge(chunk), [before]);
          removed += affected;
          if (affected < chunk) break;
          await new Promise((resolve) => setImmediate(resolve)); // let other work use the database in between
        }
        return removed;
      });
    },
    close() {
      closed = true;
      if (timer !== undefined) clearInterval(timer);
      if (again !== undefined) clearTimeout(again);
      timer = undefined;
      again = undefined;
      return Promise.resolve();
    },
  };
  return inbox;
}

type DatabaseRun = Awaited<ReturnType<OutboxDatabase['session']>>['run'];
