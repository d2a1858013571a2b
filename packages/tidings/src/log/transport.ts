/**
 * The embedded durable log: the default transport. Kafka-like partitioned topics stored in one SQLite database
 * (better-sqlite3, WAL) in a data directory that several processes on one machine share without a daemon; record
 * batches in Kafka's RecordBatch v2 layout; group commit; consumer groups across processes with leases and fenced
 * ownership; retention; replay by offset and time. Semantics follow the in-memory reference transport.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { systemClock, type Clock } from '../core/clock.js';
import { ErrorCode, TidingsError, isTidingsError } from '../core/errors.js';
import { readLimitMax } from '../core/transport.js';
import type {
  Delivery,
  GroupDescription,
  OutgoingRecord,
  PartitionLag,
  PublishAck,
  StartPosition,
  StoredRecord,
  SubscribeOptions,
  Subscription,
  TopicConfig,
  TopicDescription,
  Transport,
  TransportAdmin,
  TransportFeatures,
  TransportStores,
} from '../core/transport.js';
import { DelayQueue, type CancelDelayed } from '../memory/delay-queue.js';
import { ChangeWatcher } from './change-watcher.js';
import { startCheckpointer, type Checkpointer } from './checkpointer.js';
import { databaseFileName, isBusy, openDatabase, type Database } from './db.js';
import { GroupTables, assign, compareStrings, partitionKey, type GroupPartitionRow } from './groups.js';
import { prepareRecord, type DecodedRecord, type PreparedRecord } from './record-batch.js';
import { LogStorage, toStoredRecord, type TopicMeta } from './storage.js';
import { createLogStores, type LogStoresInternal } from './stores.js';
import {
  checkInteger,
  checkName,
  checkRecord,
  tooLarge,
  checkStartPosition,
  checkSubscribeOptions,
  describeValue,
  invalid,
  limits,
} from './validation.js';
import { WriteQueue, type WriteItem } from './write-queue.js';
import { iterateOnce } from '../core/subscription-iterator.js';

/** Options of {@link createLogTransport}. Every field is optional; each is validated once, at construction. */
export interface LogTransportOptions {
  /**
   * The data directory holding `log.db` (and its `-wal` and `-shm` files). Default: `process.env.TIDINGS_DATA_DIR`,
   * else `./.tidings`, resolved against the current directory. Every process given the same directory shares the
   * same topics, offsets and groups.
   */
  dataDir?: string;
  /**
   * Create the directory (`mkdir -p`) and the database when missing. Default true. With false, a missing directory or
   * database is a `NOT_FOUND` error naming the directory (what the CLI wants: never create a log by a typo).
   */
  createIfMissing?: boolean;
  /** Partition count of topics created implicitly by `publish` or `subscribe`. Integer in [1, 10_000]. Default 4. */
  defaultPartitions?: number;
  /**
   * `'fsync'` (default): `publish` resolves only after the transaction holding its records committed and the WAL
   * file holding that commit was fdatasync'd (the guarantee of SQLite's `synchronous = FULL`, done off the event
   * loop: see `write-queue.ts`): an acknowledged event survives `kill -9`, an OS crash and power loss. A record is
   * visible to consumers from its commit, which precedes that sync by the sync's duration (about 0.1 ms).
   *
   * `'relaxed'`: `publish` resolves once the transaction committed to the WAL in the OS page cache, without an
   * fsync. An acknowledged event survives `kill -9` of any process (the OS still has the write) but not an OS crash
   * or power loss: the WAL is fdatasync'd in the background every 200 ms (and at every checkpoint and at
   * `close()`), so a power loss can lose the events acknowledged during the last 200 ms plus the duration of one
   * fdatasync. The log is never corrupted by either (SQLite's WAL guarantees that).
   */
  durability?: 'fsync' | 'relaxed';
  /**
   * The largest record accepted, in bytes: value length plus the UTF-8 bytes of the key and of every header name and
   * value. Larger records are rejected with `EVENT_TOO_LARGE` before anything is written. Integer in
   * [1, 256 MiB]. Default 8 MiB.
   */
  maxRecordBytes?: number;
  /**
   * Group member lease, in ms: a member that stops heartbeating (a crashed, killed or paused process) loses its
   * partitions to the other members this long after its last heartbeat. On this host a member whose process no
   * longer exists loses them at once. A member stops handing out records by itself once its own lease (less a margin
   * of min(1 s, leaseMs / 5)) has passed without a renewal. Integer in [100, 3_600_000]. Default 10_000.
   */
  leaseMs?: number;
  /** How often members renew their lease (and rebalance), in ms. Integer in [10, leaseMs / 2]. Default leaseMs / 5. */
  heartbeatIntervalMs?: number;
  /**
   * How a transport with live members notices commits by other connections (other processes or transports): new
   * records to deliver and group changes. It watches the WAL file (`fs.watch`) and checks `PRAGMA data_version` on
   * every change, so a waiting consumer wakes within about a millisecond; while the watcher is not known to work on
   * this file system, it checks every `pollIntervalMs` instead (and every second otherwise, as a safety net).
   * Integer in [1, 10_000] ms. Default 10: wake-ups within 10 ms at about 1% of a core while idle.
   * Records published through this transport wake its own consumers at once, without either.
   */
  pollIntervalMs?: number;
  /** How often retention runs in the background, in ms. Integer in [10, 86_400_000]. Default 30_000. */
  retentionIntervalMs?: number;
  /**
   * How long a partition that moves between members waits for its previous owner to settle its outstanding
   * deliveries before the previous owner releases it anyway (fencing them), in ms. Integer in
   * [0, 2_147_483_647]. Default 30_000.
   */
  rebalanceTimeoutMs?: number;
  /**
   * How long a write waits for the database's write lock while another process holds it, before failing with
   * `TRANSPORT_UNAVAILABLE` ("locked by another process"). The wait never blocks the event loop. Integer in
   * [0, 600_000] ms. Default 10_000.
   */
  busyTimeoutMs?: number;
  /** Source of record timestamps, leases, nack delays and rebalance timeouts. Default `systemClock`. */
  clock?: Clock;
}

/** A {@link Subscription} of the embedded log; `memberId` matches the member in `admin.describeGroup`. */
export interface LogSubscription extends Subscription, AsyncDisposable {
  readonly memberId: string;
}

/** The transport returned by {@link createLogTransport}. */
export interface LogTransport extends Transport {
  readonly name: 'log';
  /** The absolute path of the data directory. */
  readonly dataDir: string;
  /**
   * Durable stores in the same database, shared by every process on the data directory. Reads answer synchronously;
   * writes return promises that resolve once written (and, with `durability: 'fsync'`, fsync'd) in the next group
   * commit, so an awaited write is seen by every later read, in any process.
   * - `parking`: at most 10,000 events per parked key (beyond: a retryable `CONFLICT`); kept until shifted empty.
   * - `inbox`: an id is remembered 7 days (`inboxTtlMs`) and among the newest 100,000 ids of its group
   *   (`inboxMaxEntriesPerGroup`), both enforced by the retention pass (`has` ignores expired ids at once).
   * - `requests`: operator requests, kept until completed and 30 days after.
   */
  readonly stores: Required<TransportStores>;
  /**
   * Joins `options.group` as a new member. Returns at once; the member joins in the background (its join is written
   * before any write this transport is asked for later, so `'latest'` includes every record published through this
   * transport after `subscribe` returned). `assignments()` is empty until the join is written. Throws
   * `INVALID_CONFIG` for bad options and `CLOSED` once the transport is closed; with an already aborted `signal` it
   * returns a subscription that is closed and never joined.
   */
  subscribe(options: SubscribeOptions): LogSubscription;
}

const defaults = {
  defaultPartitions: 4,
  maxRecordBytes: 8 * 1024 * 1024,
  leaseMs: 10_000,
  pollIntervalMs: 10,
  retentionIntervalMs: 30_000,
  rebalanceTimeoutMs: 30_000,
  busyTimeoutMs: 10_000,
} as const;

const optionNames: ReadonlySet<string> = new Set([
  'dataDir',
  'createIfMissing',
  'defaultPartitions',
  'durability',
  'maxRecordBytes',
  'leaseMs',
  'heartbeatIntervalMs',
  'pollIntervalMs',
  'retentionIntervalMs',
  'rebalanceTimeoutMs',
  'busyTimeoutMs',
  'clock',
]);

/** Records and bytes of batch data one consumer read takes from a partition: the memory bound per partition. */
const pageRecords = 2048;
const pageBytes = 512 * 1024;
/** The most bytes of batch data one `admin.read` decodes. */
const adminReadBytes = 32 * 1024 * 1024;
/** Batches one retention transaction removes at most, so publishers are never held up for long. */
const retentionBatchesPerTransaction = 64;
/** Non-urgent writes (offset commits) wait at most this long to share a transaction. */
const lazyWriteDelayMs = 5;
/** In `'relaxed'` durability, how often the WAL is fdatasync'd. */
const relaxedSyncIntervalMs = 200;
/**
 * How far beyond the record about to be handed out `delivered_high` is moved at least (see `persistAhead`): a
 * consumer that keeps up with a slow stream writes once per this many records rather than once per record.
 */
const persistAheadSlack = 256;
/** Delivery counts and delayed nacks carried to the next owner of a partition, at most. */
const maxCarryEntries = 10_000;

/**
 * Creates the embedded durable log transport on a data directory (see {@link LogTransportOptions}).
 *
 * Contract, beyond the interface docs (and the same as the in-memory transport where not said otherwise):
 * - `publish` validates every record first (`VALIDATION_FAILED`, `EVENT_TOO_LARGE`: nothing written), then queues
 *   the call; calls queued together, on any topics, are written in one transaction (at most 32,768 records /
 *   16 MiB of records per transaction; one call is never split), as one batch row per partition of at most 4,096
 *   records / 1 MiB. It resolves once that transaction is durable (see `durability`); one call is all-or-nothing.
 *   Offsets are taken from the partition's `next_offset` row inside the transaction, so processes never collide.
 * - Consumer groups span processes: see `groups.ts` for the lease and fencing protocol. Within a group, records of
 *   one key are delivered in offset order across joins, graceful leaves and takeovers; deliveries of a member that
 *   leaves, crashes or loses its lease are redelivered (with their acked successors) to the next owner. A member
 *   stops handing out a partition's records as soon as it loses it or its own lease lapses; deliveries already
 *   handed out cannot be recalled, and their acks are then ignored (fenced).
 * - Acks commit the low-water mark lazily: within 5 ms, or at once before an admin call of this transport, a
 *   rebalance or `close()`. A crash loses at most the commits of those last milliseconds (redelivered: at least
 *   once). Each settled record's `deliveryCount` is carried to the next owner (handover, restart, takeover). Before
 *   a member hands out a record it records in the database how far it may hand out (the end of its current page,
 *   and at least 256 records beyond the record), so a record whose handling crashed the process comes back with
 *   `deliveryCount` 2, never as a first delivery: a poison record cannot crash members forever unnoticed. The price:
 *   after a crash or a lost lease (not after a graceful leave), the records in that range that the member had not
 *   handed out yet (read ahead, or published later; at most 2,048 per partition) count one delivery too many.
 * - Consumers read each partition in pages (2,048 records / 512 KiB of batches at most), so memory stays bounded
 *   whatever the backlog. Every batch's CRC-32C is checked on read; a corrupt batch ends the subscription (after
 *   the records before it) with a `DATA_CORRUPT` error naming topic, partition and offset, and makes
 *   `admin.read` reject.
 * - Records published through this transport wake its waiting consumers at once; commits by other processes wake
 *   them through a watch on the WAL file (see `pollIntervalMs`).
 * - Retention runs every `retentionIntervalMs` and removes whole batches (at most 64 per transaction): by age, a
 *   batch once its newest record is older than `retentionMs`; by size, the oldest batches while the partition holds
 *   more than `retentionBytes` of records. The same pass expires inbox ids (see `stores`).
 * - WAL checkpoints run every 200 ms in a worker thread (see `checkpointer.ts`), never inside a commit on the event
 *   loop thread. A write never waits for another process's lock on the event loop thread either: it is retried
 *   asynchronously until `busyTimeoutMs`. Only reads and the writes themselves (microseconds to a millisecond per
 *   transaction, the WAL fsync excluded) run on it.
 * - Nothing keeps the process alive but a live subscription's heartbeat; `close()` leaves every group (releasing
 *   partitions at once, with their committed offsets), writes and syncs what is queued, stops every timer, watcher
 *   and worker and closes the database.

 * Throws `INVALID_CONFIG` for a bad option, `NOT_FOUND` for a missing data directory with `createIfMissing: false`,
 * `TRANSPORT_UNAVAILABLE` for a directory that cannot be written or a database locked beyond `busyTimeoutMs`.
 */
export function createLogTransport(options: LogTransportOptions = {}): LogTransport {
  return new LogTransportImpl(validateOptions(options));
}

interface ResolvedOptions {
  dataDir: string;
  createIfMissing: boolean;
  defaultPartitions: number;
  durability: 'fsync' | 'relaxed';
  maxRecordBytes: number;
  leaseMs: number;
  heartbeatIntervalMs: number;
  pollIntervalMs: number;
  retentionIntervalMs: number;
  rebalanceTimeoutMs: number;
  busyTimeoutMs: number;
  clock: Clock;
}

interface Member {
  readonly id: string;
  readonly group: string;
  readonly topics: readonly string[];
  readonly startFrom: StartPosition;
  readonly prefetch: number;
  /** Deliveries handed to this member and not settled by it yet (fenced ones included until settled). */
  unacked: number;
  /** Owned partitions that may have records to deliver, in round-robin order. */
  readonly ready: Set<LocalPartition>;
  /** Partitions this member owns (its claim committed), by partition key. */
  readonly owned: Map<string, LocalPartition>;
  /** Partitions assigned to it at its last rebalance, sorted. */
  targets: ReadonlyArray<{ topic: string; partition: number }>;
  /** Its member row has been written. */
  joined: boolean;
  closed: boolean;
  /** Clock time until which it may hand out records: its lease as last renewed, less a margin. */
  leaseValidUntil: number;
  syncQueued: boolean;
  /** Test hook: a member that no longer renews its lease, as a hung process. */
  heartbeatsPaused: boolean;
  waiters: Array<() => void>;
  resolveClosed: (value: Error | undefined) => void;
  detachSignal: () => void;
  leaving: Promise<void> | undefined;
}

/** A member's state of one partition it owns. */
interface LocalPartition {
  readonly member: Member;
  readonly meta: TopicMeta;
  readonly topic: string;
  readonly partition: number;
  readonly pid: number;
  readonly key: string;
  /** The ownership epoch of the claim; commits are fenced on it. */
  readonly epoch: number;
  /** The low-water mark: every offset below it is processed. */
  committed: number;
  /** The next offset to read from the log (redeliveries aside). */
  fetchOffset: number;
  /** Offsets at or above `committed` delivered and not acked, nacked, or carried in as delayed. */
  readonly pending: Map<number, Pending>;
  redeliver: number[];
  redeliverHead: number;
  /** Prior delivery counts of offsets at or above `committed` that are not pending and were delivered twice or more. */
  readonly counts: Map<number, number>;
  /** Offsets below this (and at or above `committed`) were delivered once before this claim. */
  readonly previousHigh: number;
  /**
   * Offsets below this may be handed out: `delivered_high` in the database already covers them, so a crash does not
   * make their next delivery count as a first one. Moved ahead a page at a time, before delivering, by
   * {@link LogTransportImpl.persistAhead}.
   */
  persistedHigh: number;
  persisting: boolean;
  /** Deliveries of this claim not settled yet. */
  inflight: number;
  /** No longer assigned here: hands out nothing and releases once `inflight` is 0 or the rebalance timeout passed. */
  handingOver: boolean;
  handoverExpired: boolean;
  cancelHandoverTimeout: CancelDelayed | undefined;
  /** Records read ahead from `fetchOffset`. */
  page: DecodedRecord[];
  pageIndex: number;
  dropped: boolean;
  /** A release of it is in the transaction being written. */
  releasing: boolean;
  dirty: boolean;
}

interface InFlight {
  readonly state: 'inflight';
  readonly lp: LocalPartition;
  readonly member: Member;
  readonly offset: number;
  readonly count: number;
  settled: boolean;
}

type Pending =
  | InFlight
  | { readonly state: 'delayed'; readonly count: number; readonly dueAtMs: number; cancel: CancelDelayed }
  | { readonly state: 'ready'; readonly count: number };

interface Claim {
  readonly meta: TopicMeta;
  readonly partition: number;
  readonly epoch: number;
  readonly committed: number;
  readonly deliveredHigh: number | null;
  readonly carry: string | null;
}

interface SyncPlan {
  readonly now: number;
  readonly targets: ReadonlyArray<{ topic: string; partition: number }>;
  readonly claims: Claim[];
  readonly releases: LocalPartition[];
  readonly handovers: LocalPartition[];
  readonly resumes: LocalPartition[];
  readonly lost: LocalPartition[];
  changed: boolean;
}

interface CommitState {
  committed: number;
  deliveredHigh: number;
  carry: string | null;
}

class LogTransportImpl implements LogTransport {
  readonly name = 'log';
  readonly features: TransportFeatures;
  readonly admin: TransportAdmin;
  readonly dataDir: string;
  readonly stores: Required<TransportStores>;

  private readonly options: ResolvedOptions;
  private readonly clock: Clock;
  private readonly file: string;
  private readonly db: Database;
  private readonly storage: LogStorage;
  private readonly groups: GroupTables;
  private readonly queue: WriteQueue;
  private readonly delays: DelayQueue;
  private readonly storesInternal: LogStoresInternal;
  private readonly dataVersion;
  private readonly leaseMarginMs: number;
  private readonly members = new Set<Member>();
  /** Per partition row id, the local partitions to wake when this transport appends to it. */
  private readonly watchers = new Map<number, Set<LocalPartition>>();
  private readonly dirty = new Set<LocalPartition>();
  private commitQueued = false;
  private memberSeq = 0;
  private readonly memberPrefix = `m-${process.pid}-${randomBytes(3).toString('hex')}`;
  private lastDataVersion = -1;
  private readonly groupVersions = new Map<string, number>();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private readonly changes: ChangeWatcher;
  private readonly checkpointer: Checkpointer | undefined;
  private watching = false;
  private retentionTimer: NodeJS.Timeout | undefined;
  private relaxedTimer: NodeJS.Timeout | undefined;
  private retentionRunning = false;
  private writesSinceSync = false;
  private walFd: number | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(options: ResolvedOptions) {
    this.options = options;
    this.clock = options.clock;
    this.dataDir = options.dataDir;
    this.file = path.join(options.dataDir, databaseFileName);
    this.leaseMarginMs = Math.min(1000, Math.floor(options.leaseMs / 5));
    this.db = openDatabase({
      dataDir: options.dataDir,
      createIfMissing: options.createIfMissing,
      busyTimeoutMs: options.busyTimeoutMs,
    });
    this.checkpointer = startCheckpointer(this.file);
    // With the checkpoint worker running, commits never checkpoint on this thread (see checkpointer.ts).
    if (this.checkpointer !== undefined) this.db.pragma('wal_autocheckpoint = 0');
    this.storage = new LogStorage(this.db);
    this.groups = new GroupTables(this.db);
    this.delays = new DelayQueue(options.clock);
    this.dataVersion = this.db.prepare<[], number>('PRAGMA data_version').pluck();
    this.queue = new WriteQueue({
      db: this.db,
      file: this.file,
      durability: options.durability,
      busyTimeoutMs: options.busyTimeoutMs,
      lazyDelayMs: lazyWriteDelayMs,
      writeStaged: () => this.storage.writeStaged(),
      rolledBack: () => this.storage.rolledBack(),
      committed: () => this.afterCommit(),
      savepointStarted: () => this.storage.mark(),
      savepointRolledBack: (mark) => this.storage.rollbackTo(mark),
    });
    this.changes = new ChangeWatcher({
      file: `${this.file}-wal`,
      pollIntervalMs: options.pollIntervalMs,
      check: () => this.poll(),
    });
    this.storesInternal = createLogStores({
      db: this.db,
      clock: options.clock,
      write: (run, options) => this.write(run, { urgent: true, ...options }),
      checkOpen: (what) => this.checkOpen(what),
    });
    this.stores = this.storesInternal.stores;
    this.features = Object.freeze({
      persistent: true,
      consumerGroups: true,
      perKeyOrder: true,
      replayByOffset: true,
      replayByTime: true,
      nativeDelay: false,
      maxRecordBytes: options.maxRecordBytes,
    });
    this.admin = Object.freeze<TransportAdmin>({
      createTopic: (name, config) => this.adminCall(() => this.createTopic(name, config)),
      describeTopic: (name) => this.adminCall(() => this.describeTopic(name)),
      listTopics: () => this.adminCall(() => this.storage.topicNames().sort(compareStrings)),
      read: (topic, partition, fromOffset, limit) =>
        this.adminCall(() => this.read(topic, partition, fromOffset, limit)),
      offsetForTime: (topic, partition, timestamp) =>
        this.adminCall(() => this.offsetForTime(topic, partition, timestamp)),
      listGroups: () => this.adminCall(() => this.groups.groupNames().sort(compareStrings)),
      describeGroup: (group) => this.adminCall(() => this.describeGroup(group)),
      resetOffsets: (group, topic, to) => this.adminCall(() => this.resetOffsets(group, topic, to)),
    });
    this.retentionTimer = setInterval(() => void this.runRetention(), options.retentionIntervalMs);
    this.retentionTimer.unref();
    if (options.durability === 'relaxed') {
      this.relaxedTimer = setInterval(() => this.syncWal(), relaxedSyncIntervalMs);
      this.relaxedTimer.unref();
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Writes

  /** Runs `run` inside a queued write transaction; resolves with its result once committed. */
  private write<T>(
    run: () => T,
    options: { urgent: boolean; durable: boolean; savepoint: boolean },
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let result: T;
      this.queue.push(
        {
          kind: 'job',
          durable: options.durable,
          savepoint: options.savepoint,
          records: 0,
          bytes: 0,
          run: () => {
            result = run();
          },
          done: () => resolve(result),
          fail: (error) => reject(this.writeError(error)),
        },
        options.urgent,
      );
    });
  }

  private writeError(error: unknown): TidingsError {
    if (isTidingsError(error)) return error;
    if (this.closed && !this.db.open) return this.closedError('write to the log');
    return new TidingsError(
      ErrorCode.TRANSPORT_UNAVAILABLE,
      `Writing to the log database ${this.file} failed: ${(error as Error).message}. Check that the disk has ` +
        `space and the data directory is writable.`,
      { cause: error, dataDir: this.dataDir },
    );
  }

  /** After every committed transaction: wake local consumers of the partitions appended to. */
  private afterCommit(): void {
    this.writesSinceSync = true;
    if (this.watching) this.changes.ownCommit();
    for (const pid of this.storage.committed()) {
      const watchers = this.watchers.get(pid);
      if (watchers === undefined) continue;
      for (const lp of watchers) this.notify(lp);
    }
  }

  private syncWal(): void {
    if (!this.writesSinceSync || this.closed) return;
    this.writesSinceSync = false;
    try {
      this.walFd ??= fs.openSync(`${this.file}-wal`, 'r');
    } catch {
      return; // No WAL file yet: nothing to sync.
    }
    fs.fdatasync(this.walFd, () => {
      // A failed background sync is retried with the next interval's writes; the data stays in the OS cache.
    });
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Publish

  publish(
    topic: string,
    records: readonly OutgoingRecord[],
    options?: { signal?: AbortSignal },
  ): Promise<PublishAck[]> {
    const signal = options?.signal;
    let prepared: PreparedRecord[];
    let bytes = 0;
    try {
      if (this.closed) {
        throw new TidingsError(
          ErrorCode.CLOSED,
          `Cannot publish to topic '${String(topic)}': the log transport is closed. Create a new transport.`,
          { topic },
        );
      }
      if (signal?.aborted) throw this.abortedError(topic, signal);
      checkName(topic, 'topic', limits.topicNameLength);
      if (!isArray(records)) {
        throw new TidingsError(
          ErrorCode.VALIDATION_FAILED,
          `publish to topic '${topic}' needs an array of records, got ${describeValue(records)}; nothing was written.`,
          { topic },
        );
      }
      // Validated and encoded now, all of them before any is queued: all-or-nothing, and later changes to the
      // caller's buffers or headers cannot leak in.
      const now = this.clock.now();
      const maxRecordBytes = this.options.maxRecordBytes;
      prepared = new Array<PreparedRecord>(records.length);
      for (let index = 0; index < records.length; index++) {
        const record = records[index] as OutgoingRecord;
        checkRecord(topic, record, index);
        const result = prepareRecord(
          record.key,
          record.headers,
          record.value,
          record.timestamp ?? now,
          maxRecordBytes,
        );
        if (typeof result === 'number') throw tooLarge(topic, record.key, index, result, maxRecordBytes);
        prepared[index] = result;
        bytes += result.bytes;
      }
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    if (prepared.length === 0) return Promise.resolve([]);
    const item = new PublishItem(this, topic, prepared, bytes, this.clock.now());
    const promise = new Promise<PublishAck[]>((resolve, reject) => {
      item.resolve = resolve;
      item.reject = reject;
    });
    if (signal !== undefined) {
      const onAbort = () => {
        if (this.queue.withdraw(item)) {
          item.detach?.();
          item.reject(this.abortedError(topic, signal));
        }
      };
      signal.addEventListener('abort', onAbort, { once: true });
      item.detach = () => signal.removeEventListener('abort', onAbort);
    }
    this.queue.push(item, true);
    return promise;
  }

  /** Inside the write transaction: partitions a publish call's records and stages them. */
  stagePublish(item: PublishItem): void {
    const { meta } = this.storage.ensureTopic(
      item.topic,
      { partitions: this.options.defaultPartitions },
      item.now,
    );
    const partitions = meta.partitions;
    const acks = new Array<PublishAck>(item.prepared.length);
    for (let i = 0; i < item.prepared.length; i++) {
      const record = item.prepared[i]!;
      const partition = record.hash % partitions;
      const ack: PublishAck = { topic: item.topic, partition, offset: -1 };
      acks[i] = ack;
      this.storage.stage(meta.pids[partition]!, record, ack);
    }
    item.acks = acks;
  }

  private abortedError(topic: string, signal: AbortSignal): TidingsError {
    return new TidingsError(
      ErrorCode.ABORTED,
      `Publish to topic '${String(topic)}' was aborted before anything was written.`,
      { topic, cause: signal.reason },
    );
  }

  publishError(topic: string, count: number, error: unknown): TidingsError {
    if (isTidingsError(error) && error.code === ErrorCode.TRANSPORT_UNAVAILABLE) return error;
    if (this.closed && !this.db.open) return this.closedError(`publish to topic '${topic}'`);
    return new TidingsError(
      ErrorCode.PUBLISH_FAILED,
      `Publishing ${count} record${count === 1 ? '' : 's'} to topic '${topic}' failed while writing the log ` +
        `database ${this.file}: ${(error as Error).message}. They may or may not be in the log; publish again ` +
        `(consumers dedupe by event id) once the cause (disk full, I/O error) is fixed.`,
      { topic, cause: error },
    );
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Subscribe and membership

  subscribe(options: SubscribeOptions): LogSubscription {
    const checked = checkSubscribeOptions(options);
    if (this.closed) {
      throw new TidingsError(
        ErrorCode.CLOSED,
        `Cannot subscribe group '${checked.group}': the log transport is closed. Create a new transport.`,
        { group: checked.group },
      );
    }
    let resolveClosed!: (value: Error | undefined) => void;
    const closed = new Promise<Error | undefined>((resolve) => {
      resolveClosed = resolve;
    });
    const member: Member = {
      id: `${this.memberPrefix}-${++this.memberSeq}`,
      group: checked.group,
      topics: checked.topics,
      startFrom: checked.startFrom,
      prefetch: checked.prefetch,
      unacked: 0,
      ready: new Set(),
      owned: new Map(),
      targets: [],
      joined: false,
      closed: false,
      leaseValidUntil: Number.NEGATIVE_INFINITY,
      syncQueued: false,
      heartbeatsPaused: false,
      waiters: [],
      resolveClosed,
      detachSignal: noop,
      leaving: undefined,
    };
    const subscription = new LogSubscriptionImpl(this, member, closed);
    const signal = checked.signal;
    if (signal?.aborted) {
      member.closed = true;
      member.leaving = Promise.resolve();
      resolveClosed(undefined);
      return subscription;
    }
    this.members.add(member);
    this.requestSync(member);
    if (signal !== undefined) {
      const onAbort = () => void this.closeMember(member, undefined);
      signal.addEventListener('abort', onAbort, { once: true });
      member.detachSignal = () => signal.removeEventListener('abort', onAbort);
    }
    this.startMemberTimers();
    return subscription;
  }

  private startMemberTimers(): void {
    if (this.heartbeatTimer === undefined) {
      // Referenced: a live subscription keeps the process running, as a consumer service expects.
      this.heartbeatTimer = setInterval(() => this.heartbeat(), this.options.heartbeatIntervalMs);
    }
    if (!this.watching) {
      this.watching = true;
      this.lastDataVersion = this.readDataVersion() ?? -1;
      this.changes.start();
    }
  }

  private stopMemberTimersIfIdle(): void {
    if (this.members.size > 0) return;
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
    this.changes.stop();
    this.watching = false;
  }

  private heartbeat(): void {
    for (const member of this.members) this.requestSync(member);
  }

  private readDataVersion(): number | undefined {
    try {
      return this.dataVersion.get();
    } catch (error) {
      if (isBusy(error)) return undefined;
      throw error;
    }
  }

  /**
   * Looks for commits by other connections (see `change-watcher.ts`): new records in owned partitions, and group
   * changes. Returns true if there was one.
   */
  private poll(): boolean {
    if (this.closed) return false;
    const version = this.readDataVersion();
    if (version === undefined || version === this.lastDataVersion) return false;
    this.lastDataVersion = version;
    const groups = new Set<string>();
    for (const member of this.members) {
      if (member.closed) continue;
      groups.add(member.group);
      let any = false;
      for (const lp of member.owned.values()) {
        if (!lp.dropped && !lp.handingOver) {
          member.ready.add(lp);
          any = true;
        }
      }
      if (any) wake(member);
    }
    for (const group of groups) {
      let groupVersion: number | undefined;
      try {
        groupVersion = this.groups.version(group);
      } catch (error) {
        if (isBusy(error)) continue;
        throw error;
      }
      if (groupVersion === undefined || this.groupVersions.get(group) === groupVersion) continue;
      this.groupVersions.set(group, groupVersion);
      this.syncGroup(group, undefined);
    }
    return true;
  }

  /** Asks every local member of `group` (but `except`) to rebalance. */
  private syncGroup(group: string, except: Member | undefined): void {
    for (const member of this.members)
      if (member.group === group && member !== except) this.requestSync(member);
  }

  /** Queues a rebalance of `member` (its join, the first time): renew, claim, hand over, release. */
  private requestSync(member: Member): void {
    if (member.closed || member.syncQueued || member.heartbeatsPaused) return;
    member.syncQueued = true;
    let plan: SyncPlan | undefined;
    this.queue.push(
      {
        kind: 'job',
        durable: false,
        savepoint: true,
        records: 0,
        bytes: 0,
        run: () => {
          member.syncQueued = false;
          plan = undefined;
          plan = this.syncRun(member);
        },
        done: () => {
          if (plan !== undefined) this.syncDone(member, plan);
        },
        fail: (error) => {
          member.syncQueued = false;
          if (plan !== undefined) for (const lp of plan.releases) lp.releasing = false;
          if (isTidingsError(error) && !error.retryable && !member.closed) {
            void this.closeMember(member, error);
          }
          // Otherwise (a lock held too long, a transient failure) the next heartbeat tries again.
        },
      },
      true,
    );
  }

  /** Inside a write transaction: one rebalance step of `member` (see `groups.ts` for the protocol). */
  private syncRun(member: Member): SyncPlan | undefined {
    if (member.closed || member.heartbeatsPaused) return undefined;
    const now = this.clock.now();
    const leaseUntil = now + this.options.leaseMs;
    const group = member.group;
    let changed = false;
    if (!member.joined) {
      this.groups.ensureGroup(group, now);
      for (const topic of member.topics) {
        const { meta } = this.storage.ensureTopic(topic, { partitions: this.options.defaultPartitions }, now);
        this.groups.ensurePartitions(group, topic, meta.partitions);
      }
      this.groups.insertMember(group, member.id, member.topics, now, leaseUntil);
      changed = true;
    } else if (!this.groups.renewMember(member.id, leaseUntil)) {
      // The member row is gone (this process was away for many minutes): join again, at the back.
      this.groups.ensureGroup(group, now);
      this.groups.insertMember(group, member.id, member.topics, now, leaseUntil);
      changed = true;
    }
    const live = this.groups.liveMembers(group, now);
    const liveIds = new Set(live.map((m) => m.memberId));
    const rows = this.groups.rows(group);
    const targets = assign(live, partitionCounts(rows)).get(member.id) ?? [];
    const targetKeys = new Set(targets.map((t) => partitionKey(t.topic, t.partition)));
    const plan: SyncPlan = {
      now,
      targets,
      claims: [],
      releases: [],
      handovers: [],
      resumes: [],
      lost: [],
      changed,
    };
    for (const row of rows) {
      const key = partitionKey(row.topic, row.partition);
      const local = member.owned.get(key);
      const isTarget = targetKeys.has(key);
      if (row.owner === member.id) {
        if (local === undefined || local.epoch !== row.epoch) {
          // Owned in the database but not here (state lost): claim it afresh, or give it up.
          if (local !== undefined) plan.lost.push(local);
          if (isTarget) {
            this.claim(member, row, plan);
          } else {
            this.groups.release(group, row.topic, row.partition, member.id, row.epoch, {
              committed: row.committed ?? 0,
              deliveredHigh: row.deliveredHigh ?? 0,
              carry: row.carry,
            });
            plan.changed = true;
          }
          continue;
        }
        if (isTarget) {
          if (local.handingOver) plan.resumes.push(local);
          continue;
        }
        if (local.inflight === 0 || local.handoverExpired) {
          this.groups.release(
            group,
            row.topic,
            row.partition,
            member.id,
            row.epoch,
            this.commitState(local, true),
          );
          local.releasing = true;
          plan.releases.push(local);
          plan.changed = true;
        } else if (!local.handingOver) {
          plan.handovers.push(local);
        }
        continue;
      }
      if (local !== undefined) plan.lost.push(local);
      if (isTarget && (row.owner === null || !liveIds.has(row.owner))) this.claim(member, row, plan);
    }
    if (plan.changed) this.groups.bump(group);
    this.groups.deleteStaleMembers(group, now);
    return plan;
  }

  private claim(member: Member, row: GroupPartitionRow, plan: SyncPlan): void {
    const meta = this.storage.getTopic(row.topic);
    if (meta === undefined) return;
    const committed = row.committed ?? this.storage.resolvePosition(meta, row.partition, member.startFrom);
    if (!this.groups.claim(member.group, row.topic, row.partition, member.id, row.epoch, committed)) return;
    plan.claims.push({
      meta,
      partition: row.partition,
      epoch: row.epoch + 1,
      committed,
      deliveredHigh: row.deliveredHigh,
      carry: row.carry,
    });
    plan.changed = true;
  }

  /** After the rebalance step committed: apply it to the member's local state. */
  private syncDone(member: Member, plan: SyncPlan): void {
    member.joined = true;
    if (member.closed) return;
    member.leaseValidUntil = plan.now + this.options.leaseMs - this.leaseMarginMs;
    member.targets = [...plan.targets].sort(
      (a, b) => compareStrings(a.topic, b.topic) || a.partition - b.partition,
    );
    for (const lp of plan.lost) this.dropLocal(lp);
    for (const lp of plan.releases) this.dropLocal(lp);
    for (const lp of plan.handovers) this.startHandover(lp);
    for (const lp of plan.resumes) {
      lp.handingOver = false;
      lp.handoverExpired = false;
      lp.cancelHandoverTimeout?.();
      lp.cancelHandoverTimeout = undefined;
      member.ready.add(lp);
    }
    for (const claim of plan.claims) this.startLocal(member, claim, plan.now);
    if (plan.changed) this.syncGroup(member.group, member);
    wake(member);
  }

  private startHandover(lp: LocalPartition): void {
    if (lp.handingOver || lp.dropped) return;
    lp.handingOver = true;
    lp.member.ready.delete(lp);
    lp.cancelHandoverTimeout = this.delays.schedule(
      this.clock.now() + this.options.rebalanceTimeoutMs,
      () => {
        lp.cancelHandoverTimeout = undefined;
        if (lp.dropped || !lp.handingOver) return;
        lp.handoverExpired = true;
        this.requestSync(lp.member);
      },
    );
  }

  private startLocal(member: Member, claim: Claim, now: number): void {
    const { meta, partition } = claim;
    const key = partitionKey(meta.name, partition);
    const lp: LocalPartition = {
      member,
      meta,
      topic: meta.name,
      partition,
      pid: meta.pids[partition]!,
      key,
      epoch: claim.epoch,
      committed: claim.committed,
      fetchOffset: claim.committed,
      pending: new Map(),
      redeliver: [],
      redeliverHead: 0,
      counts: new Map(),
      previousHigh: claim.deliveredHigh ?? 0,
      persistedHigh: Math.max(claim.deliveredHigh ?? 0, claim.committed),
      persisting: false,
      inflight: 0,
      handingOver: false,
      handoverExpired: false,
      cancelHandoverTimeout: undefined,
      page: [],
      pageIndex: 0,
      dropped: false,
      releasing: false,
      dirty: false,
    };
    for (const [offset, count, dueAtMs] of parseCarry(claim.carry)) {
      if (offset < lp.committed) continue;
      if (dueAtMs > now) {
        const entry: Pending = { state: 'delayed', count, dueAtMs, cancel: noop };
        lp.pending.set(offset, entry);
        entry.cancel = this.delays.schedule(dueAtMs, () => {
          if (lp.pending.get(offset) === entry) this.markReady(lp, offset, count);
        });
      } else {
        lp.counts.set(offset, count);
      }
    }
    const previous = member.owned.get(key);
    if (previous !== undefined) this.dropLocal(previous);
    member.owned.set(key, lp);
    let watchers = this.watchers.get(lp.pid);
    if (watchers === undefined) this.watchers.set(lp.pid, (watchers = new Set()));
    watchers.add(lp);
    member.ready.add(lp);
  }

  /** Forgets a partition locally: it is lost, released or the member left. Its unsettled deliveries are fenced. */
  private dropLocal(lp: LocalPartition): void {
    if (lp.dropped) return;
    lp.dropped = true;
    for (const entry of lp.pending.values()) if (entry.state === 'delayed') entry.cancel();
    lp.cancelHandoverTimeout?.();
    lp.cancelHandoverTimeout = undefined;
    const member = lp.member;
    if (member.owned.get(lp.key) === lp) member.owned.delete(lp.key);
    member.ready.delete(lp);
    this.watchers.get(lp.pid)?.delete(lp);
    this.dirty.delete(lp);
    lp.page = [];
    lp.pageIndex = 0;
  }

  /**
   * The state a commit (`release` false) or a release writes for a partition. A release writes the exact delivered
   * high mark; a commit keeps the one persisted ahead of deliveries.
   */
  private commitState(lp: LocalPartition, release = false): CommitState {
    const entries: Array<[number, number, number]> = [];
    for (const [offset, entry] of lp.pending) {
      if (entries.length >= maxCarryEntries) break;
      if (entry.state === 'delayed') entries.push([offset, entry.count, entry.dueAtMs]);
      else if (entry.count >= 2) entries.push([offset, entry.count, 0]);
    }
    for (const [offset, count] of lp.counts) {
      if (entries.length >= maxCarryEntries) break;
      if (offset >= lp.committed && !lp.pending.has(offset)) entries.push([offset, count, 0]);
    }
    return {
      committed: lp.committed,
      deliveredHigh: release
        ? Math.max(lp.previousHigh, lp.fetchOffset)
        : Math.max(lp.previousHigh, lp.fetchOffset, lp.persistedHigh),
      carry: entries.length === 0 ? null : JSON.stringify(entries),
    };
  }

  private markDirty(lp: LocalPartition): void {
    if (lp.dirty || lp.dropped) return;
    lp.dirty = true;
    this.dirty.add(lp);
    if (this.commitQueued) return;
    this.commitQueued = true;
    let fenced: LocalPartition[] = [];
    let batch: LocalPartition[] = [];
    this.queue.push(
      {
        kind: 'job',
        durable: false,
        savepoint: false,
        records: 0,
        bytes: 0,
        run: () => {
          this.commitQueued = false;
          batch = [...this.dirty];
          this.dirty.clear();
          fenced = [];
          for (const lp of batch) {
            lp.dirty = false;
            if (lp.dropped || lp.releasing) continue;
            const state = this.commitState(lp);
            if (!this.groups.commit(lp.member.group, lp.topic, lp.partition, lp.member.id, lp.epoch, state)) {
              fenced.push(lp);
            }
          }
        },
        done: () => {
          for (const lp of fenced) {
            if (lp.dropped) continue;
            this.dropLocal(lp);
            this.requestSync(lp.member);
          }
        },
        fail: () => {
          this.commitQueued = false;
          for (const lp of batch) this.markDirty(lp);
        },
      },
      false,
    );
  }

  /** Leaves the group: releases every owned partition with its committed offset, deletes the member row. */
  closeMember(member: Member, error: Error | undefined): Promise<void> {
    if (member.leaving !== undefined) return member.leaving;
    member.closed = true;
    member.detachSignal();
    member.ready.clear();
    wake(member);
    const finish = () => {
      for (const lp of [...member.owned.values()]) this.dropLocal(lp);
      member.targets = [];
      this.members.delete(member);
      this.stopMemberTimersIfIdle();
      member.resolveClosed(error);
    };
    if (!member.joined) {
      // Its join, if still queued, sees it closed and writes nothing.
      finish();
      member.leaving = Promise.resolve();
      return member.leaving;
    }
    member.leaving = new Promise<void>((resolve) => {
      this.queue.push(
        {
          kind: 'job',
          durable: false,
          savepoint: false,
          records: 0,
          bytes: 0,
          run: () => {
            for (const lp of member.owned.values()) {
              if (lp.dropped) continue;
              this.groups.release(
                member.group,
                lp.topic,
                lp.partition,
                member.id,
                lp.epoch,
                this.commitState(lp, true),
              );
            }
            this.groups.releaseAll(member.group, member.id);
            this.groups.deleteMember(member.id);
            this.groups.bump(member.group);
          },
          done: () => {
            finish();
            this.syncGroup(member.group, member);
            resolve();
          },
          fail: () => {
            // Its lease runs out and the others take over then.
            finish();
            resolve();
          },
        },
        true,
      );
    });
    return member.leaving;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Delivery and settlement

  /** The iterator's `next()`: the next delivery for the member, waiting for one; done once the member closed. */
  async next(member: Member): Promise<IteratorResult<Delivery, undefined>> {
    for (;;) {
      if (member.closed) return { done: true, value: undefined };
      if (member.unacked < member.prefetch && this.clock.now() < member.leaseValidUntil) {
        let delivery: Delivery | undefined;
        try {
          delivery = this.take(member);
        } catch (error) {
          if (isBusy(error)) {
            // A reader is kept out for a moment (WAL recovery by another process): the next poll tries again.
          } else {
            void this.closeMember(member, error instanceof Error ? error : new Error(String(error)));
            continue;
          }
        }
        if (delivery !== undefined) return { done: false, value: delivery };
      }
      await new Promise<void>((resolve) => member.waiters.push(resolve));
    }
  }

  /** Hands out one record from the member's ready partitions, round-robin, or `undefined` if none has one. */
  private take(member: Member): Delivery | undefined {
    for (const lp of member.ready) {
      member.ready.delete(lp);
      if (lp.dropped || lp.handingOver) continue;
      const next = this.nextRecord(lp);
      if (next === undefined) continue;
      member.ready.add(lp); // to the back of the line: fair across partitions
      return this.deliver(lp, next.record);
    }
    return undefined;
  }

  /** The next record of the partition to hand out: due redeliveries first, then new records. */
  private nextRecord(lp: LocalPartition): { record: DecodedRecord } | undefined {
    while (lp.redeliverHead < lp.redeliver.length) {
      const offset = lp.redeliver[lp.redeliverHead++]!;
      if (lp.redeliverHead === lp.redeliver.length) {
        lp.redeliver = [];
        lp.redeliverHead = 0;
      }
      if (lp.pending.get(offset)?.state !== 'ready') continue;
      const record = this.storage.readRecord(lp.meta, lp.partition, offset);
      if (record !== undefined) return { record };
      lp.pending.delete(offset); // removed by retention: nothing left to redeliver
      this.advanceCommitted(lp);
    }
    for (;;) {
      if (lp.pageIndex >= lp.page.length) {
        lp.page = this.storage.readPage(lp.meta, lp.partition, lp.fetchOffset, pageRecords, pageBytes, true);
        lp.pageIndex = 0;
        if (lp.page.length === 0) return undefined;
      }
      const record = lp.page[lp.pageIndex]!;
      if (record.offset < lp.fetchOffset) {
        lp.pageIndex++;
        continue;
      }
      if (record.offset >= lp.persistedHigh) {
        // Record in the database that this page (and a little beyond) is being handed out, before handing it out.
        this.persistAhead(
          lp,
          Math.max(lp.page[lp.page.length - 1]!.offset + 1, record.offset + persistAheadSlack),
        );
        return undefined;
      }
      lp.pageIndex++;
      // A gap means retention removed records that were never delivered: skip them.
      lp.fetchOffset = record.offset + 1;
      if (lp.pending.has(record.offset)) continue; // a nack waiting out its delay
      return { record };
    }
  }

  /**
   * Writes `delivered_high = target` for the partition (fenced), then lets it deliver up to `target`. So a member
   * that crashes while handling a record leaves it counted as delivered: its next delivery has `deliveryCount` 2
   * and a poison record cannot crash members forever as a first delivery. One small write per page read.
   */
  private persistAhead(lp: LocalPartition, target: number): void {
    if (lp.persisting) return;
    lp.persisting = true;
    const member = lp.member;
    let owned = false;
    this.queue.push(
      {
        kind: 'job',
        durable: false,
        savepoint: false,
        records: 0,
        bytes: 0,
        run: () => {
          owned =
            lp.dropped ||
            this.groups.persistDeliveredHigh(
              member.group,
              lp.topic,
              lp.partition,
              member.id,
              lp.epoch,
              target,
            );
        },
        done: () => {
          lp.persisting = false;
          if (lp.dropped) return;
          if (!owned) {
            this.dropLocal(lp);
            this.requestSync(member);
            return;
          }
          lp.persistedHigh = Math.max(lp.persistedHigh, target);
          this.notify(lp);
        },
        fail: () => {
          lp.persisting = false;
          // Tried again when the partition is next asked for a record (a poll, a heartbeat, a publish).
        },
      },
      true,
    );
  }

  private countBefore(lp: LocalPartition, offset: number): number {
    const pending = lp.pending.get(offset);
    if (pending !== undefined) return pending.count;
    return lp.counts.get(offset) ?? (offset < lp.previousHigh ? 1 : 0);
  }

  private deliver(lp: LocalPartition, record: DecodedRecord): Delivery {
    const member = lp.member;
    const offset = record.offset;
    const deliveryCount = this.countBefore(lp, offset) + 1;
    lp.counts.delete(offset);
    const state: InFlight = { state: 'inflight', lp, member, offset, count: deliveryCount, settled: false };
    lp.pending.set(offset, state);
    lp.inflight++;
    member.unacked++;
    const topic = lp.topic;
    const partition = lp.partition;
    return {
      topic,
      partition,
      offset,
      key: record.key,
      headers: record.headers,
      // Each decoded record has its own copy of the value; a redelivery is read from the database afresh.
      value: record.value,
      timestamp: record.timestamp,
      deliveryCount,
      ack: () => this.settle(state, undefined),
      nack: (options?: { delayMs?: number }) => {
        const delayMs: unknown = options?.delayMs ?? 0;
        if (typeof delayMs !== 'number' || !Number.isFinite(delayMs) || delayMs < 0) {
          throw new TidingsError(
            ErrorCode.INVALID_CONFIG,
            `nack of offset ${offset} in topic '${topic}' partition ${partition} got delayMs ` +
              `${describeValue(delayMs)}; pass a finite number of milliseconds >= 0. The record was not settled.`,
            { topic, partition, offset, group: member.group },
          );
        }
        this.settle(state, delayMs);
      },
    };
  }

  /** Acks (`delayMs` undefined) or nacks a delivery. No-op if settled already; fenced if its claim ended. */
  private settle(state: InFlight, delayMs: number | undefined): void {
    if (state.settled) return;
    state.settled = true;
    const { lp, member, offset } = state;
    member.unacked--;
    if (!lp.dropped && lp.pending.get(offset) === state) {
      lp.inflight--;
      if (delayMs === undefined) {
        lp.pending.delete(offset);
        if (state.count >= 2 && lp.counts.size < maxCarryEntries) lp.counts.set(offset, state.count);
        this.advanceCommitted(lp);
      } else if (delayMs <= 0) {
        this.markReady(lp, offset, state.count);
      } else {
        const dueAtMs = this.clock.now() + delayMs;
        const entry: Pending = { state: 'delayed', count: state.count, dueAtMs, cancel: noop };
        lp.pending.set(offset, entry);
        entry.cancel = this.delays.schedule(dueAtMs, () => {
          if (lp.pending.get(offset) === entry) this.markReady(lp, offset, state.count);
        });
        this.markDirty(lp); // the delay is carried to the next owner
      }
      if (lp.handingOver && lp.inflight === 0) this.requestSync(member);
    }
    if (!member.closed) wake(member); // a prefetch slot is free
  }

  private markReady(lp: LocalPartition, offset: number, count: number): void {
    lp.pending.set(offset, { state: 'ready', count });
    lp.redeliver.push(offset);
    this.notify(lp);
  }

  /** Tells the partition's member there may be something to deliver. */
  private notify(lp: LocalPartition): void {
    if (lp.dropped || lp.handingOver || lp.member.closed) return;
    lp.member.ready.add(lp);
    wake(lp.member);
  }

  /** Moves the committed offset up to the low-water mark and forgets delivery counts below it. */
  private advanceCommitted(lp: LocalPartition): void {
    const before = lp.committed;
    if (lp.pending.size === 0) {
      lp.committed = Math.max(lp.committed, lp.fetchOffset);
    } else {
      while (lp.committed < lp.fetchOffset && !lp.pending.has(lp.committed)) lp.committed++;
    }
    if (lp.committed === before) return;
    if (lp.counts.size > 0)
      for (const offset of lp.counts.keys()) if (offset < lp.committed) lp.counts.delete(offset);
    this.markDirty(lp);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Retention

  private async runRetention(): Promise<void> {
    if (this.retentionRunning || this.closed) return;
    this.retentionRunning = true;
    try {
      for (const name of this.storage.retainedTopicNames()) {
        const meta = this.storage.getTopic(name);
        if (meta === undefined) continue;
        for (let partition = 0; partition < meta.partitions; partition++) {
          for (;;) {
            if (this.closed) return;
            const removed = await this.write(
              () => this.storage.trim(meta, partition, this.clock.now(), retentionBatchesPerTransaction),
              { urgent: false, durable: false, savepoint: false },
            );
            if (removed < retentionBatchesPerTransaction) break;
          }
        }
      }
      if (!this.closed) {
        await this.write(() => this.storesInternal.prune(this.clock.now()), {
          urgent: false,
          durable: false,
          savepoint: false,
        });
      }
    } catch {
      // Retention is retried at the next interval; a failure here (a lock held too long) loses nothing.
    } finally {
      this.retentionRunning = false;
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Admin

  private checkOpen(what: string): void {
    if (this.closed) throw this.closedError(what);
  }

  private closedError(what: string): TidingsError {
    return new TidingsError(
      ErrorCode.CLOSED,
      `Cannot ${what}: the log transport on ${this.dataDir} is closed. Create a new transport.`,
    );
  }

  private adminCall<T>(call: () => T | Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(this.closedError('use the admin'));
    return new Promise<T>((resolve) => resolve(call()));
  }

  private topicOrThrow(name: string): TopicMeta {
    checkName(name, 'topic', limits.topicNameLength);
    const meta = this.storage.getTopic(name);
    if (meta === undefined) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `Topic '${name}' does not exist in the log at ${this.dataDir}. Create it with admin.createTopic, or ` +
          `publish to it, first.`,
        { topic: name },
      );
    }
    return meta;
  }

  private partitionOrThrow(topic: string, partition: number): TopicMeta {
    const meta = this.topicOrThrow(topic);
    if (!Number.isInteger(partition) || partition < 0) {
      throw invalid(`Partition ${describeValue(partition)} of topic '${topic}' is not an integer >= 0.`, {
        topic,
      });
    }
    if (partition >= meta.partitions) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `Topic '${topic}' has no partition ${partition}; it has partitions 0 to ${meta.partitions - 1}.`,
        { topic, partition },
      );
    }
    return meta;
  }

  private async createTopic(name: string, config: TopicConfig): Promise<void> {
    checkName(name, 'topic', limits.topicNameLength);
    if (typeof config !== 'object' || config === null) {
      throw invalid(
        `createTopic('${name}') needs a config object with partitions, got ${describeValue(config)}.`,
        {
          topic: name,
        },
      );
    }
    const partitions = checkInteger(config.partitions, `partitions of topic '${name}'`, 1, limits.partitions);
    const checked: TopicConfig = { partitions };
    if (config.retentionMs !== undefined) {
      checked.retentionMs = checkInteger(
        config.retentionMs,
        `retentionMs of topic '${name}'`,
        1,
        Number.MAX_SAFE_INTEGER,
      );
    }
    if (config.retentionBytes !== undefined) {
      checked.retentionBytes = checkInteger(
        config.retentionBytes,
        `retentionBytes of topic '${name}'`,
        1,
        Number.MAX_SAFE_INTEGER,
      );
    }
    await this.write(
      () => {
        const { meta, created } = this.storage.ensureTopic(name, checked, this.clock.now());
        if (!created && meta.partitions !== partitions) {
          throw new TidingsError(
            ErrorCode.CONFLICT,
            `Topic '${name}' already exists with ${meta.partitions} partitions, not ${partitions}; the partition ` +
              `count is fixed at creation. Use ${meta.partitions} partitions or another topic name.`,
            { topic: name, partitions: meta.partitions, requestedPartitions: partitions },
          );
        }
      },
      { urgent: true, durable: true, savepoint: true },
    );
  }

  private describeTopic(name: string): TopicDescription {
    const meta = this.topicOrThrow(name);
    const description: TopicDescription = {
      name,
      partitions: meta.partitions,
      partitionOffsets: meta.pids.map((pid, partition) => ({ partition, ...this.storage.offsets(pid) })),
    };
    if (meta.retentionMs !== undefined) description.retentionMs = meta.retentionMs;
    if (meta.retentionBytes !== undefined) description.retentionBytes = meta.retentionBytes;
    return description;
  }

  private read(topic: string, partition: number, fromOffset: number, limit: number): StoredRecord[] {
    const meta = this.partitionOrThrow(topic, partition);
    checkInteger(fromOffset, `fromOffset for read of topic '${topic}'`, 0, Number.MAX_SAFE_INTEGER);
    checkInteger(limit, `limit for read of topic '${topic}'`, 1, readLimitMax);
    const { lowOffset } = this.storage.offsets(meta.pids[partition]!);
    return this.storage
      .readPage(meta, partition, Math.max(fromOffset, lowOffset), limit, adminReadBytes)
      .map((record) => toStoredRecord(topic, partition, record));
  }

  private offsetForTime(topic: string, partition: number, timestamp: number): number {
    const meta = this.partitionOrThrow(topic, partition);
    if (typeof timestamp !== 'number' || Number.isNaN(timestamp)) {
      throw invalid(
        `offsetForTime on topic '${topic}' needs a timestamp in ms, got ${describeValue(timestamp)}.`,
        {
          topic,
        },
      );
    }
    return this.storage.offsetForTime(meta, partition, timestamp);
  }

  private async describeGroup(name: string): Promise<GroupDescription> {
    checkName(name, 'group', limits.groupNameLength);
    await this.queue.idle(); // this transport's acks and rebalances are in the database first
    if (this.groups.version(name) === undefined) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `Group '${name}' does not exist in the log at ${this.dataDir}: no member ever subscribed with it and no ` +
          `offsets were reset for it. Check the group name.`,
        { group: name },
      );
    }
    const now = this.clock.now();
    const live = this.groups.liveMembers(name, now);
    const rows = this.groups.rows(name);
    const assignment = assign(live, partitionCounts(rows));
    const lag: PartitionLag[] = [];
    const sorted = [...rows].sort((a, b) => compareStrings(a.topic, b.topic) || a.partition - b.partition);
    for (const row of sorted) {
      const meta = this.storage.getTopic(row.topic);
      const pid = meta?.pids[row.partition];
      if (pid === undefined) continue;
      const { lowOffset, highOffset } = this.storage.offsets(pid);
      const committedOffset = Math.max(row.committed ?? lowOffset, lowOffset);
      lag.push({
        topic: row.topic,
        partition: row.partition,
        committedOffset,
        highOffset,
        lag: highOffset - committedOffset,
      });
    }
    return {
      group: name,
      members: live.map((member) => ({
        memberId: member.memberId,
        assignments: (assignment.get(member.memberId) ?? []).map((a) => ({
          topic: a.topic,
          partition: a.partition,
        })),
      })),
      lag,
    };
  }

  private async resetOffsets(groupName: string, topicName: string, to: StartPosition): Promise<void> {
    checkName(groupName, 'group', limits.groupNameLength);
    const meta = this.topicOrThrow(topicName);
    const position = checkStartPosition(to, `resetOffsets('${groupName}', '${topicName}')`);
    await this.write(
      () => {
        const now = this.clock.now();
        const live = this.groups.liveMembers(groupName, now);
        if (live.length > 0) {
          const ids = live.map((member) => `${member.memberId} (pid ${member.processId})`).join(', ');
          throw new TidingsError(
            ErrorCode.CONFLICT,
            `Cannot reset offsets of group '${groupName}' on topic '${topicName}': the group has ${live.length} ` +
              `live member${live.length === 1 ? '' : 's'} (${ids}), which would overwrite the reset. Close every ` +
              `subscription of the group (or wait for a dead member's lease to run out), then reset.`,
            {
              group: groupName,
              topic: topicName,
              liveMembers: live.length,
              memberIds: live.map((m) => m.memberId),
            },
          );
        }
        this.groups.ensureGroup(groupName, now);
        this.groups.ensurePartitions(groupName, topicName, meta.partitions);
        for (let partition = 0; partition < meta.partitions; partition++) {
          const committed = this.storage.resolvePosition(meta, partition, position);
          this.groups.reset(groupName, topicName, partition, committed);
        }
        this.groups.bump(groupName);
      },
      { urgent: true, durable: true, savepoint: true },
    );
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Close

  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    this.closed = true;
    this.closing = (async () => {
      clearInterval(this.retentionTimer);
      clearInterval(this.relaxedTimer);
      this.retentionTimer = undefined;
      this.relaxedTimer = undefined;
      await Promise.all([...this.members].map((member) => this.closeMember(member, undefined)));
      clearInterval(this.heartbeatTimer);
      this.heartbeatTimer = undefined;
      this.changes.stop();
      this.watching = false;
      await this.queue.close();
      this.delays.close();
      await this.checkpointer?.close();
      if (this.walFd !== undefined) {
        try {
          if (this.options.durability === 'relaxed') fs.fdatasyncSync(this.walFd);
          fs.closeSync(this.walFd);
        } catch {
          // Closing is best effort here; the database close below checkpoints what it can.
        }
        this.walFd = undefined;
      }
      this.db.close();
    })();
    return this.closing;
  }

  /** Test hook: stop (or resume) renewing the leases of this transport's members, as a hung process would. */
  setHeartbeatsPaused(paused: boolean): void {
    for (const member of this.members) {
      member.heartbeatsPaused = paused;
      if (!paused) this.requestSync(member);
    }
  }
}

/** One queued `publish` call: a class, not closures, since it is made for every call on the hot path. */
class PublishItem implements WriteItem {
  readonly kind = 'append';
  readonly durable = true;
  readonly savepoint = false;
  readonly records: number;
  readonly bytes: number;
  readonly transport: LogTransportImpl;
  readonly topic: string;
  readonly prepared: readonly PreparedRecord[];
  /** Clock time of the call, for topics it creates. */
  readonly now: number;
  acks: PublishAck[] = [];
  resolve: (acks: PublishAck[]) => void = noop;
  reject: (error: Error) => void = noop;
  detach: (() => void) | undefined = undefined;

  constructor(
    transport: LogTransportImpl,
    topic: string,
    prepared: readonly PreparedRecord[],
    bytes: number,
    now: number,
  ) {
    this.transport = transport;
    this.topic = topic;
    this.prepared = prepared;
    this.records = prepared.length;
    this.bytes = bytes;
    this.now = now;
  }

  run(): void {
    this.transport.stagePublish(this);
  }

  done(): void {
    this.detach?.();
    this.resolve(this.acks);
  }

  fail(error: unknown): void {
    this.detach?.();
    this.reject(this.transport.publishError(this.topic, this.records, error));
  }
}

class LogSubscriptionImpl implements LogSubscription {
  readonly group: string;
  readonly memberId: string;
  readonly closed: Promise<Error | undefined>;
  private readonly transport: LogTransportImpl;
  private readonly member: Member;
  private iterated = false;

  constructor(transport: LogTransportImpl, member: Member, closed: Promise<Error | undefined>) {
    this.transport = transport;
    this.member = member;
    this.group = member.group;
    this.memberId = member.id;
    this.closed = closed;
  }

  /** The deliveries, for one `for await` loop (see {@link iterateOnce}). */
  [Symbol.asyncIterator](): AsyncIterator<Delivery, undefined> {
    const iterator = iterateOnce(this, this.iterated, () => this.transport.next(this.member));
    this.iterated = true;
    return iterator;
  }

  assignments(): ReadonlyArray<{ topic: string; partition: number }> {
    return this.member.targets.map((a) => ({ topic: a.topic, partition: a.partition }));
  }

  close(): Promise<void> {
    return this.transport.closeMember(this.member, undefined);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Test hook, not part of the public API: makes every current member of `transport` stop renewing its lease (as a
 * hung or paused process), or resume. The members keep running otherwise, so fencing can be observed.
 */
export function pauseHeartbeatsForTesting(transport: LogTransport, paused: boolean): void {
  if (!(transport instanceof LogTransportImpl)) throw new TypeError('not a log transport');
  transport.setHeartbeatsPaused(paused);
}

// -----------------------------------------------------------------------------------------------------------------
// Helpers

function wake(member: Member): void {
  if (member.waiters.length === 0) return;
  const waiters = member.waiters;
  member.waiters = [];
  for (const resolve of waiters) resolve();
}

function noop(): void {}

function isArray(value: unknown): value is readonly unknown[] {
  return Array.isArray(value);
}

function partitionCounts(rows: readonly GroupPartitionRow[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const row of rows) counts.set(row.topic, Math.max(counts.get(row.topic) ?? 0, row.partition + 1));
  return counts;
}

function parseCarry(carry: string | null): Array<[number, number, number]> {
  if (carry === null) return [];
  try {
    const parsed: unknown = JSON.parse(carry);
    if (!Array.isArray(parsed)) return [];
    return parsed.filter(
      (entry): entry is [number, number, number] =>
        Array.isArray(entry) && entry.length === 3 && entry.every((n) => typeof n === 'number'),
    );
  } catch {
    return []; // Carried counts are advisory: unreadable ones only make delivery counts start lower.
  }
}

function validateOptions(options: LogTransportOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null) {
    throw invalid(`createLogTransport takes an options object or nothing, got ${describeValue(options)}.`);
  }
  for (const key of Object.keys(options)) {
    if (!optionNames.has(key)) {
      throw invalid(
        `createLogTransport got unknown option '${key}'; the options are ${[...optionNames].join(', ')}. Check ` +
          `the spelling.`,
      );
    }
  }
  const clock = options.clock ?? systemClock;
  if (
    typeof clock !== 'object' ||
    clock === null ||
    typeof clock.now !== 'function' ||
    typeof clock.sleep !== 'function'
  ) {
    throw invalid(
      `createLogTransport option clock must have now() and sleep(ms, signal), got ${describeValue(clock)}.`,
    );
  }
  const rawDir = options.dataDir ?? process.env['TIDINGS_DATA_DIR'] ?? './.tidings';
  if (typeof rawDir !== 'string' || rawDir.length === 0) {
    throw invalid(
      `createLogTransport option dataDir must be a non-empty path, got ${describeValue(rawDir)}.`,
    );
  }
  const createIfMissing = options.createIfMissing ?? true;
  if (typeof createIfMissing !== 'boolean') {
    throw invalid(
      `createLogTransport option createIfMissing must be a boolean, got ${describeValue(createIfMissing)}.`,
    );
  }
  const durability = options.durability ?? 'fsync';
  if (durability !== 'fsync' && durability !== 'relaxed') {
    throw invalid(
      `createLogTransport option durability must be 'fsync' or 'relaxed', got ${describeValue(durability)}.`,
    );
  }
  const integer = (name: keyof LogTransportOptions, fallback: number, min: number, max: number): number => {
    const value = options[name];
    return value === undefined
      ? fallback
      : checkInteger(value, `createLogTransport option ${name}`, min, max);
  };
  const leaseMs = integer('leaseMs', defaults.leaseMs, 100, 3_600_000);
  const heartbeatIntervalMs = integer(
    'heartbeatIntervalMs',
    Math.max(10, Math.floor(leaseMs / 5)),
    10,
    Math.floor(leaseMs / 2),
  );
  return {
    dataDir: path.resolve(rawDir),
    createIfMissing,
    defaultPartitions: integer('defaultPartitions', defaults.defaultPartitions, 1, limits.partitions),
    durability,
    maxRecordBytes: integer('maxRecordBytes', defaults.maxRecordBytes, 1, 256 * 1024 * 1024),
    leaseMs,
    heartbeatIntervalMs,
    pollIntervalMs: integer('pollIntervalMs', defaults.pollIntervalMs, 1, 10_000),
    retentionIntervalMs: integer('retentionIntervalMs', defaults.retentionIntervalMs, 10, 86_400_000),
    rebalanceTimeoutMs: integer('rebalanceTimeoutMs', defaults.rebalanceTimeoutMs, 0, 2_147_483_647),
    busyTimeoutMs: integer('busyTimeoutMs', defaults.busyTimeoutMs, 0, 600_000),
    clock,
  };
}
