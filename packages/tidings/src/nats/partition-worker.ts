/**
 * One group partition while a member owns it: claims it (compare-and-set on the ownership entry, a new epoch and
 * its own durable consumer at the committed position), pulls its records within the member's prefetch budget,
 * hands them out in stream order, acks and nacks them on the epoch's consumer, tracks the low-water mark, and
 * releases the partition (writing the committed position and the carry) when the member loses it.
 */
import {
  AckPolicy,
  DeliverPolicy,
  type ConsumerInfo,
  type ConsumerMessages,
  type JsMsg,
} from '@nats-io/jetstream';
import { ErrorCode, TidingsError } from '../core/errors.js';
import type { Delivery, StartPosition } from '../core/transport.js';
import { backoffMs, pause, type NatsContext } from './context.js';
import { isConsumerNotFound } from './failures.js';
import { carryEntriesMax, type Carry, type OwnershipValue } from './groups.js';
import { describeValue } from './options.js';
import { consumedPosition, consumedRecord, type ConsumedPosition } from './records.js';

/** What a worker needs from the member that owns it. */
export interface WorkerOwner {
  readonly memberId: string;
  readonly group: string;
  readonly prefetch: number;
  readonly startFrom: StartPosition;
  /** The high offset of the partition when the member joined (start positions never go past it). */
  latestOffset(topic: string, partition: number): number | undefined;
  /** Whether `memberId` holds a live lease, as the member last saw the group. */
  isMemberLive(memberId: string): boolean;
  /** A record is ready or a prefetch slot came free: wake the iterator. */
  wake(): void;
  /** A delivery was settled (acked, nacked, or fenced and settled late). */
  settled(): void;
  /** The worker stopped for good. */
  workerDone(worker: PartitionWorker): void;
  report(error: unknown, what: string): void;
}

type OffsetState = 'buffered' | 'handed' | 'waiting';

/** A pulled message not handed out yet, with its position read once. */
interface Buffered {
  message: JsMsg;
  position: ConsumedPosition;
}

/** Records asked for in one pull request, at most (the client keeps pulls outstanding, refilling at 75%). */
const pullBatchMax = 256;
/** A pull request waits this long for records before it is renewed. */
const pullExpiresMs = 10_000;
/** Idle heartbeats of a pull: two missed ones make the client check the consumer and pull again. */
const pullHeartbeatMs = 2_000;
/**
 * JetStream redelivers a record not acked within this time. Such a copy is dropped while the first is still held
 * (buffered or handed out; acking the first settles the record, JetStream acks by stream sequence), and re-acked at
 * once if the first was acked already (its ack was lost: in a reconnect, or in a server crash that lost the
 * consumer's latest acks). So it only bounds how long a lost ack holds the server's ack floor, and the lag, back.
 */
const ackWaitMs = 10_000;
const nanosPerMs = 1_000_000;

export class PartitionWorker {
  readonly topic: string;
  readonly partition: number;
  /** `${topic}\0${partition}`. */
  readonly id: string;
  state: 'claiming' | 'active' | 'draining' | 'releasing' | 'done' = 'claiming';
  /** True once the claim succeeded (false: the claim lost or failed, and is retried later). */
  becameActive = false;

  private readonly ctx: NatsContext;
  private readonly owner: WorkerOwner;
  private readonly stream: string;
  private readonly key: string;
  private epoch = 0;
  private consumerInfo: ConsumerInfo | undefined;
  /** Identifies the current epoch's deliveries; replaced when the worker is fenced, so later settlements are ignored. */
  private token: object = {};
  private buffer: Buffered[] = [];
  private head = 0;
  private readonly outstanding = new Map<number, OffsetState>();
  private floor = 0;
  private maxReceived = -1;
  private maxHanded = -1;
  private inflight = 0;
  private readonly counts = new Map<number, number>();
  private carryIn: Carry = { deliveredHigh: -1, counts: {}, delays: {} };
  private readonly delaysOut = new Map<number, number>();
  /** Acks and naks waiting to be sent with the others of this turn (see `queueReply`). */
  private replies: JsMsg[] = [];
  private replyDelays: Array<number | undefined> = [];
  private repliesScheduled = false;
  private messages: ConsumerMessages | undefined;
  private drainTimer: NodeJS.Timeout | undefined;
  private revokeRequested = false;
  private readonly stopped = new AbortController();
  private resolveDone!: () => void;
  readonly done = new Promise<void>((resolve) => (this.resolveDone = resolve));

  constructor(ctx: NatsContext, owner: WorkerOwner, topic: string, partition: number) {
    this.ctx = ctx;
    this.owner = owner;
    this.topic = topic;
    this.partition = partition;
    this.id = `${topic}\u0000${partition}`;
    this.stream = ctx.names.stream(topic, partition);
    this.key = ctx.names.ownershipKey(owner.group, topic, partition);
  }

  /** Claims the partition and pulls its records until the worker is revoked or stopped. */
  async run(): Promise<void> {
    try {
      if (!(await this.claim())) return;
      this.becameActive = true;
      if (this.revokeRequested) {
        this.state = 'active';
        this.revoke();
        return;
      }
      this.state = 'active';
      this.owner.wake();
      await this.pullLoop();
    } catch (error) {
      if (this.state === 'claiming' || this.state === 'active') {
        this.owner.report(error, `consuming topic '${this.topic}' partition ${this.partition}`);
      }
    } finally {
      if (this.state === 'claiming' || this.state === 'active') this.finish();
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Claim

  private async claim(): Promise<boolean> {
    const { bucket, connector, names } = this.ctx;
    const current = await bucket.get<OwnershipValue>(this.key);
    const value = current?.deleted === false ? current.value : undefined;
    const previousOwner = value?.owner ?? null;
    if (
      previousOwner !== null &&
      previousOwner !== this.owner.memberId &&
      this.owner.isMemberLive(previousOwner)
    ) {
      return false;
    }
    const session = await connector.get();
    let previous: ConsumerInfo | undefined;
    if (value?.consumer) {
      try {
        previous = await session.jsm.consumers.info(this.stream, value.consumer);
      } catch (error) {
        if (!isConsumerNotFound(error)) throw error;
      }
    }
    let committed = value?.committed ?? undefined;
    if (previous !== undefined) committed = Math.max(committed ?? 0, previous.ack_floor.stream_seq);
    committed ??= await this.resolveStart();
    const graceful = previousOwner === null;
    const inherited = value?.carry;
    this.carryIn = {
      deliveredHigh: Math.max(
        inherited?.deliveredHigh ?? -1,
        !graceful && previous !== undefined ? previous.delivered.stream_seq - 1 : -1,
      ),
      counts: { ...inherited?.counts },
      delays: graceful ? { ...inherited?.delays } : {},
    };
    const epoch = (value?.epoch ?? 0) + 1;
    const consumer = names.consumer(this.owner.group, epoch);
    const next: OwnershipValue = {
      group: this.owner.group,
      topic: this.topic,
      partition: this.partition,
      owner: this.owner.memberId,
      epoch,
      consumer,
      committed,
      carry: this.carryIn,
    };
    const revision = await bucket.update(this.key, next, current?.revision ?? 0);
    if (revision === undefined) return false; // another member claimed it first
    this.epoch = epoch;
    this.floor = committed;
    this.consumerInfo = await session.jsm.consumers.add(this.stream, {
      durable_name: consumer,
      description: `Tidings group ${JSON.stringify(this.owner.group)}, epoch ${epoch}, member ${this.owner.memberId}`,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: committed + 1,
      ack_wait: ackWaitMs * nanosPerMs,
      max_ack_pending: this.owner.prefetch,
      max_deliver: -1,
    });
    if (value?.consumer && value.consumer !== consumer) {
      await session.jsm.consumers.delete(this.stream, value.consumer).catch(() => undefined);
    }
    return true;
  }

  /** Where a partition the group never owned starts: the member's `startFrom`. */
  private async resolveStart(): Promise<number> {
    const { topics } = this.ctx;
    const { lowOffset, highOffset } = await topics.bounds(this.topic, this.partition);
    const position = this.owner.startFrom;
    // Positions are as of the member's join: nothing published after `subscribe` returned is skipped.
    const joinedHigh = Math.min(
      this.owner.latestOffset(this.topic, this.partition) ?? highOffset,
      highOffset,
    );
    const clamp = (offset: number) => Math.min(Math.max(offset, lowOffset), joinedHigh);
    if (position === 'earliest') return lowOffset;
    if (position === 'latest') return clamp(joinedHigh);
    if ('offset' in position) return clamp(position.offset);
    return clamp(await topics.offsetForTime(this.topic, this.partition, position.timestamp));
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Pulling

  private async pullLoop(): Promise<void> {
    const { connector } = this.ctx;
    let failures = 0;
    while (this.state === 'active') {
      try {
        const session = await connector.get();
        const consumer = session.js.consumers.getConsumerFromInfo(this.consumerInfo!);
        // A continuous pull, its messages handed to `receive` as they arrive; the consumer's max_ack_pending (the
        // member's prefetch) bounds what is buffered here.
        const messages = await consumer.consume({
          max_messages: Math.min(this.owner.prefetch, pullBatchMax),
          expires: pullExpiresMs,
          idle_heartbeat: pullHeartbeatMs,
          abort_on_missing_resource: true,
          callback: (message) => this.receive(message),
        });
        this.messages = messages;
        if (this.state !== 'active') messages.stop();
        const ended = await messages.closed();
        if (ended instanceof Error) throw ended;
        failures = 0;
        // Ended without an error while active (the connection closed): pull again once it is back.
        if (this.state === 'active') await pause(backoffMs(1), this.stopped.signal);
      } catch (error) {
        if (this.state !== 'active') return;
        if (await this.consumerGone(error)) {
          // Another member claimed the partition (our lease had lapsed) or the group was reset: fenced.
          this.fence();
          this.finish();
          return;
        }
        failures++;
        await pause(backoffMs(failures), this.stopped.signal);
      } finally {
        this.messages = undefined;
      }
    }
  }

  /** True if the epoch's consumer no longer exists. */
  private async consumerGone(error: unknown): Promise<boolean> {
    if (isConsumerNotFound(error)) return true;
    if (!(error instanceof Error) || !/consumer (deleted|not found)|no responders/i.test(error.message))
      return false;
    try {
      const session = await this.ctx.connector.get();
      await session.jsm.consumers.info(this.stream, this.consumerInfo!.name);
      return false;
    } catch (infoError) {
      return isConsumerNotFound(infoError);
    }
  }

  private receive(message: JsMsg): void {
    if (this.state !== 'active') return; // stopped meanwhile: the message stays unacked, for the next owner
    const position = consumedPosition(message);
    const offset = position.seq - 1;
    const state = this.outstanding.get(offset);
    if (state === 'buffered' || state === 'handed') return; // a redelivered copy of one we still hold
    if (state === undefined && offset <= this.maxReceived) {
      safely(() => message.ack()); // acked already; that ack was lost on the way
      return;
    }
    if (offset > this.maxReceived) this.maxReceived = offset;
    const due = this.carryIn.delays[offset];
    if (due !== undefined) {
      delete this.carryIn.delays[offset];
      const restMs = due - this.ctx.clock.now();
      if (restMs > 0) {
        this.outstanding.set(offset, 'waiting');
        this.delaysOut.set(offset, due);
        safely(() => message.nak(restMs));
        return;
      }
    }
    this.outstanding.set(offset, 'buffered');
    this.buffer.push({ message, position });
    this.owner.wake();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Handing out and settling

  /** True if a record can be handed out now. */
  get ready(): boolean {
    return this.state === 'active' && this.head < this.buffer.length;
  }

  /** Hands out the next buffered record. Call only when {@link ready}. */
  take(): Delivery {
    const { message, position } = this.buffer[this.head]!;
    this.buffer[this.head++] = undefined as unknown as Buffered;
    if (this.head >= 1024 && this.head * 2 >= this.buffer.length) {
      this.buffer = this.buffer.slice(this.head);
      this.head = 0;
    }
    const offset = position.seq - 1;
    this.outstanding.set(offset, 'handed');
    const deliveryCount = (this.counts.get(offset) ?? this.baseCount(offset)) + 1;
    this.counts.set(offset, deliveryCount);
    if (offset > this.maxHanded) this.maxHanded = offset;
    this.inflight++;
    return new NatsDelivery(this, this.token, message, position, deliveryCount);
  }

  /** The group, for error details of a delivery. */
  get group(): string {
    return this.owner.group;
  }

  private baseCount(offset: number): number {
    return this.carryIn.counts[offset] ?? (offset <= this.carryIn.deliveredHigh ? 1 : 0);
  }

  /** Acks (`delayMs` undefined) or nacks a delivery of epoch `token`; ignored (fenced) if that epoch is over. */
  settle(token: object, offset: number, message: JsMsg, delayMs: number | undefined): void {
    this.owner.settled();
    if (token !== this.token) return; // fenced: the partition moved on without this delivery
    this.inflight--;
    if (delayMs === undefined) {
      this.queueReply(message, undefined);
      this.outstanding.delete(offset);
      this.delaysOut.delete(offset);
      this.advanceFloor();
    } else {
      this.outstanding.set(offset, 'waiting');
      const roundedMs = Math.ceil(delayMs);
      if (roundedMs > 0) this.delaysOut.set(offset, this.ctx.clock.now() + roundedMs);
      this.queueReply(message, roundedMs);
    }
    if (this.state === 'draining' && this.inflight === 0) void this.release();
  }

  /**
   * Queues an ack (`nakDelayMs` undefined) or a nak, sent with the others of this turn of the event loop: the client
   * writes to the socket once per turn instead of once per record.
   */
  private queueReply(message: JsMsg, nakDelayMs: number | undefined): void {
    this.replies.push(message);
    this.replyDelays.push(nakDelayMs);
    if (!this.repliesScheduled) {
      this.repliesScheduled = true;
      setImmediate(this.sendReplies);
    }
  }

  private readonly sendReplies = (): void => {
    this.repliesScheduled = false;
    const replies = this.replies;
    const delays = this.replyDelays;
    this.replies = [];
    this.replyDelays = [];
    for (let i = 0; i < replies.length; i++) {
      const message = replies[i]!;
      const delayMs = delays[i];
      safely(() =>
        delayMs === undefined ? message.ack() : delayMs > 0 ? message.nak(delayMs) : message.nak(),
      );
    }
  };

  private advanceFloor(): void {
    while (this.floor <= this.maxReceived && !this.outstanding.has(this.floor)) this.floor++;
    for (const offset of this.counts.keys()) {
      if (offset >= this.floor) break;
      this.counts.delete(offset);
    }
  }

  /** The committed position as this owner knows it: the lowest offset not acked yet. */
  get committed(): number {
    return this.floor;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Losing the partition

  /**
   * The partition moved to another member: stop handing out records now, release once the deliveries already
   * handed out are settled, or after `rebalanceTimeoutMs` (fencing those still out).
   */
  revoke(): void {
    if (this.state === 'claiming') {
      this.revokeRequested = true;
      return;
    }
    if (this.state !== 'active') return;
    this.state = 'draining';
    this.stopPulling();
    if (this.inflight === 0) {
      void this.release();
      return;
    }
    this.drainTimer = setTimeout(() => void this.release(), this.ctx.options.rebalanceTimeoutMs);
  }

  /**
   * Stops at once (close, lost lease): deliveries still out are fenced. With `release`, the ownership entry is
   * released with the committed position (compare-and-set on this epoch, so it is a no-op if another member took
   * over); resolves when done.
   */
  async stop(release: boolean): Promise<void> {
    if (this.state === 'done') return;
    if (this.state === 'claiming') {
      this.revokeRequested = true;
      await this.done;
      return;
    }
    if (this.state === 'releasing') {
      await this.done;
      return;
    }
    this.stopPulling();
    if (release) await this.release();
    else {
      this.fence();
      this.finish();
    }
  }

  private stopPulling(): void {
    this.stopped.abort();
    this.messages?.stop();
    // Records pulled but not handed out stay outstanding: the committed position stays below them.
    this.buffer = [];
    this.head = 0;
  }

  private fence(): void {
    this.token = {};
    this.inflight = 0;
  }

  private async release(): Promise<void> {
    if (this.state === 'releasing' || this.state === 'done') return;
    this.state = 'releasing';
    this.fence();
    this.sendReplies();
    clearTimeout(this.drainTimer);
    try {
      const { bucket, connector } = this.ctx;
      // Without a connection the lease runs out instead, and the next owner starts from the consumer's ack floor.
      if (!connector.connected) return;
      const current = await bucket.get<OwnershipValue>(this.key);
      const value = current?.value;
      if (current !== undefined && value?.owner === this.owner.memberId && value.epoch === this.epoch) {
        const released: OwnershipValue = {
          ...value,
          owner: null,
          committed: Math.max(this.floor, value.committed ?? 0),
          carry: this.carryOut(),
        };
        await bucket.update(this.key, released, current.revision);
      }
    } catch (error) {
      // The lease runs out instead; the next owner starts from the consumer's ack floor.
      this.owner.report(error, `releasing topic '${this.topic}' partition ${this.partition}`);
    } finally {
      this.finish();
    }
  }

  /** What the next owner needs to keep delivery counts and delayed nacks: bounded by `carryEntriesMax`. */
  private carryOut(): Carry {
    const now = this.ctx.clock.now();
    const deliveredHigh = Math.max(this.carryIn.deliveredHigh, this.maxHanded);
    const counts: Record<string, number> = {};
    let entries = 0;
    const addCount = (offset: number, count: number) => {
      if (offset < this.floor || count < 2 || entries >= carryEntriesMax) return;
      counts[offset] = count;
      entries++;
    };
    for (const [offset, count] of this.counts) addCount(offset, count);
    for (const [offset, count] of Object.entries(this.carryIn.counts)) {
      if (!this.counts.has(Number(offset))) addCount(Number(offset), count);
    }
    const delays: Record<string, number> = {};
    entries = 0;
    const addDelay = (offset: number, due: number) => {
      if (due <= now || entries >= carryEntriesMax) return;
      delays[offset] = due;
      entries++;
    };
    for (const [offset, due] of this.delaysOut) addDelay(offset, due);
    for (const [offset, due] of Object.entries(this.carryIn.delays)) addDelay(Number(offset), due);
    return { deliveredHigh, counts, delays };
  }

  private finish(): void {
    if (this.state === 'done') return;
    this.sendReplies();
    this.state = 'done';
    this.stopped.abort();
    this.messages?.stop();
    clearTimeout(this.drainTimer);
    this.buffer = [];
    this.head = 0;
    this.resolveDone();
    this.owner.workerDone(this);
  }
}

/** A record handed to a group member; settles through its worker, fenced once the worker's epoch is over. */
class NatsDelivery implements Delivery {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
  readonly key: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly value: Uint8Array;
  readonly timestamp: number;
  readonly deliveryCount: number;
  readonly #worker: PartitionWorker;
  readonly #token: object;
  readonly #message: JsMsg;
  #settled = false;

  constructor(
    worker: PartitionWorker,
    token: object,
    message: JsMsg,
    position: ConsumedPosition,
    deliveryCount: number,
  ) {
    const record = consumedRecord(worker.topic, worker.partition, message, position);
    this.topic = record.topic;
    this.partition = record.partition;
    this.offset = record.offset;
    this.key = record.key;
    this.headers = record.headers;
    this.value = record.value;
    this.timestamp = record.timestamp;
    this.deliveryCount = deliveryCount;
    this.#worker = worker;
    this.#token = token;
    this.#message = message;
  }

  ack(): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#worker.settle(this.#token, this.offset, this.#message, undefined);
  }

  nack(options?: { delayMs?: number }): void {
    const delayMs: unknown = options?.delayMs ?? 0;
    if (typeof delayMs !== 'number' || !Number.isFinite(delayMs) || delayMs < 0) {
      throw new TidingsError(
        ErrorCode.INVALID_CONFIG,
        `nack of offset ${this.offset} in topic '${this.topic}' partition ${this.partition} got delayMs ` +
          `${describeValue(delayMs)}; pass a finite number of milliseconds >= 0. The record was not settled.`,
        { topic: this.topic, partition: this.partition, offset: this.offset, group: this.#worker.group },
      );
    }
    if (this.#settled) return;
    this.#settled = true;
    this.#worker.settle(this.#token, this.offset, this.#message, delayMs);
  }
}

/** Runs an ack or nak; one that cannot be sent (connection closed) is redelivered by the broker instead. */
function safely(send: () => void): void {
  try {
    send();
  } catch {
    // See above.
  }
}
