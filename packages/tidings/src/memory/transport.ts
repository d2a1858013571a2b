/**
 * The in-process transport: the reference implementation of the transport contract (`core/transport.ts`) that unit
 * tests run on and every other transport is compared with. Kafka-like: partitioned topics with dense offsets,
 * consumer groups with committed offsets, rebalancing on join and leave with a fenced handover, low-water-mark commits,
 * retention, replay by offset and time. Nothing survives the process.
 */
import { systemClock, type Clock } from '../core/clock.js';
import { ErrorCode, TidingsError } from '../core/errors.js';
import { partitionForKey } from '../core/partitioner.js';
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
} from '../core/transport.js';
import { DelayQueue, type CancelDelayed } from './delay-queue.js';
import { PartitionLog } from './partition-log.js';
import { iterateOnce } from '../core/subscription-iterator.js';
import {
  checkInteger,
  checkName,
  checkNumber,
  checkRecord,
  checkStartPosition,
  checkSubscribeOptions,
  describeValue,
  invalid,
  recordTooLarge,
} from '../core/transport-checks.js';

/** Options of {@link createMemoryTransport}. Every field is optional; each is validated once, at construction. */
export interface MemoryTransportOptions {
  /** Partition count of topics created implicitly by `publish` or `subscribe`. Integer in [1, 10_000]. Default 4. */
  defaultPartitions?: number;
  /**
   * The largest record accepted, in bytes: value length plus the UTF-8 bytes of the key and of every header name and
   * value. A publish containing a larger record is rejected with `EVENT_TOO_LARGE` before anything is written.
   * Integer in [1, 1 GiB]. Default 16 MiB.
   */
  maxRecordBytes?: number;
  /**
   * How long a partition that moves between members in a rebalance waits for its previous owner to settle (ack or
   * nack) its outstanding deliveries before the new owner starts anyway, in ms. Integer in [0, 2_147_483_647].
   * Default 30_000.
   */
  rebalanceTimeoutMs?: number;
  /** Source of record timestamps, nack delays and rebalance timeouts. Default `systemClock`. */
  clock?: Clock;
}

/** A {@link Subscription} of the memory transport; `memberId` matches the member in `admin.describeGroup`. */
export interface MemorySubscription extends Subscription, AsyncDisposable {
  /** This member's id in its group, unique within the transport. */
  readonly memberId: string;
}

/** The transport returned by {@link createMemoryTransport}. */
export interface MemoryTransport extends Transport {
  /**
   * Joins `options.group` as a new member, synchronously: when it returns, the group has rebalanced, the member's
   * `assignments()` are final until the next join or leave, and partitions the group never owned have their start
   * position resolved and committed. Auto-creates unknown topics with `defaultPartitions`. Throws `INVALID_CONFIG`
   * for bad options and `CLOSED` once the transport is closed; with an already aborted `signal` it returns a
   * subscription that is closed and never joined the group.
   */
  subscribe(options: SubscribeOptions): MemorySubscription;
}

const defaults = {
  defaultPartitions: 4,
  maxRecordBytes: 16 * 1024 * 1024,
  rebalanceTimeoutMs: 30_000,
} as const;

/** Bounds on everything a caller can size. */
const limits = {
  partitions: 10_000,
  maxRecordBytes: 1024 * 1024 * 1024,
  rebalanceTimeoutMs: 2_147_483_647,
  prefetch: 100_000,
  readLimit: readLimitMax,
  topicNameLength: 249,
  groupNameLength: 249,
} as const;

const optionNames: ReadonlySet<string> = new Set([
  'defaultPartitions',
  'maxRecordBytes',
  'rebalanceTimeoutMs',
  'clock',
]);

/**
 * Creates an in-process transport: the reference implementation of the {@link Transport} contract.
 *
 * Contract, beyond the interface docs:
 * - `publish` appends every record (partition = `partitionForKey(key, partitions)`), resolves with one ack per
 *   record in input order, and is all-or-nothing: malformed (`VALIDATION_FAILED`) or oversize (`EVENT_TOO_LARGE`)
 *   input is rejected before anything is written. Records are copied, so later mutation by the caller has no effect;
 *   each delivery and each `admin.read` result carries its own copy of the value. "Durable" means held in this
 *   process's memory: `features.persistent` is false.
 * - Topics are created on first `publish` or `subscribe` with `defaultPartitions`. Retention (`retentionMs`,
 *   `retentionBytes`) trims oldest records on publish, on delivery and on admin reads; offsets are never reused.
 * - A group member is created by `subscribe`. Partitions of each topic are assigned round-robin over the group's
 *   live members subscribed to that topic, in join order, and reassigned when a member joins or leaves. A partition
 *   that moves stops delivering to its previous owner at once; the new owner starts it, from the committed offset,
 *   once the previous owner has settled every delivery of it, has closed, or `rebalanceTimeoutMs` has passed.
 *   Settlements by the previous owner after that are ignored (fenced). So within a group, records of one key are
 *   delivered in offset order across joins and graceful leaves; a member that leaves (or times out) with un-acked
 *   deliveries causes those, and the acked records after them, to be delivered again.
 * - A partition the group has never owned starts at the joining member's `startFrom` (default `'latest'`), resolved
 *   and committed inside `subscribe`, so `'latest'` includes every record published after `subscribe` returned.
 * - Each partition's committed offset is its low-water mark: the lowest delivered-but-unsettled or nacked offset, or
 *   the next undelivered offset if there is none. Acks may come in any order; settling twice is a no-op.
 * - Deliveries are handed out per partition in offset order (nack redeliveries first), round-robin across the
 *   member's partitions, with at most `prefetch` unsettled deliveries per member. Waiting iterators wake on publish.
 *
 * Throws `TidingsError` `INVALID_CONFIG` when an option is unknown or out of range.
 */
export function createMemoryTransport(options: MemoryTransportOptions = {}): MemoryTransport {
  return new MemoryTransportImpl(validateOptions(options));
}

interface ResolvedOptions {
  defaultPartitions: number;
  maxRecordBytes: number;
  rebalanceTimeoutMs: number;
  clock: Clock;
}

interface Topic {
  readonly name: string;
  readonly config: TopicConfig;
  readonly logs: readonly PartitionLog[];
  /** Per partition, the group state of every group that consumes it, to wake owners on publish. */
  readonly consumers: ReadonlyArray<Set<GroupPartition>>;
}

interface Group {
  readonly name: string;
  /** Live members in join order: the order round-robin assignment follows. */
  readonly members: Member[];
  /** Per topic the group has consumed or has had offsets reset on, its state for every partition. */
  readonly partitions: Map<string, GroupPartition[]>;
}

/** The settlement state of a delivery handed out once; shared by the `Delivery` object and the pending map. */
interface InFlight {
  readonly state: 'inflight';
  readonly gp: GroupPartition;
  readonly generation: number;
  readonly member: Member;
  readonly offset: number;
  settled: boolean;
}

/** An offset at or above the committed offset that has been delivered and is not acked yet. */
type Pending = InFlight | { readonly state: 'delayed'; cancel: CancelDelayed } | { readonly state: 'ready' };

/** One group's view of one partition. */
interface GroupPartition {
  readonly group: Group;
  readonly topic: Topic;
  readonly log: PartitionLog;
  /** The next offset the group will read; `undefined` until the group first owns the partition or resets it. */
  committed: number | undefined;
  /** The next offset to read from the log for the current owner (redeliveries aside). */
  fetchOffset: number;
  /** Offsets in [committed, fetchOffset) (and delayed ones above) not acked yet. Committed never passes one. */
  readonly pending: Map<number, Pending>;
  /** Nacked offsets whose delay has passed, oldest first; entries no longer `ready` in `pending` are skipped. */
  redeliver: number[];
  redeliverHead: number;
  /**
   * Deliveries so far per offset, for offsets delivered at least once and not committed past. Keys are inserted in
   * increasing offset order (a new epoch re-reads offsets that already have keys), so pruning walks from the front.
   */
  readonly deliveryCounts: Map<number, number>;
  /** Deliveries of the current generation not settled yet. */
  inflight: number;
  /** Bumped on every change of owner and on reset; settlements of older generations are ignored. */
  generation: number;
  /** The member whose deliveries count: it receives records if it is also the target, else it is handing over. */
  owner: Member | undefined;
  /** The member the partition is assigned to. */
  target: Member | undefined;
  /** Set while the owner hands over to another member: forces the handover after `rebalanceTimeoutMs`. */
  cancelHandoverTimeout: CancelDelayed | undefined;
}

interface Member {
  readonly id: string;
  readonly group: Group;
  readonly topics: ReadonlySet<string>;
  readonly startFrom: StartPosition;
  readonly prefetch: number;
  /** Deliveries handed to this member and not settled by it yet (fenced ones included until settled). */
  unacked: number;
  /** Partitions it owns and is assigned that may have records to deliver, in round-robin order. */
  readonly ready: Set<GroupPartition>;
  /** Partitions assigned to it (whether or not the handover to it has completed). */
  readonly assigned: Set<GroupPartition>;
  /** Partitions whose current generation belongs to it. */
  readonly owning: Set<GroupPartition>;
  closed: boolean;
  /** Resolvers of `next()` calls waiting for a record, a free prefetch slot or close. */
  waiters: Array<() => void>;
  resolveClosed: (value: Error | undefined) => void;
  detachSignal: () => void;
}

class MemoryTransportImpl implements MemoryTransport {
  readonly name = 'memory';
  readonly features: TransportFeatures;
  readonly admin: TransportAdmin;

  private readonly options: ResolvedOptions;
  private readonly clock: Clock;
  private readonly delays: DelayQueue;
  private readonly topics = new Map<string, Topic>();
  private readonly groups = new Map<string, Group>();
  private readonly members = new Set<Member>();
  private memberSeq = 0;
  private closed = false;

  constructor(options: ResolvedOptions) {
    this.options = options;
    this.clock = options.clock;
    this.delays = new DelayQueue(options.clock);
    this.features = Object.freeze({
      persistent: false,
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
      listTopics: () => this.adminCall(() => [...this.topics.keys()].sort()),
      read: (topic, partition, fromOffset, limit) =>
        this.adminCall(() => this.read(topic, partition, fromOffset, limit)),
      offsetForTime: (topic, partition, timestamp) =>
        this.adminCall(() => this.offsetForTime(topic, partition, timestamp)),
      listGroups: () => this.adminCall(() => [...this.groups.keys()].sort()),
      describeGroup: (group) => this.adminCall(() => this.describeGroup(group)),
      resetOffsets: (group, topic, to) => this.adminCall(() => this.resetOffsets(group, topic, to)),
    });
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Publish

  publish(
    topic: string,
    records: readonly OutgoingRecord[],
    options?: { signal?: AbortSignal },
  ): Promise<PublishAck[]> {
    return promiseOf(() => this.publishNow(topic, records, options?.signal));
  }

  private publishNow(
    topicName: string,
    records: readonly OutgoingRecord[],
    signal?: AbortSignal,
  ): PublishAck[] {
    if (this.closed) {
      throw new TidingsError(
        ErrorCode.CLOSED,
        `Cannot publish to topic '${String(topicName)}': the memory transport is closed. Create a new transport.`,
        { topic: topicName },
      );
    }
    if (signal?.aborted) {
      throw new TidingsError(
        ErrorCode.ABORTED,
        `Publish to topic '${String(topicName)}' was aborted before anything was written.`,
        { topic: topicName, cause: signal.reason },
      );
    }
    checkName(topicName, 'topic', limits.topicNameLength);
    if (!isArray(records)) {
      throw new TidingsError(
        ErrorCode.VALIDATION_FAILED,
        `publish to topic '${topicName}' needs an array of records, got ${describeValue(records)}; nothing was written.`,
        { topic: topicName },
      );
    }
    const sizes = records.map((record, index) => this.checkRecord(topicName, record, index));
    if (records.length === 0) return [];

    const topic = this.ensureTopic(topicName);
    const now = this.clock.now();
    const acks: PublishAck[] = [];
    const touched = new Set<number>();
    records.forEach((record, index) => {
      const partition = partitionForKey(record.key, topic.logs.length);
      const log = topic.logs[partition]!;
      const headers = Object.freeze({ ...record.headers });
      const value = new Uint8Array(record.value);
      const offset = log.append(record.key, headers, value, record.timestamp ?? now, sizes[index]!);
      acks.push({ topic: topicName, partition, offset });
      touched.add(partition);
    });
    for (const partition of touched) {
      this.trim(topic, topic.logs[partition]!, now);
      for (const gp of topic.consumers[partition]!) this.notify(gp);
    }
    return acks;
  }

  /** Validates one outgoing record and returns its size in bytes. */
  private checkRecord(topic: string, record: OutgoingRecord, index: number): number {
    const bytes = checkRecord(topic, record, index);
    if (bytes > this.options.maxRecordBytes) {
      throw recordTooLarge(
        "the memory transport's",
        topic,
        record.key,
        index,
        bytes,
        this.options.maxRecordBytes,
      );
    }
    return bytes;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Subscribe, membership and rebalancing

  subscribe(options: SubscribeOptions): MemorySubscription {
    const checked = checkSubscribeOptions(options);
    if (this.closed) {
      throw new TidingsError(
        ErrorCode.CLOSED,
        `Cannot subscribe group '${checked.group}': the memory transport is closed. Create a new transport.`,
        { group: checked.group },
      );
    }
    const signal = checked.signal;
    // A subscription whose signal has already aborted is born closed and never joins (or creates) the group.
    const group: Group = signal?.aborted
      ? { name: checked.group, members: [], partitions: new Map() }
      : this.ensureGroup(checked.group);
    let resolveClosed!: (value: Error | undefined) => void;
    const closed = new Promise<Error | undefined>((resolve) => {
      resolveClosed = resolve;
    });
    const member: Member = {
      id: `member-${++this.memberSeq}`,
      group,
      topics: new Set(checked.topics),
      startFrom: checked.startFrom,
      prefetch: checked.prefetch,
      unacked: 0,
      ready: new Set(),
      assigned: new Set(),
      owning: new Set(),
      closed: false,
      waiters: [],
      resolveClosed,
      detachSignal: noop,
    };
    const subscription = new MemorySubscriptionImpl(this, member, closed);
    if (signal?.aborted) {
      member.closed = true;
      resolveClosed(undefined);
      return subscription;
    }
    for (const topic of member.topics) this.ensureTopic(topic);
    group.members.push(member);
    this.members.add(member);
    this.rebalance(group);
    if (signal !== undefined) {
      const onAbort = () => this.closeMember(member);
      signal.addEventListener('abort', onAbort, { once: true });
      member.detachSignal = () => signal.removeEventListener('abort', onAbort);
    }
    return subscription;
  }

  /** Leaves the group: the member's partitions move to the remaining members; its unsettled deliveries are fenced. */
  closeMember(member: Member): void {
    if (member.closed) return;
    member.closed = true;
    member.detachSignal();
    const members = member.group.members;
    members.splice(members.indexOf(member), 1);
    this.members.delete(member);
    this.rebalance(member.group);
    for (const gp of [...member.owning]) if (gp.owner === member) this.completeHandover(gp);
    member.ready.clear();
    member.assigned.clear();
    wake(member);
    member.resolveClosed(undefined);
  }

  /** Assigns every partition of every topic the group knows round-robin over its live subscribers, in join order. */
  private rebalance(group: Group): void {
    const topicNames = new Set(group.partitions.keys());
    for (const member of group.members) for (const topic of member.topics) topicNames.add(topic);
    for (const topicName of topicNames) {
      const topic = this.topics.get(topicName)!;
      const subscribers = group.members.filter((member) => member.topics.has(topicName));
      this.groupPartitions(group, topic).forEach((gp, partition) => {
        this.setTarget(
          gp,
          subscribers.length === 0 ? undefined : subscribers[partition % subscribers.length],
        );
      });
    }
  }

  private setTarget(gp: GroupPartition, target: Member | undefined): void {
    if (gp.target === target) return;
    gp.target?.assigned.delete(gp);
    gp.target = target;
    target?.assigned.add(gp);
    const owner = gp.owner;
    if (owner === undefined) {
      if (target !== undefined) this.startOwner(gp, target);
      return;
    }
    if (owner === target) {
      // Assigned back to the member that was handing it over: the handover is called off.
      gp.cancelHandoverTimeout?.();
      gp.cancelHandoverTimeout = undefined;
      owner.ready.add(gp);
      wake(owner);
      return;
    }
    // The owner stops receiving records of this partition now; the target starts once the owner has settled.
    owner.ready.delete(gp);
    if (gp.inflight === 0 || owner.closed) {
      this.completeHandover(gp);
    } else if (gp.cancelHandoverTimeout === undefined) {
      const generation = gp.generation;
      gp.cancelHandoverTimeout = this.delays.schedule(
        this.clock.now() + this.options.rebalanceTimeoutMs,
        () => {
          gp.cancelHandoverTimeout = undefined;
          if (gp.generation === generation && gp.owner !== gp.target) this.completeHandover(gp);
        },
      );
    }
  }

  /**
   * Ends the owner's generation: its unsettled deliveries are fenced, and the target (if any) starts from the
   * committed offset. Nacked records still waiting out their delay keep waiting; everything else at or above the
   * committed offset is read again.
   */
  private completeHandover(gp: GroupPartition): void {
    gp.cancelHandoverTimeout?.();
    gp.cancelHandoverTimeout = undefined;
    const previous = gp.owner;
    if (previous !== undefined) {
      previous.owning.delete(gp);
      previous.ready.delete(gp);
    }
    gp.owner = undefined;
    gp.generation++;
    for (const [offset, entry] of gp.pending) if (entry.state !== 'delayed') gp.pending.delete(offset);
    gp.inflight = 0;
    gp.redeliver = [];
    gp.redeliverHead = 0;
    gp.fetchOffset = gp.committed ?? gp.fetchOffset;
    if (gp.target !== undefined && !gp.target.closed) this.startOwner(gp, gp.target);
  }

  private startOwner(gp: GroupPartition, member: Member): void {
    if (gp.committed === undefined) gp.committed = this.resolvePosition(gp.topic, gp.log, member.startFrom);
    gp.fetchOffset = gp.committed;
    gp.owner = member;
    member.owning.add(gp);
    member.ready.add(gp);
    wake(member);
  }

  /** Tells the partition's owner there may be something to deliver, if it is the one that should receive it. */
  private notify(gp: GroupPartition): void {
    const owner = gp.owner;
    if (owner === undefined || owner !== gp.target || owner.closed) return;
    owner.ready.add(gp);
    wake(owner);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Delivery and settlement

  /** The iterator's `next()`: the next delivery for the member, waiting for one; done once the member closed. */
  async next(member: Member): Promise<IteratorResult<Delivery, undefined>> {
    for (;;) {
      if (member.closed) return { done: true, value: undefined };
      if (member.unacked < member.prefetch) {
        const delivery = this.take(member);
        if (delivery !== undefined) return { done: false, value: delivery };
      }
      await new Promise<void>((resolve) => member.waiters.push(resolve));
    }
  }

  /** Hands out one record from the member's ready partitions, round-robin, or `undefined` if none has one. */
  private take(member: Member): Delivery | undefined {
    for (const gp of member.ready) {
      member.ready.delete(gp);
      if (gp.owner !== member || gp.target !== member) continue;
      const offset = this.nextOffset(gp);
      if (offset === undefined) continue;
      member.ready.add(gp); // to the back of the line: fair across partitions
      return this.deliver(gp, offset, member);
    }
    return undefined;
  }

  /** The next offset of the partition to hand to its owner: due redeliveries first, then new records. */
  private nextOffset(gp: GroupPartition): number | undefined {
    this.trim(gp.topic, gp.log, this.clock.now());
    const low = gp.log.lowOffset;
    while (gp.redeliverHead < gp.redeliver.length) {
      const offset = gp.redeliver[gp.redeliverHead++]!;
      if (gp.redeliverHead === gp.redeliver.length) {
        gp.redeliver = [];
        gp.redeliverHead = 0;
      }
      if (gp.pending.get(offset)?.state !== 'ready') continue;
      if (offset >= low) return offset;
      gp.pending.delete(offset); // removed by retention: nothing left to redeliver
      this.advanceCommitted(gp);
    }
    if (gp.fetchOffset < low) gp.fetchOffset = low;
    const high = gp.log.highOffset;
    while (gp.fetchOffset < high) {
      const offset = gp.fetchOffset++;
      if (!gp.pending.has(offset)) return offset; // pending here: a nack waiting out its delay
    }
    return undefined;
  }

  private deliver(gp: GroupPartition, offset: number, member: Member): Delivery {
    const record = gp.log.get(offset)!;
    const deliveryCount = (gp.deliveryCounts.get(offset) ?? 0) + 1;
    gp.deliveryCounts.set(offset, deliveryCount);
    const state: InFlight = {
      state: 'inflight',
      gp,
      generation: gp.generation,
      member,
      offset,
      settled: false,
    };
    gp.pending.set(offset, state);
    gp.inflight++;
    member.unacked++;
    this.advanceCommitted(gp);
    return {
      topic: record.topic,
      partition: record.partition,
      offset,
      key: record.key,
      headers: record.headers,
      value: new Uint8Array(record.value),
      timestamp: record.timestamp,
      deliveryCount,
      ack: () => this.settle(state, undefined),
      nack: (options?: { delayMs?: number }) => {
        const delayMs: unknown = options?.delayMs ?? 0;
        if (typeof delayMs !== 'number' || !Number.isFinite(delayMs) || delayMs < 0) {
          throw new TidingsError(
            ErrorCode.INVALID_CONFIG,
            `nack of offset ${offset} in topic '${record.topic}' partition ${record.partition} got delayMs ` +
              `${describeValue(delayMs)}; pass a finite number of milliseconds >= 0. The record was not settled.`,
            { topic: record.topic, partition: record.partition, offset, group: member.group.name },
          );
        }
        this.settle(state, delayMs);
      },
    };
  }

  /** Acks (`delayMs` undefined) or nacks a delivery. No-op if settled already; fenced if its generation ended. */
  private settle(state: InFlight, delayMs: number | undefined): void {
    if (state.settled) return;
    state.settled = true;
    const { gp, member, offset } = state;
    member.unacked--;
    if (gp.generation === state.generation && gp.pending.get(offset) === state) {
      gp.inflight--;
      if (delayMs === undefined) {
        gp.pending.delete(offset);
        this.advanceCommitted(gp);
      } else if (delayMs <= 0) {
        this.markReady(gp, offset);
      } else {
        const entry: Pending = { state: 'delayed', cancel: noop };
        gp.pending.set(offset, entry);
        entry.cancel = this.delays.schedule(this.clock.now() + delayMs, () => {
          if (gp.pending.get(offset) === entry) this.markReady(gp, offset);
        });
      }
      if (gp.owner !== gp.target && gp.inflight === 0) this.completeHandover(gp);
    }
    if (!member.closed) wake(member); // a prefetch slot is free
  }

  private markReady(gp: GroupPartition, offset: number): void {
    gp.pending.set(offset, { state: 'ready' });
    gp.redeliver.push(offset);
    this.notify(gp);
  }

  /** Moves the committed offset up to the low-water mark and forgets delivery counts below it. */
  private advanceCommitted(gp: GroupPartition): void {
    if (gp.committed === undefined) return;
    if (gp.pending.size === 0) {
      gp.committed = Math.max(gp.committed, gp.fetchOffset);
    } else {
      while (gp.committed < gp.fetchOffset && !gp.pending.has(gp.committed)) gp.committed++;
    }
    for (const offset of gp.deliveryCounts.keys()) {
      if (offset >= gp.committed) break;
      gp.deliveryCounts.delete(offset);
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Topics, groups, positions

  private ensureTopic(name: string): Topic {
    const existing = this.topics.get(name);
    if (existing !== undefined) return existing;
    return this.addTopic(name, { partitions: this.options.defaultPartitions });
  }

  private addTopic(name: string, config: TopicConfig): Topic {
    const logs: PartitionLog[] = [];
    const consumers: Array<Set<GroupPartition>> = [];
    for (let partition = 0; partition < config.partitions; partition++) {
      logs.push(new PartitionLog(name, partition));
      consumers.push(new Set());
    }
    const topic: Topic = { name, config: Object.freeze({ ...config }), logs, consumers };
    this.topics.set(name, topic);
    return topic;
  }

  private ensureGroup(name: string): Group {
    let group = this.groups.get(name);
    if (group === undefined) {
      group = { name, members: [], partitions: new Map() };
      this.groups.set(name, group);
    }
    return group;
  }

  private groupPartitions(group: Group, topic: Topic): GroupPartition[] {
    let gps = group.partitions.get(topic.name);
    if (gps === undefined) {
      gps = topic.logs.map((log, partition) => {
        const gp: GroupPartition = {
          group,
          topic,
          log,
          committed: undefined,
          fetchOffset: 0,
          pending: new Map(),
          redeliver: [],
          redeliverHead: 0,
          deliveryCounts: new Map(),
          inflight: 0,
          generation: 0,
          owner: undefined,
          target: undefined,
          cancelHandoverTimeout: undefined,
        };
        topic.consumers[partition]!.add(gp);
        return gp;
      });
      group.partitions.set(topic.name, gps);
    }
    return gps;
  }

  private trim(topic: Topic, log: PartitionLog, now: number): void {
    const { retentionMs, retentionBytes } = topic.config;
    if (retentionMs === undefined && retentionBytes === undefined) return;
    log.trim(now, retentionMs, retentionBytes);
  }

  private resolvePosition(topic: Topic, log: PartitionLog, position: StartPosition): number {
    this.trim(topic, log, this.clock.now());
    if (position === 'earliest') return log.lowOffset;
    if (position === 'latest') return log.highOffset;
    if ('offset' in position) return Math.min(Math.max(position.offset, log.lowOffset), log.highOffset);
    return log.offsetForTime(position.timestamp);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Admin

  private adminCall<T>(call: () => T): Promise<T> {
    if (this.closed) {
      return Promise.reject(
        new TidingsError(
          ErrorCode.CLOSED,
          'The memory transport is closed; its admin is no longer available.',
        ),
      );
    }
    return promiseOf(call);
  }

  private createTopic(name: string, config: TopicConfig): void {
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
      checked.retentionMs = checkNumber(config.retentionMs, `retentionMs of topic '${name}'`, 1);
    }
    if (config.retentionBytes !== undefined) {
      checked.retentionBytes = checkInteger(
        config.retentionBytes,
        `retentionBytes of topic '${name}'`,
        1,
        Number.MAX_SAFE_INTEGER,
      );
    }
    const existing = this.topics.get(name);
    if (existing === undefined) {
      this.addTopic(name, checked);
      return;
    }
    if (existing.config.partitions !== partitions) {
      throw new TidingsError(
        ErrorCode.CONFLICT,
        `Topic '${name}' already exists with ${existing.config.partitions} partitions, not ${partitions}; the ` +
          `partition count is fixed at creation. Use ${existing.config.partitions} partitions or another topic name.`,
        { topic: name, partitions: existing.config.partitions, requestedPartitions: partitions },
      );
    }
  }

  private topicOrThrow(name: string): Topic {
    checkName(name, 'topic', limits.topicNameLength);
    const topic = this.topics.get(name);
    if (topic === undefined) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `Topic '${name}' does not exist on this memory transport. Create it with admin.createTopic, or publish ` +
          `to it, first.`,
        { topic: name },
      );
    }
    return topic;
  }

  private logOrThrow(topicName: string, partition: number): { topic: Topic; log: PartitionLog } {
    const topic = this.topicOrThrow(topicName);
    if (!Number.isInteger(partition) || partition < 0) {
      throw invalid(`Partition ${describeValue(partition)} of topic '${topicName}' is not an integer >= 0.`, {
        topic: topicName,
      });
    }
    const log = topic.logs[partition];
    if (log === undefined) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `Topic '${topicName}' has no partition ${partition}; it has partitions 0 to ${topic.logs.length - 1}.`,
        { topic: topicName, partition },
      );
    }
    this.trim(topic, log, this.clock.now());
    return { topic, log };
  }

  private describeTopic(name: string): TopicDescription {
    const topic = this.topicOrThrow(name);
    const now = this.clock.now();
    return {
      name,
      ...topic.config,
      partitionOffsets: topic.logs.map((log, partition) => {
        this.trim(topic, log, now);
        return { partition, lowOffset: log.lowOffset, highOffset: log.highOffset };
      }),
    };
  }

  private read(topicName: string, partition: number, fromOffset: number, limit: number): StoredRecord[] {
    const { log } = this.logOrThrow(topicName, partition);
    checkInteger(fromOffset, `fromOffset for read of topic '${topicName}'`, 0, Number.MAX_SAFE_INTEGER);
    checkInteger(limit, `limit for read of topic '${topicName}'`, 1, limits.readLimit);
    const records: StoredRecord[] = [];
    const end = Math.min(log.highOffset, Math.max(fromOffset, log.lowOffset) + limit);
    for (let offset = Math.max(fromOffset, log.lowOffset); offset < end; offset++) {
      const record = log.get(offset)!;
      records.push({ ...record, value: new Uint8Array(record.value) });
    }
    return records;
  }

  private offsetForTime(topicName: string, partition: number, timestamp: number): number {
    const { log } = this.logOrThrow(topicName, partition);
    if (typeof timestamp !== 'number' || Number.isNaN(timestamp)) {
      throw invalid(
        `offsetForTime on topic '${topicName}' needs a timestamp in ms, got ${describeValue(timestamp)}.`,
        {
          topic: topicName,
        },
      );
    }
    return log.offsetForTime(timestamp);
  }

  private describeGroup(name: string): GroupDescription {
    checkName(name, 'group', limits.groupNameLength);
    const group = this.groups.get(name);
    if (group === undefined) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `Group '${name}' does not exist on this memory transport: no member ever subscribed with it and no offsets ` +
          `were reset for it. Check the group name.`,
        { group: name },
      );
    }
    const now = this.clock.now();
    const lag: PartitionLag[] = [];
    for (const [topicName, gps] of [...group.partitions].sort(([a], [b]) => compareStrings(a, b))) {
      for (const gp of gps) {
        this.trim(gp.topic, gp.log, now);
        const committedOffset = Math.max(gp.committed ?? gp.log.lowOffset, gp.log.lowOffset);
        const highOffset = gp.log.highOffset;
        lag.push({
          topic: topicName,
          partition: gp.log.partition,
          committedOffset,
          highOffset,
          lag: highOffset - committedOffset,
        });
      }
    }
    return {
      group: name,
      members: group.members.map((member) => ({ memberId: member.id, assignments: assignmentsOf(member) })),
      lag,
    };
  }

  private resetOffsets(groupName: string, topicName: string, to: StartPosition): void {
    checkName(groupName, 'group', limits.groupNameLength);
    const topic = this.topicOrThrow(topicName);
    const position = checkStartPosition(to, `resetOffsets('${groupName}', '${topicName}')`);
    const live = this.groups.get(groupName)?.members.length ?? 0;
    if (live > 0) {
      throw new TidingsError(
        ErrorCode.CONFLICT,
        `Cannot reset offsets of group '${groupName}' on topic '${topicName}': the group has ${live} live ` +
          `member${live === 1 ? '' : 's'}, which would overwrite the reset. Close every subscription of the group, ` +
          `then reset.`,
        { group: groupName, topic: topicName, liveMembers: live },
      );
    }
    const group = this.ensureGroup(groupName);
    for (const gp of this.groupPartitions(group, topic)) {
      for (const entry of gp.pending.values()) if (entry.state === 'delayed') entry.cancel();
      gp.pending.clear();
      gp.redeliver = [];
      gp.redeliverHead = 0;
      gp.deliveryCounts.clear();
      gp.inflight = 0;
      gp.generation++;
      gp.committed = this.resolvePosition(topic, gp.log, position);
      gp.fetchOffset = gp.committed;
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Close

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      for (const member of [...this.members]) this.closeMember(member);
      this.delays.close();
    }
    return Promise.resolve();
  }
}

class MemorySubscriptionImpl implements MemorySubscription {
  readonly group: string;
  readonly memberId: string;
  readonly closed: Promise<Error | undefined>;
  private readonly transport: MemoryTransportImpl;
  private readonly member: Member;
  private iterated = false;

  constructor(transport: MemoryTransportImpl, member: Member, closed: Promise<Error | undefined>) {
    this.transport = transport;
    this.member = member;
    this.group = member.group.name;
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
    return assignmentsOf(this.member);
  }

  close(): Promise<void> {
    this.transport.closeMember(this.member);
    return Promise.resolve();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

// -----------------------------------------------------------------------------------------------------------------
// Helpers

function wake(member: Member): void {
  if (member.waiters.length === 0) return;
  const waiters = member.waiters;
  member.waiters = [];
  for (const resolve of waiters) resolve();
}

function assignmentsOf(member: Member): Array<{ topic: string; partition: number }> {
  return [...member.assigned]
    .map((gp) => ({ topic: gp.topic.name, partition: gp.log.partition }))
    .sort((a, b) => compareStrings(a.topic, b.topic) || a.partition - b.partition);
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function noop(): void {}

/** Runs `call` now and wraps its result, or what it threw, in a promise. */
function promiseOf<T>(call: () => T): Promise<T> {
  return new Promise<T>((resolve) => resolve(call()));
}

function isArray(value: unknown): value is readonly unknown[] {
  return Array.isArray(value);
}

function validateOptions(options: MemoryTransportOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null) {
    throw invalid(`createMemoryTransport takes an options object or nothing, got ${describeValue(options)}.`);
  }
  for (const key of Object.keys(options)) {
    if (!optionNames.has(key)) {
      throw invalid(
        `createMemoryTransport got unknown option '${key}'; the options are defaultPartitions, maxRecordBytes, ` +
          `rebalanceTimeoutMs and clock. Check the spelling.`,
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
      `createMemoryTransport option clock must have now() and sleep(ms, signal), got ${describeValue(clock)}.`,
    );
  }
  return {
    defaultPartitions:
      options.defaultPartitions === undefined
        ? defaults.defaultPartitions
        : checkInteger(
            options.defaultPartitions,
            'createMemoryTransport option defaultPartitions',
            1,
            limits.partitions,
          ),
    maxRecordBytes:
      options.maxRecordBytes === undefined
        ? defaults.maxRecordBytes
        : checkInteger(
            options.maxRecordBytes,
            'createMemoryTransport option maxRecordBytes',
            1,
            limits.maxRecordBytes,
          ),
    rebalanceTimeoutMs:
      options.rebalanceTimeoutMs === undefined
        ? defaults.rebalanceTimeoutMs
        : checkInteger(
            options.rebalanceTimeoutMs,
            'createMemoryTransport option rebalanceTimeoutMs',
            0,
            limits.rebalanceTimeoutMs,
          ),
    clock,
  };
}
