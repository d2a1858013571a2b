/**
 * The PostgreSQL transport: Kafka-like partitioned topics stored in tables of one schema, consumer groups across
 * processes and hosts with leases and fenced ownership, LISTEN/NOTIFY wake-ups, retention, replay by offset and
 * time. Semantics follow the in-memory reference transport; see {@link createPostgresTransport}.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import type { Clock } from '../core/clock.js';
import { ErrorCode, TidingsError } from '../core/errors.js';
import type {
  Delivery,
  OutgoingRecord,
  PublishAck,
  StartPosition,
  SubscribeOptions,
  Subscription,
  Transport,
  TransportAdmin,
  TransportFeatures,
} from '../core/transport.js';
import { DelayQueue, type CancelDelayed } from '../memory/delay-queue.js';
import { createAdmin } from './admin.js';
import { Listener, clientConfig, createPool, isConnectionError, isTransient } from './connection.js';
import {
  GroupTables,
  assign,
  compareStrings,
  partitionCounts,
  partitionKey,
  commitKey,
  type CommitEntry,
  type CommitState,
  type GroupPartitionRow,
} from './groups.js';
import { resolveOptions, type PostgresTransportOptions, type ResolvedOptions } from './options.js';
import { Publisher } from './publisher.js';
import { PostgresStorage, type DecodedRecord, type TopicMeta } from './storage.js';
import {
  checkName,
  checkSubscribeOptions,
  describeValue,
  limits,
  prepareRecord,
  type PreparedRecord,
} from './validation.js';
import { iterateOnce } from '../core/subscription-iterator.js';

/** A {@link Subscription} of the PostgreSQL transport; `memberId` matches the member in `admin.describeGroup`. */
export interface PostgresSubscription extends Subscription, AsyncDisposable {
  readonly memberId: string;
}

/** The transport returned by {@link createPostgresTransport}. */
export interface PostgresTransport extends Transport {
  readonly name: 'postgres';
  /** The server as messages name it (password hidden). */
  readonly url: string;
  /** The schema holding the transport's tables. */
  readonly schema: string;
  /**
   * Joins `options.group` as a new member. Returns at once; the member joins in the background (publishes through
   * this transport made after `subscribe` returned wait for the join, so `'latest'` includes them). `assignments()`
   * is empty until the join is written. Throws `INVALID_CONFIG` for bad options and `CLOSED` once the transport is
   * closed; with an already aborted `signal` it returns a subscription that is closed and never joined.
   */
  subscribe(options: SubscribeOptions): PostgresSubscription;
}

/** Records and bytes one consumer read takes from a partition: the memory bound per partition (two pages). */
const pageRecords = 1000;
const pageBytes = 1024 * 1024;
/** Non-urgent writes (offset commits) wait at most this long to share a statement. */
const lazyCommitDelayMs = 5;
/** After a failed commit, page read or record load, the next try waits this long. */
const retryDelayMs = 250;
/** Delivery counts and delayed nacks carried to the next owner of a partition, at most. */
const maxCarryEntries = 10_000;
/** Redeliveries loaded from the database in one statement, at most. */
const maxLoadRecords = 1000;
/** Partitions one wake-up names at most; a publish to more wakes the whole topic. */
const maxNotifyPartitions = 500;
/** Payloads of one pg_notify statement, at most. */
const maxNotifyPayloads = 1000;

/**
 * Creates a transport on a PostgreSQL server (see {@link PostgresTransportOptions}). Nothing connects until the first
 * publish, subscribe or admin call; the schema's tables are created then if missing.
 *
 * Contract, beyond the interface docs (and the same as the in-memory transport where not said otherwise):
 * - `publish` validates every record first (`VALIDATION_FAILED`, `EVENT_TOO_LARGE`: nothing written), then queues the
 *   call; calls queued together are written by one statement (at most 4,096 records / 8 MiB; one call is never
 *   split), which takes dense offsets from each partition's counter row and inserts the records in the same
 *   transaction. It resolves once that transaction committed: with the server's default `synchronous_commit = on`
 *   the commit record has been flushed to the WAL on disk, so an acknowledged record survives a crash of the server
 *   or the machine. A wake-up (`NOTIFY`) follows each commit in a separate statement.
 * - Consumer groups span processes and hosts: see `groups.ts` for the lease and fencing protocol. Within a group,
 *   records of one key are delivered in offset order across joins, graceful leaves and takeovers; deliveries of a
 *   member that leaves, crashes or loses its lease are redelivered (with their acked successors) to the next owner.
 *   A member stops handing out a partition's records as soon as it loses it or its own lease lapses; deliveries
 *   already handed out cannot be recalled, and their acks are then ignored (fenced).
 * - Acks commit the low-water mark lazily: within 5 ms, or at once before `admin.describeGroup` of this transport, a
 *   rebalance or `close()`, without waiting for the WAL flush. A crash of the process loses at most the commits of
 *   those last milliseconds, a crash of the server those of its last few hundred (redelivered: at least once).
 * - Consumers read each partition in pages (1,000 records / 1 MiB at most, one page read ahead), so memory stays
 *   bounded whatever the backlog.
 * - While the server is unreachable, publishes and admin calls reject with `TRANSPORT_UNAVAILABLE` naming the server;
 *   subscriptions stay open, stop handing out records once their lease lapses, and resume from the committed offsets
 *   when the server is back (the pool and the LISTEN connection reconnect by themselves).
 * - Retention runs every `retentionIntervalMs` and deletes the oldest records (at most 10,000 per statement).
 *
 * Throws `INVALID_CONFIG` for a bad option.
 */
export function createPostgresTransport(options: PostgresTransportOptions = {}): PostgresTransport {
  return new PostgresTransportImpl(resolveOptions(options));
}

interface Member {
  readonly id: string;
  readonly group: string;
  readonly topics: readonly string[];
  readonly startFrom: StartPosition;
  readonly prefetch: number;
  metas: readonly TopicMeta[] | undefined;
  /** Deliveries handed to this member and not settled by it yet (fenced ones included until settled). */
  unacked: number;
  /** Owned partitions that may have records to deliver, in round-robin order. */
  readonly ready: Set<LocalPartition>;
  /** Partitions this member owns (its claim committed), by `topicId:partition`. */
  readonly owned: Map<string, LocalPartition>;
  /** Partitions assigned to it at its last rebalance, sorted. */
  targets: ReadonlyArray<{ topic: string; partition: number }>;
  /** A rebalance step has been attempted (so a member row may exist). */
  syncAttempted: boolean;
  closed: boolean;
  /** `performance.now()` until which it may hand out records: its lease as last renewed, less a margin. */
  leaseValidUntil: number;
  syncQueued: Promise<void> | undefined;
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
  readonly key: string;
  /** The ownership epoch of the claim; commits are fenced on it. */
  readonly epoch: number;
  /** The low-water mark: every offset below it is processed. */
  committed: number;
  /** The next offset to hand out from the log (redeliveries aside). */
  fetchOffset: number;
  /** The next offset to read from the database into a page. */
  readOffset: number;
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
   * make their next delivery count as a first one. Moved ahead a page at a time, before delivering.
   */
  persistedHigh: number;
  /** The `delivered_high` asked for by the next commit. */
  wantHigh: number;
  /** Deliveries of this claim not settled yet. */
  inflight: number;
  /** No longer assigned here: hands out nothing and releases once `inflight` is 0 or the rebalance timeout passed. */
  handingOver: boolean;
  handoverExpired: boolean;
  cancelHandoverTimeout: CancelDelayed | undefined;
  /** Records read ahead from `fetchOffset`, and the page after them. */
  page: DecodedRecord[];
  pageIndex: number;
  nextPage: DecodedRecord[] | undefined;
  fetching: boolean;
  /** The last page read was full: the next one is read as soon as there is room for it. */
  moreToRead: boolean;
  /** The last read found nothing new; cleared by a wake-up. */
  caughtUp: boolean;
  /** Counts wake-ups, so a read that raced one is repeated. */
  wakeSeq: number;
  loading: boolean;
  retryTimer: NodeJS.Timeout | undefined;
  dropped: boolean;
  /** Its release is being written: hands out nothing. */
  releasing: boolean;
  dirty: boolean;
}

interface InFlight {
  readonly state: 'inflight';
  readonly lp: LocalPartition;
  readonly member: Member;
  readonly offset: number;
  readonly count: number;
  readonly record: DecodedRecord;
  settled: boolean;
}

type Pending =
  | InFlight
  | {
      readonly state: 'delayed';
      readonly count: number;
      readonly dueAtMs: number;
      cancel: CancelDelayed;
      record: DecodedRecord | undefined;
    }
  | { readonly state: 'ready'; readonly count: number; record: DecodedRecord | undefined };

interface Claim {
  readonly meta: TopicMeta;
  readonly partition: number;
  readonly epoch: number;
  readonly committed: number;
  readonly deliveredHigh: number | null;
  readonly carry: string | null;
}

interface SyncPlan {
  targets: ReadonlyArray<{ topic: string; partition: number }>;
  readonly claims: Claim[];
  readonly releases: LocalPartition[];
  readonly handovers: LocalPartition[];
  readonly resumes: LocalPartition[];
  readonly lost: LocalPartition[];
  changed: boolean;
}

class PostgresTransportImpl implements PostgresTransport {
  readonly name = 'postgres';
  readonly features: TransportFeatures;
  readonly admin: TransportAdmin;
  readonly stores = undefined;
  readonly url: string;
  readonly schema: string;

  private readonly options: ResolvedOptions;
  private readonly clock: Clock;
  private readonly pool: pg.Pool;
  private readonly groupPool: pg.Pool;
  private readonly storage: PostgresStorage;
  private readonly groups: GroupTables;
  private readonly publisher: Publisher;
  private readonly listener: Listener;
  private readonly delays: DelayQueue;
  private readonly channel: string;
  private readonly leaseMarginMs: number;
  private readonly members = new Set<Member>();
  /** Per `topicId:partition`, the local partitions to wake when records are appended to it. */
  private readonly watchers = new Map<string, Set<LocalPartition>>();
  /** Member joins not yet attempted: publishes wait for them. */
  private readonly joining = new Set<Promise<void>>();
  private readonly dirty = new Set<LocalPartition>();
  private flushTimer: NodeJS.Timeout | undefined;
  private flushTimerUrgent = false;
  /** Rebalance steps, commits and leaves of this transport run one at a time, in order. */
  private groupOps: Promise<void> = Promise.resolve();
  private notifyPending = new Set<string>();
  private notifying: Promise<void> | undefined;
  private memberSeq = 0;
  private readonly memberPrefix = `m-${process.pid}-${randomBytes(4).toString('hex')}`;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private retentionTimer: NodeJS.Timeout | undefined;
  private retentionRunning = false;
  private syncCount = 0;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(options: ResolvedOptions) {
    this.options = options;
    this.clock = options.clock;
    this.url = options.displayUrl;
    this.schema = options.schema;
    this.leaseMarginMs = Math.min(1000, Math.floor(options.leaseMs / 5));
    this.channel = `tidings:${options.schema}`.slice(0, 63);
    this.pool = createPool(options);
    // Group work runs one step at a time (see `serial`) on a connection of its own, so that offset commits and
    // rebalance steps never wait behind page reads and publishes for a pooled connection.
    this.groupPool = createPool(options, 1);
    this.storage = new PostgresStorage(this.pool, options.schema);
    this.groups = new GroupTables(options.schema);
    this.delays = new DelayQueue(options.clock);
    this.publisher = new Publisher({
      pool: this.pool,
      storage: this.storage,
      clock: options.clock,
      displayUrl: options.displayUrl,
      defaultPartitions: options.defaultPartitions,
      concurrency: Math.max(1, options.poolSize - 1),
      beforeWrite: () => (this.joining.size === 0 ? Promise.resolve() : Promise.all(this.joining).then(noop)),
      afterWrite: (touched) => this.afterWrite(touched),
    });
    this.listener = new Listener(
      clientConfig(options),
      this.channel,
      (payload) => this.onNotification(payload),
      () => this.onListenerConnect(),
    );
    this.features = Object.freeze({
      persistent: true,
      consumerGroups: true,
      perKeyOrder: true,
      replayByOffset: true,
      replayByTime: true,
      nativeDelay: false,
      maxRecordBytes: options.maxRecordBytes,
    });
    this.admin = createAdmin({
      storage: this.storage,
      groups: this.groups,
      pool: this.pool,
      displayUrl: options.displayUrl,
      now: () => this.clock.now(),
      checkOpen: (what) => this.checkOpen(what),
      flushCommits: () => this.flushNow(),
      transaction: (run) => this.transaction(this.pool, run),
      groupChanged: (group) => {
        this.syncGroup(group, undefined);
        this.queueNotify(`g:${group}`);
      },
    });
    this.retentionTimer = setInterval(() => void this.runRetention(), options.retentionIntervalMs);
    this.retentionTimer.unref();
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
    try {
      if (this.closed) {
        throw new TidingsError(
          ErrorCode.CLOSED,
          `Cannot publish to topic '${String(topic)}': the PostgreSQL transport is closed. Create a new transport.`,
          { topic },
        );
      }
      if (signal?.aborted) {
        throw new TidingsError(
          ErrorCode.ABORTED,
          `Publish to topic '${String(topic)}' was aborted before anything was written.`,
          {
            topic,
            cause: signal.reason,
          },
        );
      }
      checkName(topic, 'topic', limits.topicNameLength);
      if (!Array.isArray(records)) {
        throw new TidingsError(
          ErrorCode.VALIDATION_FAILED,
          `publish to topic '${topic}' needs an array of records, got ${describeValue(records)}; nothing was written.`,
          { topic },
        );
      }
      // Validated and copied now, all of them before any is queued: all-or-nothing, and later changes to the caller's
      // buffers or headers cannot leak in.
      const now = this.clock.now();
      prepared = new Array<PreparedRecord>(records.length);
      for (let index = 0; index < records.length; index++) {
        prepared[index] = prepareRecord(
          topic,
          records[index] as OutgoingRecord,
          index,
          now,
          this.options.maxRecordBytes,
        );
      }
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    if (prepared.length === 0) return Promise.resolve([]);
    return this.publisher.publish(topic, prepared, signal);
  }

  /** After a publish committed: wake this transport's consumers of those partitions, and everyone else's. */
  private afterWrite(touched: ReadonlyMap<number, ReadonlySet<number>>): void {
    for (const [topicId, partitions] of touched) {
      for (const partition of partitions) {
        const watchers = this.watchers.get(partitionKey(topicId, partition));
        if (watchers !== undefined) for (const lp of watchers) this.wakePartition(lp);
      }
      // A payload must stay under 8,000 bytes: past a few hundred partitions, wake every partition of the topic.
      this.queueNotify(
        `r:${topicId}:${partitions.size > maxNotifyPartitions ? '*' : [...partitions].join(',')}`,
      );
    }
  }

  /** Sends wake-ups with `pg_notify`, many per statement, one statement at a time. Best effort: consumers also poll. */
  private queueNotify(payload: string): void {
    this.notifyPending.add(payload);
    if (this.notifying !== undefined) return;
    this.notifying = (async () => {
      while (this.notifyPending.size > 0) {
        const payloads = [...this.notifyPending].slice(0, maxNotifyPayloads);
        for (const payload of payloads) this.notifyPending.delete(payload);
        try {
          await this.pool.query({
            name: `${this.schema}:notify`,
            text: 'SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p',
            values: [this.channel, payloads],
          });
        } catch {
          // Lost wake-ups are covered by polling (pollIntervalMs) and by every member's rebalance on reconnect.
        }
      }
      this.notifying = undefined;
    })();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Connections, transactions, notifications

  private async transaction<T>(pool: pg.Pool, run: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    await this.storage.ensureSchema();
    const client = await pool.connect();
    let broken = false;
    try {
      await client.query('BEGIN');
      const result = await run(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      broken = isConnectionError(error);
      if (!broken) {
        await client.query('ROLLBACK').catch(() => {
          broken = true;
        });
      }
      throw error;
    } finally {
      client.release(broken);
    }
  }

  /** Runs group work of this transport one step at a time, in call order. */
  private serial<T>(run: () => Promise<T>): Promise<T> {
    const result = this.groupOps.then(run);
    this.groupOps = result.then(noop, noop);
    return result;
  }

  private onNotification(payload: string): void {
    if (this.closed) return;
    if (payload.startsWith('r:')) {
      const [, topicId, partitions] = payload.split(':');
      if (topicId === undefined || partitions === undefined) return;
      if (partitions === '*') {
        for (const [key, watchers] of this.watchers) {
          if (key.startsWith(`${topicId}:`)) for (const lp of watchers) this.wakePartition(lp);
        }
        return;
      }
      for (const partition of partitions.split(',')) {
        const watchers = this.watchers.get(`${topicId}:${partition}`);
        if (watchers !== undefined) for (const lp of watchers) this.wakePartition(lp);
      }
    } else if (payload.startsWith('g:')) {
      this.syncGroup(payload.slice(2), undefined);
    }
  }

  /** The LISTEN is (again) in place: anything may have happened meanwhile, so rebalance and look for records. */
  private onListenerConnect(): void {
    for (const member of this.members) {
      void this.requestSync(member);
      for (const lp of member.owned.values()) this.wakePartition(lp);
    }
  }

  private wakePartition(lp: LocalPartition): void {
    lp.wakeSeq++;
    lp.caughtUp = false;
    this.notify(lp);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Subscribe and membership

  subscribe(options: SubscribeOptions): PostgresSubscription {
    const checked = checkSubscribeOptions(options);
    if (this.closed) {
      throw new TidingsError(
        ErrorCode.CLOSED,
        `Cannot subscribe group '${checked.group}': the PostgreSQL transport is closed. Create a new transport.`,
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
      metas: undefined,
      unacked: 0,
      ready: new Set(),
      owned: new Map(),
      targets: [],
      syncAttempted: false,
      closed: false,
      leaseValidUntil: Number.NEGATIVE_INFINITY,
      syncQueued: undefined,
      heartbeatsPaused: false,
      waiters: [],
      resolveClosed,
      detachSignal: noop,
      leaving: undefined,
    };
    const subscription = new PostgresSubscriptionImpl(this, member, closed);
    const signal = checked.signal;
    if (signal?.aborted) {
      member.closed = true;
      member.leaving = Promise.resolve();
      resolveClosed(undefined);
      return subscription;
    }
    this.members.add(member);
    const join = this.requestSync(member);
    this.joining.add(join);
    void join.finally(() => this.joining.delete(join));
    if (signal !== undefined) {
      const onAbort = () => void this.closeMember(member, undefined);
      signal.addEventListener('abort', onAbort, { once: true });
      member.detachSignal = () => signal.removeEventListener('abort', onAbort);
    }
    this.startMemberTimers();
    return subscription;
  }

  private startMemberTimers(): void {
    // Referenced: a live subscription keeps the process running, as a consumer service expects.
    this.heartbeatTimer ??= setInterval(() => {
      for (const member of this.members) void this.requestSync(member);
    }, this.options.heartbeatIntervalMs);
    if (this.pollTimer === undefined) {
      this.pollTimer = setInterval(() => {
        for (const member of this.members) {
          for (const lp of member.owned.values()) if (lp.caughtUp) this.wakePartition(lp);
        }
      }, this.options.pollIntervalMs);
      this.pollTimer.unref();
    }
    this.listener.start();
  }

  private stopMemberTimersIfIdle(): void {
    if (this.members.size > 0) return;
    clearInterval(this.heartbeatTimer);
    clearInterval(this.pollTimer);
    this.heartbeatTimer = undefined;
    this.pollTimer = undefined;
    void this.listener.stop();
  }

  /** Asks every local member of `group` (but `except`) to rebalance. */
  private syncGroup(group: string, except: Member | undefined): void {
    for (const member of this.members)
      if (member.group === group && member !== except) void this.requestSync(member);
  }

  /** Queues a rebalance step of `member` (its join, the first time); resolves once it was attempted. */
  private requestSync(member: Member): Promise<void> {
    if (member.closed || member.heartbeatsPaused) return Promise.resolve();
    if (member.syncQueued !== undefined) return member.syncQueued;
    const step = this.serial(async () => {
      member.syncQueued = undefined;
      if (member.closed || member.heartbeatsPaused) return;
      member.syncAttempted = true;
      const startedAt = performance.now();
      const plan: SyncPlan = {
        targets: [],
        claims: [],
        releases: [],
        handovers: [],
        resumes: [],
        lost: [],
        changed: false,
      };
      try {
        member.metas ??= await Promise.all(
          member.topics.map(
            async (topic) =>
              (
                await this.storage.ensureTopic(
                  topic,
                  { partitions: this.options.defaultPartitions },
                  this.clock.now(),
                )
              ).meta,
          ),
        );
        const metas = member.metas;
        await this.transaction(this.groupPool, (client) => this.syncRun(member, metas, client, plan));
      } catch (error) {
        for (const lp of plan.releases) {
          lp.releasing = false;
          this.notify(lp);
        }
        if (!isTransient(error) && !member.closed) {
          void this.closeMember(member, error instanceof Error ? error : new Error(String(error)));
        }
        // Otherwise (the server is away, a deadlock) the next heartbeat tries again.
        return;
      }
      this.syncDone(member, plan, startedAt);
    });
    member.syncQueued = step;
    return step;
  }

  /** Inside a transaction holding the group's lock: one rebalance step of `member` (see `groups.ts`). */
  private async syncRun(
    member: Member,
    metas: readonly TopicMeta[],
    client: pg.PoolClient,
    plan: SyncPlan,
  ): Promise<void> {
    const group = member.group;
    const { nowMs } = await this.groups.lockGroup(client, group, this.clock.now());
    if (member.closed) return;
    if (
      await this.groups.upsertMember(client, group, member.id, member.topics, nowMs, this.options.leaseMs)
    ) {
      await this.groups.ensurePartitions(
        client,
        group,
        metas.map((meta) => meta.id),
      );
      plan.changed = true;
    }
    const live = (await this.groups.members(client, group)).filter((row) => row.leaseUntil > nowMs);
    const liveIds = new Set(live.map((row) => row.memberId));
    const rows = await this.groups.rows(client, group);
    const targets = assign(live, partitionCounts(rows)).get(member.id) ?? [];
    const targetKeys = new Set(targets.map((t) => `${t.topic}\u0000${t.partition}`));
    plan.targets = targets;
    for (const row of rows) {
      const key = partitionKey(row.topicId, row.partition);
      const local = member.owned.get(key);
      const isTarget = targetKeys.has(`${row.topic}\u0000${row.partition}`);
      if (row.owner === member.id) {
        if (local === undefined || local.epoch !== row.epoch) {
          // Owned in the database but not here (a commit's outcome was lost): claim it afresh, or give it up.
          if (local !== undefined) plan.lost.push(local);
          if (isTarget) {
            await this.claim(client, member, row, plan);
          } else {
            await this.groups.release(client, group, row.topicId, row.partition, member.id, row.epoch, {
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
        if ((local.inflight === 0 || local.handoverExpired) && !local.releasing) {
          // Stop handing out records before the state is read, so nothing is delivered after it.
          local.releasing = true;
          plan.releases.push(local);
          await this.groups.release(
            client,
            group,
            row.topicId,
            row.partition,
            member.id,
            row.epoch,
            this.commitState(local, true),
          );
          plan.changed = true;
        } else if (!local.handingOver) {
          plan.handovers.push(local);
        }
        continue;
      }
      if (local !== undefined) plan.lost.push(local);
      if (isTarget && (row.owner === null || !liveIds.has(row.owner)))
        await this.claim(client, member, row, plan);
    }
    if (plan.changed) await this.groups.bump(client, group);
    if (++this.syncCount % 50 === 0) await this.groups.deleteStaleMembers(client, group, nowMs);
  }

  private async claim(
    client: pg.PoolClient,
    member: Member,
    row: GroupPartitionRow,
    plan: SyncPlan,
  ): Promise<void> {
    const meta = await this.storage.getTopic(row.topic, client);
    if (meta === undefined) return;
    const committed =
      row.committed ?? (await this.storage.resolvePosition(meta, row.partition, member.startFrom, client));
    if (!(await this.groups.claim(client, member.group, row, member.id, committed))) return;
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
  private syncDone(member: Member, plan: SyncPlan, startedAt: number): void {
    if (member.closed) return;
    member.leaseValidUntil = startedAt + this.options.leaseMs - this.leaseMarginMs;
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
    for (const claim of plan.claims) this.startLocal(member, claim);
    if (plan.changed) {
      this.syncGroup(member.group, member);
      this.queueNotify(`g:${member.group}`);
    }
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
        void this.requestSync(lp.member);
      },
    );
  }

  private startLocal(member: Member, claim: Claim): void {
    const { meta, partition } = claim;
    const key = partitionKey(meta.id, partition);
    const persistedHigh = Math.max(claim.deliveredHigh ?? 0, claim.committed);
    const lp: LocalPartition = {
      member,
      meta,
      topic: meta.name,
      partition,
      key,
      epoch: claim.epoch,
      committed: claim.committed,
      fetchOffset: claim.committed,
      readOffset: claim.committed,
      pending: new Map(),
      redeliver: [],
      redeliverHead: 0,
      counts: new Map(),
      previousHigh: claim.deliveredHigh ?? 0,
      persistedHigh,
      wantHigh: persistedHigh,
      inflight: 0,
      handingOver: false,
      handoverExpired: false,
      cancelHandoverTimeout: undefined,
      page: [],
      pageIndex: 0,
      nextPage: undefined,
      fetching: false,
      moreToRead: false,
      caughtUp: false,
      wakeSeq: 0,
      loading: false,
      retryTimer: undefined,
      dropped: false,
      releasing: false,
      dirty: false,
    };
    const now = this.clock.now();
    for (const [offset, count, dueAtMs] of parseCarry(claim.carry)) {
      if (offset < lp.committed) continue;
      if (dueAtMs > now) {
        const entry: Pending = { state: 'delayed', count, dueAtMs, cancel: noop, record: undefined };
        lp.pending.set(offset, entry);
        entry.cancel = this.delays.schedule(dueAtMs, () => {
          if (lp.pending.get(offset) === entry) this.markReady(lp, offset, count, undefined);
        });
      } else {
        lp.counts.set(offset, count);
      }
    }
    const previous = member.owned.get(key);
    if (previous !== undefined) this.dropLocal(previous);
    member.owned.set(key, lp);
    let watchers = this.watchers.get(key);
    if (watchers === undefined) this.watchers.set(key, (watchers = new Set()));
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
    clearTimeout(lp.retryTimer);
    const member = lp.member;
    if (member.owned.get(lp.key) === lp) member.owned.delete(lp.key);
    member.ready.delete(lp);
    this.watchers.get(lp.key)?.delete(lp);
    this.dirty.delete(lp);
    lp.page = [];
    lp.pageIndex = 0;
    lp.nextPage = undefined;
  }

  /**
   * The state a commit (`release` false) or a release writes for a partition. A release writes the exact delivered
   * high mark; a commit keeps the one persisted (or being persisted) ahead of deliveries.
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
        : Math.max(lp.previousHigh, lp.fetchOffset, lp.persistedHigh, lp.wantHigh),
      carry: entries.length === 0 ? null : JSON.stringify(entries),
    };
  }

  private markDirty(lp: LocalPartition, urgent: boolean): void {
    if (lp.dropped) return;
    if (!lp.dirty) {
      lp.dirty = true;
      this.dirty.add(lp);
    }
    this.scheduleFlush(urgent ? 0 : lazyCommitDelayMs);
  }

  private scheduleFlush(delayMs: number): void {
    if (this.flushTimer !== undefined) {
      if (delayMs > 0 || this.flushTimerUrgent) return;
      clearTimeout(this.flushTimer);
    }
    this.flushTimerUrgent = delayMs === 0;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      void this.flush();
    }, delayMs);
  }

  /** Writes pending commits now; resolves once they are written (or failed, to be retried). */
  private flushNow(): Promise<void> {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    return this.flush();
  }

  /** One fenced statement commits every dirty partition of this transport; fenced ones are dropped. */
  private flush(): Promise<void> {
    return this.serial(async () => {
      if (this.dirty.size === 0) return;
      const batch = [...this.dirty];
      this.dirty.clear();
      const entries: CommitEntry[] = [];
      const written: LocalPartition[] = [];
      const wanted: number[] = [];
      for (const lp of batch) {
        lp.dirty = false;
        if (lp.dropped || lp.releasing) continue;
        written.push(lp);
        wanted.push(lp.wantHigh);
        entries.push({
          ...this.commitState(lp),
          group: lp.member.group,
          topicId: lp.meta.id,
          partition: lp.partition,
          memberId: lp.member.id,
          epoch: lp.epoch,
        });
      }
      if (entries.length === 0) return;
      let done: Set<string>;
      try {
        await this.storage.ensureSchema();
        done = await this.groups.commitMany(this.groupPool, entries);
      } catch {
        for (const lp of written) {
          if (lp.dropped || lp.dirty) continue;
          lp.dirty = true;
          this.dirty.add(lp);
        }
        if (!this.closed) this.scheduleFlush(retryDelayMs);
        return;
      }
      written.forEach((lp, index) => {
        if (lp.dropped) return;
        if (!done.has(commitKey(lp.member.group, lp.meta.id, lp.partition))) {
          // Fenced: another member owns the partition now.
          this.dropLocal(lp);
          void this.requestSync(lp.member);
          return;
        }
        const high = wanted[index]!;
        if (high > lp.persistedHigh) {
          lp.persistedHigh = high;
          this.notify(lp);
        }
      });
    });
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
    let left = false;
    member.leaving = this.serial(async () => {
      if (!member.syncAttempted) return;
      await this.transaction(this.groupPool, async (client) => {
        await this.groups.lockGroup(client, member.group, this.clock.now());
        for (const lp of member.owned.values()) {
          if (lp.dropped) continue;
          await this.groups.release(
            client,
            member.group,
            lp.meta.id,
            lp.partition,
            member.id,
            lp.epoch,
            this.commitState(lp, true),
          );
        }
        await this.groups.releaseAll(client, member.group, member.id);
        await this.groups.deleteMember(client, member.id);
        await this.groups.bump(client, member.group);
      });
      left = true;
    })
      .catch(() => {
        // The server is away: the member's lease runs out and the others take over then.
      })
      .finally(() => {
        finish();
        if (left) {
          this.syncGroup(member.group, member);
          this.queueNotify(`g:${member.group}`);
        }
      });
    return member.leaving;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Delivery and settlement

  /** The iterator's `next()`: the next delivery for the member, waiting for one; done once the member closed. */
  next(member: Member): Promise<IteratorResult<Delivery, undefined>> {
    // Fast path, without an async frame: a record is in memory now.
    if (!member.closed && member.unacked < member.prefetch && performance.now() < member.leaseValidUntil) {
      const delivery = this.take(member);
      if (delivery !== undefined) return Promise.resolve({ done: false, value: delivery });
    }
    return this.waitNext(member);
  }

  private async waitNext(member: Member): Promise<IteratorResult<Delivery, undefined>> {
    for (;;) {
      if (member.closed) return { done: true, value: undefined };
      if (member.unacked < member.prefetch && performance.now() < member.leaseValidUntil) {
        const delivery = this.take(member);
        if (delivery !== undefined) return { done: false, value: delivery };
      }
      await new Promise<void>((resolve) => member.waiters.push(resolve));
    }
  }

  /** Hands out one record from the member's ready partitions, round-robin, or `undefined` if none has one now. */
  private take(member: Member): Delivery | undefined {
    for (const lp of member.ready) {
      member.ready.delete(lp);
      if (lp.dropped || lp.handingOver || lp.releasing) continue;
      const next = this.nextRecord(lp);
      if (next === undefined) continue;
      member.ready.add(lp); // to the back of the line: fair across partitions
      return this.deliver(lp, next.record, next.redelivery);
    }
    return undefined;
  }

  /**
   * The next record of the partition to hand out, due redeliveries first, then new records; `undefined` when there is
   * none in memory (a read is started; the partition is woken when it completes).
   */
  private nextRecord(lp: LocalPartition): { record: DecodedRecord; redelivery: boolean } | undefined {
    while (lp.redeliverHead < lp.redeliver.length) {
      const offset = lp.redeliver[lp.redeliverHead]!;
      const entry = lp.pending.get(offset);
      if (entry?.state !== 'ready') {
        this.shiftRedeliver(lp);
        continue;
      }
      if (entry.record === undefined) {
        this.loadRedeliveries(lp);
        return undefined;
      }
      this.shiftRedeliver(lp);
      return { record: entry.record, redelivery: true };
    }
    for (;;) {
      if (lp.pageIndex >= lp.page.length) {
        if (lp.nextPage !== undefined) {
          lp.page = lp.nextPage;
          lp.nextPage = undefined;
          lp.pageIndex = 0;
          continue;
        }
        lp.page = [];
        lp.pageIndex = 0;
        this.fetch(lp);
        return undefined;
      }
      const record = lp.page[lp.pageIndex]!;
      if (record.offset < lp.fetchOffset) {
        lp.pageIndex++;
        continue;
      }
      if (record.offset >= lp.persistedHigh) {
        // Record in the database that the records read so far are being handed out, then hand them out.
        this.persistAhead(lp);
        return undefined;
      }
      lp.pageIndex++;
      // A gap means retention removed records that were never delivered: skip them.
      lp.fetchOffset = record.offset + 1;
      if (lp.nextPage === undefined && lp.moreToRead) this.fetch(lp); // read the next page while this one is handed out
      if (lp.pending.has(record.offset)) continue; // a nack waiting out its delay
      return { record, redelivery: false };
    }
  }

  private shiftRedeliver(lp: LocalPartition): void {
    lp.redeliverHead++;
    if (lp.redeliverHead >= lp.redeliver.length) {
      lp.redeliver = [];
      lp.redeliverHead = 0;
    }
  }

  /** Reads the next page of the partition in the background; wakes the partition when it has records. */
  private fetch(lp: LocalPartition): void {
    if (lp.fetching || lp.dropped || lp.caughtUp || lp.retryTimer !== undefined) return;
    lp.fetching = true;
    const from = lp.readOffset;
    const wakeSeq = lp.wakeSeq;
    this.storage.readPage(lp.meta.id, lp.partition, from, pageRecords, pageBytes).then(
      (records) => {
        lp.fetching = false;
        if (lp.dropped) return;
        if (records.length === 0) {
          if (lp.wakeSeq === wakeSeq) lp.caughtUp = true;
          else this.fetch(lp); // a wake-up raced the read: read again
          return;
        }
        lp.readOffset = records[records.length - 1]!.offset + 1;
        if (lp.pageIndex >= lp.page.length) {
          lp.page = records;
          lp.pageIndex = 0;
        } else {
          lp.nextPage = records;
        }
        // A full page (by count or bytes) means more is probably stored: read on at once.
        let bytes = 0;
        for (const record of records) bytes += record.value.byteLength;
        lp.moreToRead = records.length >= pageRecords || bytes * 2 >= pageBytes;
        if (lp.readOffset > lp.wantHigh) {
          lp.wantHigh = lp.readOffset;
          this.markDirty(lp, true);
        }
        this.notify(lp);
      },
      () => {
        lp.fetching = false;
        this.retryLater(lp);
      },
    );
  }

  private retryLater(lp: LocalPartition): void {
    if (lp.dropped || lp.retryTimer !== undefined) return;
    lp.retryTimer = setTimeout(() => {
      lp.retryTimer = undefined;
      this.notify(lp);
    }, retryDelayMs);
    lp.retryTimer.unref();
  }

  /** Asks the next commit to record `delivered_high` up to what has been read, before handing it out. */
  private persistAhead(lp: LocalPartition): void {
    if (lp.wantHigh < lp.readOffset) lp.wantHigh = lp.readOffset;
    if (lp.wantHigh > lp.persistedHigh) this.markDirty(lp, true);
  }

  /** Loads redeliveries carried in from a previous owner (their records are not in memory). */
  private loadRedeliveries(lp: LocalPartition): void {
    if (lp.loading || lp.dropped || lp.retryTimer !== undefined) return;
    const offsets: number[] = [];
    for (let i = lp.redeliverHead; i < lp.redeliver.length && offsets.length < maxLoadRecords; i++) {
      const offset = lp.redeliver[i]!;
      const entry = lp.pending.get(offset);
      if (entry?.state === 'ready' && entry.record === undefined) offsets.push(offset);
    }
    if (offsets.length === 0) return;
    lp.loading = true;
    this.storage.readRecords(lp.meta.id, lp.partition, offsets).then(
      (records) => {
        lp.loading = false;
        if (lp.dropped) return;
        const found = new Map(records.map((record) => [record.offset, record]));
        for (const offset of offsets) {
          const entry = lp.pending.get(offset);
          if (entry?.state !== 'ready' || entry.record !== undefined) continue;
          const record = found.get(offset);
          if (record !== undefined) {
            entry.record = record;
          } else {
            lp.pending.delete(offset); // removed by retention: nothing left to redeliver
          }
        }
        this.advanceCommitted(lp);
        this.notify(lp);
      },
      () => {
        lp.loading = false;
        this.retryLater(lp);
      },
    );
  }

  private countBefore(lp: LocalPartition, offset: number): number {
    const pending = lp.pending.get(offset);
    if (pending !== undefined) return pending.count;
    return lp.counts.get(offset) ?? (offset < lp.previousHigh ? 1 : 0);
  }

  private deliver(lp: LocalPartition, record: DecodedRecord, redelivery: boolean): Delivery {
    const member = lp.member;
    const offset = record.offset;
    const deliveryCount = this.countBefore(lp, offset) + 1;
    lp.counts.delete(offset);
    const state: InFlight = {
      state: 'inflight',
      lp,
      member,
      offset,
      count: deliveryCount,
      record,
      settled: false,
    };
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
      // A first delivery owns the value read from the database; a redelivery from memory gets its own copy.
      value: redelivery ? new Uint8Array(record.value) : record.value,
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
        this.markReady(lp, offset, state.count, state.record);
      } else {
        const dueAtMs = this.clock.now() + delayMs;
        const entry: Pending = {
          state: 'delayed',
          count: state.count,
          dueAtMs,
          cancel: noop,
          // Not kept in memory while it waits (nacks with delays may pile up): read again when it is due.
          record: undefined,
        };
        lp.pending.set(offset, entry);
        entry.cancel = this.delays.schedule(dueAtMs, () => {
          if (lp.pending.get(offset) === entry) this.markReady(lp, offset, state.count, entry.record);
        });
        this.markDirty(lp, false); // the delay is carried to the next owner
      }
      if (lp.handingOver && lp.inflight === 0) void this.requestSync(member);
    }
    if (!member.closed) wake(member); // a prefetch slot is free
  }

  private markReady(
    lp: LocalPartition,
    offset: number,
    count: number,
    record: DecodedRecord | undefined,
  ): void {
    lp.pending.set(offset, { state: 'ready', count, record });
    lp.redeliver.push(offset);
    this.notify(lp);
  }

  /** Tells the partition's member there may be something to deliver. */
  private notify(lp: LocalPartition): void {
    if (lp.dropped || lp.handingOver || lp.releasing || lp.member.closed) return;
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
    this.markDirty(lp, false);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Retention

  private async runRetention(): Promise<void> {
    if (this.retentionRunning || this.closed) return;
    this.retentionRunning = true;
    try {
      for (const meta of await this.storage.retainedTopics()) {
        for (let partition = 0; partition < meta.partitions; partition++) {
          for (;;) {
            if (this.closed) return;
            const removed = await this.storage.trim(meta, partition, this.clock.now());
            if (removed < 10_000) break;
          }
        }
      }
    } catch {
      // Retried at the next interval; a failure here (the server away) loses nothing.
    } finally {
      this.retentionRunning = false;
    }
  }

  /** Test hook: runs retention now. */
  retentionNow(): Promise<void> {
    return this.runRetention();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Close

  private checkOpen(what: string): void {
    if (this.closed) {
      throw new TidingsError(
        ErrorCode.CLOSED,
        `Cannot ${what}: the PostgreSQL transport on ${this.url} is closed. Create a new transport.`,
      );
    }
  }

  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    this.closed = true;
    this.closing = (async () => {
      clearInterval(this.retentionTimer);
      this.retentionTimer = undefined;
      await this.publisher.idle();
      await Promise.all([...this.members].map((member) => this.closeMember(member, undefined)));
      clearInterval(this.heartbeatTimer);
      clearInterval(this.pollTimer);
      this.heartbeatTimer = undefined;
      this.pollTimer = undefined;
      clearTimeout(this.flushTimer);
      this.flushTimer = undefined;
      await this.listener.stop();
      await this.groupOps;
      await this.notifying;
      this.delays.close();
      await Promise.all([this.pool.end().catch(() => {}), this.groupPool.end().catch(() => {})]);
    })();
    return this.closing;
  }

  /** Test hook: stop (or resume) renewing the leases of this transport's members, as a hung process would. */
  setHeartbeatsPaused(paused: boolean): void {
    for (const member of this.members) {
      member.heartbeatsPaused = paused;
      if (!paused) void this.requestSync(member);
    }
  }
}

class PostgresSubscriptionImpl implements PostgresSubscription {
  readonly group: string;
  readonly memberId: string;
  readonly closed: Promise<Error | undefined>;
  private readonly transport: PostgresTransportImpl;
  private readonly member: Member;
  private iterated = false;

  constructor(transport: PostgresTransportImpl, member: Member, closed: Promise<Error | undefined>) {
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
export function pauseHeartbeatsForTesting(transport: PostgresTransport, paused: boolean): void {
  if (!(transport instanceof PostgresTransportImpl)) throw new TypeError('not a PostgreSQL transport');
  transport.setHeartbeatsPaused(paused);
}

/** Test hook, not part of the public API: runs retention now and resolves when it finished. */
export function runRetentionForTesting(transport: PostgresTransport): Promise<void> {
  if (!(transport instanceof PostgresTransportImpl)) throw new TypeError('not a PostgreSQL transport');
  return transport.retentionNow();
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
