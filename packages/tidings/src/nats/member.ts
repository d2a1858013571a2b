/**
 * One member of a consumer group (what `subscribe` returns): joins the group (topics ensured, lease written),
 * renews its lease, computes its share of the partitions from the group's live members, claims and releases them
 * through partition workers, and hands out their records round-robin within its prefetch bound.
 */
import { randomBytes } from 'node:crypto';
import { ErrorCode, isTidingsError } from '../core/errors.js';
import type { Delivery, StartPosition, Subscription } from '../core/transport.js';
import { backoffMs, pause, type NatsContext } from './context.js';
import type { GroupListener, GroupSession } from './group-session.js';
import { assign, isLive, type GroupValue, type MemberValue } from './groups.js';
import { PartitionWorker, type WorkerOwner } from './partition-worker.js';
import type { CheckedSubscribeOptions } from './validation.js';
import { iterateOnce } from '../core/subscription-iterator.js';

/** What a member needs from its transport. */
export interface MemberHost {
  /** The member left the group (closed); the transport forgets it. */
  memberClosed(member: NatsMember): void;
  report(error: unknown, what: string): void;
}

/** How long after its lease passed a member entry is deleted by the others (harmless until then). */
const staleMemberGraceMs = 60_000;

export class NatsMember implements GroupListener, WorkerOwner {
  readonly memberId: string;
  readonly group: string;
  readonly topics: readonly string[];
  readonly startFrom: StartPosition;
  readonly prefetch: number;
  readonly subscription: NatsSubscription;
  /** Settles once the member has read the partitions' ends (or failed to): publishes of the transport wait. */
  readonly snapshotTaken: Promise<void>;
  /** Settles once the first attempt to join finished (or failed): admin calls on the group wait for it. */
  readonly firstJoin: Promise<void>;

  private readonly ctx: NatsContext;
  private readonly session: GroupSession;
  private readonly host: MemberHost;
  private readonly signal: AbortSignal | undefined;
  private readonly closing = new AbortController();
  private closedPromise: Promise<void> | undefined;
  private resolveClosed!: (value: Error | undefined) => void;
  private resolveSnapshot!: () => void;
  private resolveFirstJoin!: () => void;
  private readonly partitionCounts = new Map<string, number>();
  private latest: Map<string, number[]> | undefined;
  private readonly joinedAtMs: number;
  private joined = false;
  /**
   * Until when (local monotonic ms, `performance.now()`) this member may hand out records: from before its last
   * successful renewal was sent, plus the lease, less a margin.
   */
  private leaseValidUntil = 0;
  private readonly workers = new Map<string, PartitionWorker>();
  /** The workers as an array for round-robin hand-out; rebuilt when they change. */
  private workerList: PartitionWorker[] | undefined;
  /** Partitions whose last claim failed: not claimed again before this time. */
  private readonly claimNotBefore = new Map<string, number>();
  private assigned: Array<{ topic: string; partition: number }> = [];
  private unacked = 0;
  private waiters: Array<(result: IteratorResult<Delivery, undefined>) => void> = [];
  private roundRobin = 0;
  private reconciling = false;
  private reconcileAgain = false;

  constructor(ctx: NatsContext, options: CheckedSubscribeOptions, session: GroupSession, host: MemberHost) {
    this.ctx = ctx;
    this.session = session;
    this.host = host;
    this.group = options.group;
    this.topics = options.topics;
    this.startFrom = options.startFrom;
    this.prefetch = options.prefetch;
    this.signal = options.signal;
    this.joinedAtMs = ctx.clock.now();
    this.memberId = `${this.joinedAtMs.toString(36)}-${randomBytes(5).toString('hex')}`;
    const closed = new Promise<Error | undefined>((resolve) => (this.resolveClosed = resolve));
    this.snapshotTaken = new Promise<void>((resolve) => (this.resolveSnapshot = resolve));
    this.firstJoin = new Promise<void>((resolve) => (this.resolveFirstJoin = resolve));
    this.subscription = new NatsSubscription(this, closed);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Lifecycle

  /** Joins in the background; a subscription whose signal already aborted is born closed. */
  start(): void {
    if (this.signal?.aborted) {
      this.resolveSnapshot();
      this.resolveFirstJoin();
      void this.close();
      return;
    }
    this.signal?.addEventListener('abort', this.onAbort, { once: true });
    void this.run();
  }

  private readonly onAbort = () => void this.close();

  private get isClosing(): boolean {
    return this.closing.signal.aborted;
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.isClosing && !this.joined) {
      try {
        await this.join();
      } catch (error) {
        if (this.isClosing) return;
        if (
          isTidingsError(error) &&
          (error.code === ErrorCode.CONFLICT || error.code === ErrorCode.INVALID_CONFIG)
        ) {
          await this.close(error);
          return;
        }
        this.host.report(error, `joining group '${this.group}'`);
        failures++;
        await pause(backoffMs(failures, this.ctx.options.heartbeatIntervalMs), this.closing.signal);
      } finally {
        this.resolveSnapshot();
        this.resolveFirstJoin();
      }
    }
    while (!this.isClosing) {
      await pause(this.ctx.options.heartbeatIntervalMs, this.closing.signal);
      if (this.isClosing) return;
      try {
        await this.renew();
      } catch (error) {
        this.host.report(error, `renewing the lease of member ${this.memberId} of group '${this.group}'`);
      }
      this.onGroupChange();
    }
  }

  private async join(): Promise<void> {
    const { topics, bucket, names, clock } = this.ctx;
    const registration: GroupValue = { group: this.group, createdAtMs: clock.now() };
    await bucket.create(names.groupKey(this.group), registration);
    for (const topic of this.topics) {
      const meta = await topics.ensure(topic);
      this.partitionCounts.set(topic, meta.partitions);
    }
    // The partitions' ends as of the join: 'latest' starts there, and no other start position goes past them, so a
    // record published after `subscribe` returned is included whenever the claim happens.
    if (this.startFrom !== 'earliest' && this.latest === undefined) {
      const latest = new Map<string, number[]>();
      for (const topic of this.topics) {
        const count = this.partitionCounts.get(topic)!;
        const highs = await Promise.all(
          Array.from(
            { length: count },
            async (_, partition) => (await topics.bounds(topic, partition)).highOffset,
          ),
        );
        latest.set(topic, highs);
      }
      this.latest = latest;
    }
    this.resolveSnapshot();
    await this.renew();
    if (this.isClosing) {
      // Closed while joining: take the lease back, so nobody waits for it to run out.
      await bucket.delete(names.memberKey(this.group, this.memberId)).catch(() => undefined);
      return;
    }
    this.joined = true;
    this.session.attach(this);
  }

  private memberValue(): MemberValue {
    return {
      group: this.group,
      memberId: this.memberId,
      topics: [...this.topics],
      leaseMs: this.ctx.options.leaseMs,
      joinedAtMs: this.joinedAtMs,
    };
  }

  private async renew(): Promise<void> {
    const { bucket, names, options } = this.ctx;
    const sentAt = performance.now();
    await bucket.put(names.memberKey(this.group, this.memberId), this.memberValue());
    if (this.isClosing) return;
    const marginMs = Math.min(1_000, options.leaseMs / 5);
    this.leaseValidUntil = Math.max(this.leaseValidUntil, sentAt + options.leaseMs - marginMs);
    this.wake();
  }

  private leaseValid(): boolean {
    return performance.now() < this.leaseValidUntil;
  }

  /**
   * Leaves the group: stops handing out, releases every partition with its committed position (deliveries not
   * acked are redelivered to the group), deletes the lease. Idempotent; bounded by the request timeout when the
   * server is unreachable (the lease then expires instead).
   */
  close(error?: Error): Promise<void> {
    this.closedPromise ??= this.closeNow(error);
    return this.closedPromise;
  }

  private async closeNow(error: Error | undefined): Promise<void> {
    this.closing.abort();
    this.signal?.removeEventListener('abort', this.onAbort);
    this.wake();
    await Promise.all([...this.workers.values()].map((worker) => worker.stop(true)));
    this.assigned = [];
    if (this.joined && this.ctx.connector.connected) {
      const { bucket, names } = this.ctx;
      await bucket.delete(names.memberKey(this.group, this.memberId)).catch((deleteError: unknown) => {
        this.host.report(deleteError, `leaving group '${this.group}'`);
      });
    }
    this.session.detach(this);
    this.host.memberClosed(this);
    this.wake();
    this.resolveClosed(error);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Rebalancing

  onGroupChange(): void {
    if (this.isClosing) return;
    if (this.reconciling) {
      this.reconcileAgain = true;
      return;
    }
    this.reconciling = true;
    queueMicrotask(() => {
      try {
        do {
          this.reconcileAgain = false;
          this.reconcile();
        } while (this.reconcileAgain && !this.isClosing);
      } finally {
        this.reconciling = false;
      }
    });
  }

  private reconcile(): void {
    if (this.isClosing || !this.joined) return;
    const now = this.ctx.clock.now();
    const serverNow = this.session.serverNowMs(now);
    if (!this.leaseValid()) {
      // Our lease may have lapsed in the others' view: stop at once; claim again once renewed.
      this.assigned = [];
      for (const worker of this.workers.values()) void worker.stop(true);
      return;
    }
    if (!this.session.isReady) return;
    const live = this.session.live(serverNow);
    if (!live.some((member) => member.memberId === this.memberId)) {
      live.push(this.memberValue());
      live.sort((a, b) => a.joinedAtMs - b.joinedAtMs || (a.memberId < b.memberId ? -1 : 1));
    }
    const mine = assign(live, this.partitionCounts).get(this.memberId) ?? [];
    this.assigned = mine;
    const wanted = new Set(mine.map(({ topic, partition }) => `${topic}\u0000${partition}`));
    for (const worker of this.workers.values()) if (!wanted.has(worker.id)) worker.revoke();
    for (const { topic, partition } of mine) {
      const id = `${topic}\u0000${partition}`;
      if (this.workers.has(id)) continue;
      if ((this.claimNotBefore.get(id) ?? 0) > now) continue;
      const owner = this.session.ownership(topic, partition)?.value?.owner ?? null;
      if (owner !== null && owner !== this.memberId && this.isMemberLive(owner)) continue; // wait for the handover
      const worker = new PartitionWorker(this.ctx, this, topic, partition);
      this.workers.set(id, worker);
      this.workerList = undefined;
      void worker.run();
    }
    this.removeStaleMembers(serverNow);
  }

  /**
   * Housekeeping any member does: deletes member entries whose lease passed long ago (compare-and-set, so a renewal
   * in between wins), and purges delete markers of members that left long ago (so the bucket does not keep one per
   * member that ever joined).
   */
  private removeStaleMembers(nowMs: number): void {
    for (const entry of this.session.memberEntries()) {
      const value = entry.value;
      if (value === undefined || value.memberId === this.memberId) continue;
      if (entry.writtenAtMs + value.leaseMs + staleMemberGraceMs > nowMs) continue;
      void this.ctx.bucket.delete(entry.key, entry.revision).catch(() => undefined);
    }
    for (const tombstone of this.session.memberTombstones()) {
      if (tombstone.writtenAtMs + staleMemberGraceMs > nowMs) continue;
      this.session.forgetTombstone(tombstone.key);
      void this.ctx.bucket.purge(tombstone.key).catch(() => undefined);
    }
  }

  // WorkerOwner ------------------------------------------------------------------------------------------------------

  latestOffset(topic: string, partition: number): number | undefined {
    return this.latest?.get(topic)?.[partition];
  }

  isMemberLive(memberId: string): boolean {
    if (memberId === this.memberId) return this.leaseValid();
    return isLive(this.session.member(memberId), this.session.serverNowMs(this.ctx.clock.now()));
  }

  /** Hands out what can be handed out to waiting `next()` calls; ends them once closed. */
  wake(): void {
    while (this.waiters.length > 0) {
      if (this.isClosing) {
        for (const resolve of this.waiters.splice(0)) resolve({ done: true, value: undefined });
        return;
      }
      if (this.unacked >= this.prefetch || !this.leaseValid()) return;
      const delivery = this.take();
      if (delivery === undefined) return;
      this.waiters.shift()!({ done: false, value: delivery });
    }
  }

  settled(): void {
    this.unacked--;
    this.wake();
  }

  workerDone(worker: PartitionWorker): void {
    if (this.workers.get(worker.id) === worker) this.workers.delete(worker.id);
    this.workerList = undefined;
    if (!worker.becameActive) {
      this.claimNotBefore.set(worker.id, this.ctx.clock.now() + this.ctx.options.heartbeatIntervalMs);
    } else {
      this.claimNotBefore.delete(worker.id);
    }
    this.wake();
    this.onGroupChange();
  }

  report(error: unknown, what: string): void {
    this.host.report(error, what);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Handing out

  assignments(): ReadonlyArray<{ topic: string; partition: number }> {
    return this.assigned.map(({ topic, partition }) => ({ topic, partition }));
  }

  /** The iterator's `next()`: the next delivery, waiting for one; done once the member closed. */
  next(): Promise<IteratorResult<Delivery, undefined>> {
    if (this.isClosing) return Promise.resolve({ done: true, value: undefined });
    if (this.waiters.length === 0 && this.unacked < this.prefetch && this.leaseValid()) {
      const delivery = this.take();
      if (delivery !== undefined) return Promise.resolve({ done: false, value: delivery });
    }
    // Resolved by `wake` when a record arrives, a prefetch slot frees up, the lease is renewed, or on close.
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private take(): Delivery | undefined {
    const workers = (this.workerList ??= [...this.workers.values()]);
    for (let i = 0; i < workers.length; i++) {
      const worker = workers[(this.roundRobin + i) % workers.length]!;
      if (!worker.ready) continue;
      this.roundRobin = (this.roundRobin + i + 1) % workers.length;
      this.unacked++;
      return worker.take();
    }
    return undefined;
  }
}

/** The {@link Subscription} of a NATS member; `memberId` matches the member in `admin.describeGroup`. */
export class NatsSubscription implements Subscription {
  readonly group: string;
  readonly memberId: string;
  readonly closed: Promise<Error | undefined>;
  private readonly member: NatsMember;
  private iterated = false;

  constructor(member: NatsMember, closed: Promise<Error | undefined>) {
    this.member = member;
    this.group = member.group;
    this.memberId = member.memberId;
    this.closed = closed;
  }

  /** The deliveries, for one `for await` loop (see {@link iterateOnce}). */
  [Symbol.asyncIterator](): AsyncIterator<Delivery, undefined> {
    const iterator = iterateOnce(this, this.iterated, () => this.member.next());
    this.iterated = true;
    return iterator;
  }

  assignments(): ReadonlyArray<{ topic: string; partition: number }> {
    return this.member.assignments();
  }

  close(): Promise<void> {
    return this.member.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
