/**
 * Group commit: every write of one transport (record appends of concurrent publishes, offset commits, heartbeats,
 * joins, store writes) is queued and written in as few SQLite transactions as possible, in queue order, so that
 * throughput does not pay one fsync per event.
 *
 * Durability. Transactions commit with `synchronous = NORMAL` (the commit writes the WAL but does not sync it); with
 * `durability: 'fsync'` the queue then fdatasyncs the WAL file itself, in libuv's thread pool, and completes durable
 * items only after that sync. This is the guarantee `synchronous = FULL` gives (FULL syncs the WAL after each commit;
 * WAL recovery stops at the first frame that did not reach the disk, so nothing after it is half-kept), at a fraction
 * of the cost: SQLite's unix VFS as better-sqlite3 builds it calls fsync (which also journals the file's mtime) on
 * the event loop thread, where fdatasync off the thread takes ~3x less time and lets the next transaction be written
 * meanwhile. At most one WAL sync is in flight; items committed while it runs wait for the next one.
 */
import * as fs from 'node:fs';
import { isTidingsError } from '../core/errors.js';
import { isBusy, lockedError, type Database } from './db.js';

/** One queued write. */
export interface WriteItem {
  /**
   * `append` items only stage records in memory (the queue's `writeStaged` turns them into batch rows); `job` items
   * write directly. Staged appends are written before every job, so the database sees writes in queue order.
   */
  readonly kind: 'append' | 'job';
  /** Completes only once the WAL holding it is fdatasync'd, when the transport's durability is `'fsync'`. */
  readonly durable: boolean;
  /** Run inside a savepoint, so that a TidingsError thrown by `run` undoes only this item. */
  readonly savepoint: boolean;
  /** Records and bytes this item adds to a transaction, for the per-transaction bounds. */
  readonly records: number;
  readonly bytes: number;
  /**
   * Runs inside the transaction. A thrown TidingsError fails this item alone (after its savepoint is rolled back);
   * any other error rolls back the whole transaction and fails every item in it.
   */
  run(): void;
  /** After the transaction committed (and, if durable, was synced), for an item whose `run` did not throw. */
  done(): void;
  /** The item failed: its own TidingsError, or the error that rolled back its transaction. */
  fail(error: unknown): void;
}

export interface WriteQueueOptions {
  db: Database;
  /** The database file, for error messages; its WAL is `${file}-wal`. */
  file: string;
  durability: 'fsync' | 'relaxed';
  /** How long a write waits for a lock held by another process before its items fail with TRANSPORT_UNAVAILABLE. */
  busyTimeoutMs: number;
  /** How long non-urgent items (offset commits, heartbeats) may wait to share a transaction with later ones. */
  lazyDelayMs: number;
  /** Writes the records staged by `append` items; called inside the transaction. */
  writeStaged(): void;
  /** After a rollback: forget the staged records and anything cached from inside the transaction. */
  rolledBack(): void;
  /** After a commit, before the items' `done` callbacks. */
  committed(): void;
  /** Before a savepoint: a mark of the caller's transaction-local caches, for {@link savepointRolledBack}. */
  savepointStarted(): number;
  /** After a rollback to that savepoint: forget what was cached since `mark`. */
  savepointRolledBack(mark: number): void;
}

/**
 * Bounds of one transaction: at most this many records and bytes of appended records (at least one item always
 * goes in). Larger backlogs take several transactions, back to back.
 */
export const maxTransactionRecords = 32_768;
export const maxTransactionBytes = 16 * 1024 * 1024;

/** The most items (of any kind) one transaction takes. */
const maxTransactionItems = 65_536;

/**
 * A FIFO of writes, flushed on the next macrotask (urgent items) or within `lazyDelayMs` (lazy items), each flush one
 * `BEGIN IMMEDIATE ... COMMIT` holding as many queued items as the bounds allow. The flush runs synchronously on the
 * event loop thread (better-sqlite3); a lock held by another process is never waited for on the thread
 * (`busy_timeout` is 0): the flush is retried asynchronously until `busyTimeoutMs` passes.
 */
export class WriteQueue {
  private readonly options: WriteQueueOptions;
  private readonly db: Database;
  private items: WriteItem[] = [];
  private immediate: NodeJS.Immediate | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** `performance.now()` of the first failed attempt to take the write lock, while a flush waits for it. */
  private busySinceMs: number | undefined;
  private busyAttempts = 0;
  private flushing = false;
  /** The WAL file, opened for fdatasync. */
  private walFd: number | undefined;
  /** Committed durable items waiting for the next WAL sync, and whether a sync is running. */
  private awaitingSync: WriteItem[] = [];
  private syncing = false;
  private closed = false;
  private idleWaiters: Array<() => void> = [];
  private readonly begin;
  private readonly commit;
  private readonly rollback;

  constructor(options: WriteQueueOptions) {
    this.options = options;
    this.db = options.db;
    this.begin = this.db.prepare('BEGIN IMMEDIATE');
    this.commit = this.db.prepare('COMMIT');
    this.rollback = this.db.prepare('ROLLBACK');
  }

  /** Number of queued items not yet written. */
  get size(): number {
    return this.items.length;
  }

  /** Queues an item. Urgent items are flushed on the next macrotask; lazy ones within `lazyDelayMs`. */
  push(item: WriteItem, urgent: boolean): void {
    if (this.closed) {
      item.fail(new Error('write queue closed'));
      return;
    }
    this.items.push(item);
    this.schedule(urgent);
  }

  /** Takes a queued item back out if it has not been written yet; true if it was removed. */
  withdraw(item: WriteItem): boolean {
    const index = this.items.indexOf(item);
    if (index < 0) return false;
    this.items.splice(index, 1);
    return true;
  }

  /** Resolves once every item queued so far has been written and synced (or has failed). */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    this.schedule(true);
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Writes and syncs what is queued, then refuses further items. */
  async close(): Promise<void> {
    await this.idle();
    this.closed = true;
    clearTimeout(this.timer);
    if (this.immediate !== undefined) clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
    if (this.walFd !== undefined) {
      try {
        fs.closeSync(this.walFd);
      } catch {
        // Already closed or never valid: nothing to release.
      }
      this.walFd = undefined;
    }
  }

  private isIdle(): boolean {
    return this.items.length === 0 && !this.flushing && !this.syncing && this.awaitingSync.length === 0;
  }

  private schedule(urgent: boolean): void {
    if (this.immediate !== undefined || this.busySinceMs !== undefined) return;
    if (urgent) {
      if (this.timer !== undefined) {
        clearTimeout(this.timer);
        this.timer = undefined;
      }
      this.immediate = setImmediate(() => {
        this.immediate = undefined;
        this.flush();
      });
      return;
    }
    if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.flush();
      }, this.options.lazyDelayMs);
    }
  }

  private flush(): void {
    if (this.flushing) return;
    if (this.items.length === 0) {
      this.notifyIdle();
      return;
    }
    let count = 0;
    let records = 0;
    let bytes = 0;
    for (const item of this.items) {
      if (
        count > 0 &&
        (count >= maxTransactionItems ||
          records + item.records > maxTransactionRecords ||
          bytes + item.bytes > maxTransactionBytes)
      ) {
        break;
      }
      count++;
      records += item.records;
      bytes += item.bytes;
    }
    try {
      this.begin.run();
    } catch (error) {
      if (isBusy(error)) {
        this.retryLater();
        return;
      }
      this.failAll(this.items.splice(0, count), error);
      this.afterFlush();
      return;
    }
    this.busySinceMs = undefined;
    this.busyAttempts = 0;
    const batch = this.items.splice(0, count);
    const failures = new Map<WriteItem, unknown>();
    this.flushing = true;
    try {
      for (const item of batch) {
        if (item.kind === 'append') {
          item.run();
          continue;
        }
        this.options.writeStaged();
        if (!item.savepoint) {
          item.run();
          continue;
        }
        const mark = this.options.savepointStarted();
        this.db.exec('SAVEPOINT item');
        try {
          item.run();
          this.db.exec('RELEASE item');
        } catch (error) {
          if (!isTidingsError(error)) throw error;
          this.db.exec('ROLLBACK TO item');
          this.db.exec('RELEASE item');
          this.options.savepointRolledBack(mark);
          failures.set(item, error);
        }
      }
      this.options.writeStaged();
      this.commit.run();
    } catch (error) {
      this.flushing = false;
      try {
        if (this.db.inTransaction) this.rollback.run();
      } catch {
        // The rollback failing too leaves nothing more to undo here: SQLite rolls back on the next begin.
      }
      this.options.rolledBack();
      this.failAll(batch, error);
      this.afterFlush();
      return;
    }
    this.flushing = false;
    this.options.committed();
    const sync = this.options.durability === 'fsync';
    for (const item of batch) {
      if (failures.has(item)) complete(item, failures.get(item));
      else if (sync && item.durable) this.awaitingSync.push(item);
      else complete(item, undefined);
    }
    this.startSync();
    this.afterFlush();
  }

  /** Starts an fdatasync of the WAL for the committed durable items, unless one is running. */
  private startSync(): void {
    if (this.syncing || this.awaitingSync.length === 0) return;
    const items = this.awaitingSync;
    this.awaitingSync = [];
    let fd: number;
    try {
      fd = this.walFd ??= fs.openSync(`${this.options.file}-wal`, 'r');
    } catch (error) {
      for (const item of items) complete(item, error);
      return;
    }
    this.syncing = true;
    fs.fdatasync(fd, (error) => {
      this.syncing = false;
      for (const item of items) complete(item, error ?? undefined);
      this.startSync();
      this.notifyIdle();
    });
  }

  private afterFlush(): void {
    if (this.items.length > 0) this.schedule(true);
    else this.notifyIdle();
  }

  private retryLater(): void {
    const now = performance.now();
    this.busySinceMs ??= now;
    this.busyAttempts++;
    if (now - this.busySinceMs > this.options.busyTimeoutMs) {
      const waited = now - this.busySinceMs;
      this.busySinceMs = undefined;
      this.busyAttempts = 0;
      this.failAll(this.items.splice(0), lockedError(this.options.file, waited));
      this.notifyIdle();
      return;
    }
    // A few quick retries (another process's commit takes well under a millisecond), then at most every 5 ms.
    const delayMs = this.busyAttempts <= 2 ? 0 : Math.min(5, this.busyAttempts - 2);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, delayMs);
  }

  private failAll(items: readonly WriteItem[], error: unknown): void {
    for (const item of items) complete(item, error);
  }

  private notifyIdle(): void {
    if (!this.isIdle()) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}

/** Calls `done` (no error) or `fail`; a throwing callback must not break the queue, so it is rethrown apart. */
function complete(item: WriteItem, error: unknown): void {
  try {
    if (error === undefined) item.done();
    else item.fail(error);
  } catch (callbackError) {
    queueMicrotask(() => {
      throw callbackError;
    });
  }
}
