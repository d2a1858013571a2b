/**
 * One member's hold on one partition of one topic for its group.
 *
 * Ownership is the broker's: the group's offset queue for the partition is a quorum queue with a single active
 * consumer. Every member assigned the partition consumes it; RabbitMQ makes exactly one consumer active and hands
 * it the queue's messages, which hold the committed position. The active consumer keeps its newest commit message
 * un-acknowledged for as long as it owns the partition, and each commit publishes a new message (confirmed) before
 * acknowledging the older ones. When the owner gives the partition up (cancels) or its connection dies (crash, lost
 * network, missed heartbeats: the lease), the broker returns the held message and activates the next consumer, which
 * resumes from the newest commit. A previous owner that lost the partition this way cannot commit any more: its
 * consumer and its generation are gone (acks of its deliveries are ignored: fenced).
 *
 * Records come from the partition's stream, read from the committed position; deliveries, nacks and redeliveries
 * are tracked here as in the in-memory transport, and the committed offset is the low-water mark.
 */
import type { Channel, ConsumeMessage } from 'amqplib';
import { randomUUID } from 'node:crypto';
import { describeError, ErrorCode, TidingsError } from '../core/errors.js';
import type { Delivery, StoredRecord } from '../core/transport.js';
import { decodeRecord, streamOffsetOf, timestampOf } from './codec.js';
import { cancelAndClose, withTimeout, type Connector } from './connection.js';
import type { Names } from './names.js';
import type { ResolvedOptions } from './options.js';
import { laterCommit, parseCommit, streamStartOf, type Commit, type Position } from './positions.js';
import { publishConfirmed, settleQueue, streamOffsetArgument } from './streams.js';
import { describeValue } from './validation.js';

/** What the owner needs from its member. */
export interface OwnerHost {
  readonly group: string;
  readonly connector: Connector;
  readonly names: Names;
  readonly options: ResolvedOptions;
  /** The member's channel for offset-queue consumers. */
  controlChannel(): Channel;
  /** Where a partition the group never owned starts. */
  readonly startPosition: Position;
  /** Records arrived or a redelivery is due: the member may have something to hand out. */
  wake(): void;
  /** A delivery was settled (or fenced and then settled): a prefetch slot is free. */
  released(): void;
  /** The owner's committed position changed (for heartbeats). */
  progressed(): void;
  /** Channel or broker failure the owner cannot recover from; the member restarts its session. */
  failed(error: Error): void;
}

interface InFlight {
  state: 'inflight';
  record: StoredRecord;
  generation: number;
  settled: boolean;
}
type Pending =
  | InFlight
  | { state: 'delayed'; record: StoredRecord; timer: NodeJS.Timeout }
  | { state: 'ready'; record: StoredRecord };

const activationCollectMs = 25;
const streamPrefetch = 500;

export class PartitionOwner {
  state: 'joining' | 'active' | 'releasing' | 'done' = 'joining';
  readonly key: string;
  private readonly queue: string;
  private generation = 0;
  private consumerTag: string | undefined;
  /** Commit messages this consumer holds un-acknowledged (the newest is the committed position). */
  private held: Array<{ message: ConsumeMessage; commit: Commit }> = [];
  private activationTimer: NodeJS.Timeout | undefined;
  private stream: Channel | undefined;
  private streamAck: ConsumeMessage | undefined;
  private streamAckScheduled = false;
  private streamTag: string | undefined;
  /**
   * The highest offset the last confirmed commit says may have been handed out. A record above it is handed out only
   * after a commit raised it (to the end of the buffer, so one commit covers many records): a member that crashes
   * then cannot leave records it handed out looking undelivered to the next owner.
   */
  private committedDelivered = -1;
  /** Where the next commit raises the delivered mark to. */
  private reserveTo = -1;
  private readonly buffer: Array<{ record: StoredRecord; message: ConsumeMessage }> = [];
  /** Set while the start position is a time: records before it (by running maximum) are skipped. */
  private skipBefore: number | undefined;
  /** The committed position: a start position until the first record is seen, then an offset. */
  private position: Position = { earliest: true };
  /** The next offset to hand out for the first time, once known. */
  private fetched: number | undefined;
  private readonly pending = new Map<number, Pending>();
  private redeliver: number[] = [];
  private readonly counts = new Map<number, number>();
  private priorCounts: Record<string, number> = {};
  private priorDelivered = -1;
  private inflight = 0;
  private lastCommitted = '';
  /** The reset the position this owner started from comes from (see `Commit.resetAt`); carried by its commits. */
  private resetAt: number | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private flushInFlight = false;
  private settledWaiters: Array<() => void> = [];

  constructor(
    private readonly host: OwnerHost,
    readonly topic: string,
    readonly partition: number,
  ) {
    this.key = `${topic}\u0000${partition}`;
    this.queue = host.names.offsetQueue(host.group, topic, partition);
  }

  /** Declares the offset queue (with the start position if it is new) and waits in line for the partition. */
  async join(): Promise<void> {
    const control = this.host.controlChannel();
    const info = await control.assertQueue(this.queue, {
      durable: true,
      arguments: { 'x-queue-type': 'quorum', 'x-single-active-consumer': true },
    });
    await settleQueue(this.host.connector, this.queue, 'quorum');
    if (info.messageCount === 0 && info.consumerCount === 0) {
      const commit: Commit = { id: randomUUID(), position: this.host.startPosition, at: Date.now() };
      await publishConfirmed(
        await this.host.connector.confirmChannel(),
        '',
        this.queue,
        encodeCommit(commit),
        {
          persistent: true,
          contentType: 'application/json',
        },
      );
    }
    if (this.state !== 'joining') return;
    const { consumerTag } = await control.consume(this.queue, (message) => this.onCommitMessage(message), {
      noAck: false,
    });
    this.consumerTag = consumerTag;
    if (this.state !== 'joining') await control.cancel(consumerTag).catch(() => undefined);
  }

  private onCommitMessage(message: ConsumeMessage | null): void {
    if (message === null) {
      if (this.state === 'joining' || this.state === 'active') {
        this.host.failed(new Error(`the offset queue '${this.queue}' was deleted`));
      }
      return;
    }
    const commit = parseCommit(message.content);
    if (commit === undefined) {
      this.host.controlChannel().ack(message);
      return;
    }
    if (this.state === 'done') {
      // Arrived after this member let go: straight back to the queue, for the next owner.
      this.host.controlChannel().nack(message, false, true);
      return;
    }
    this.held.push({ message, commit });
    if (this.state === 'joining' && this.activationTimer === undefined) {
      // The first message means the broker made this consumer the active one; the rest of the queue follows it
      // at once. Collect briefly, then start from the newest commit.
      this.activationTimer = setTimeout(() => this.activate(), activationCollectMs);
    }
  }

  private activate(): void {
    this.activationTimer = undefined;
    if (this.state !== 'joining') return;
    let best = this.held[0]!.commit;
    for (const { commit } of this.held) best = laterCommit(best, commit);
    this.ackHeldExcept(best.id);
    this.position = best.position;
    this.lastCommitted = JSON.stringify(best.position);
    this.priorCounts = best.counts ?? {};
    this.priorDelivered = best.delivered ?? -1;
    this.resetAt = best.resetAt;
    this.committedDelivered = this.priorDelivered;
    if ('offset' in best.position) this.fetched = best.position.offset;
    if ('timestamp' in best.position) this.skipBefore = best.position.timestamp;
    this.state = 'active';
    this.host.progressed();
    this.openStream(best.position).catch((error: unknown) =>
      this.host.failed(error instanceof Error ? error : new Error(describeError(error))),
    );
  }

  private async openStream(position: Position): Promise<void> {
    const channel = await this.host.connector.channel();
    if (this.state !== 'active') {
      await channel.close().catch(() => undefined);
      return;
    }
    this.stream = channel;
    channel.on('close', () => {
      if (this.stream === channel && this.state === 'active') {
        this.host.failed(
          new Error(`lost the stream channel of topic '${this.topic}' partition ${this.partition}`),
        );
      }
    });
    await channel.prefetch(streamPrefetch, false);
    const { consumerTag } = await channel.consume(
      this.host.names.partitionStream(this.topic, this.partition),
      (message) => this.onRecord(channel, message),
      { noAck: false, arguments: { 'x-stream-offset': streamOffsetArgument(streamStartOf(position)) } },
    );
    this.streamTag = consumerTag;
    if (this.stream !== channel) await cancelAndClose(channel, consumerTag);
  }

  private onRecord(channel: Channel, message: ConsumeMessage | null): void {
    if (message === null || this.state !== 'active' || channel !== this.stream) return;
    const offset = streamOffsetOf(message);
    if (
      offset === undefined ||
      (this.fetched !== undefined && offset < this.fetched && this.buffer.length === 0)
    ) {
      if (this.buffer.length === 0) this.ackStream(message);
      return;
    }
    if (this.skipBefore !== undefined) {
      if (timestampOf(message) < this.skipBefore) {
        if (this.buffer.length === 0) this.ackStream(message);
        return;
      }
      this.skipBefore = undefined;
    }
    if (this.fetched === undefined) this.fetched = offset;
    this.buffer.push({ record: decodeRecord(this.topic, this.partition, offset, message), message });
    this.host.wake();
  }

  /** The next delivery of this partition: a due redelivery first, then the next new record. */
  take(member: string): Delivery | undefined {
    if (this.state !== 'active') return undefined;
    while (this.redeliver.length > 0) {
      const offset = this.redeliver.shift()!;
      const entry = this.pending.get(offset);
      if (entry?.state === 'ready') return this.deliver(entry.record, member);
    }
    const head = this.buffer[0];
    if (head === undefined) return undefined;
    if (head.record.offset > this.committedDelivered - streamPrefetch / 2) {
      // Raise the mark a window ahead, before it is reached, so that consuming does not stall on the commit.
      this.reserveTo = Math.max(
        this.reserveTo,
        this.buffer[this.buffer.length - 1]!.record.offset + streamPrefetch,
      );
      this.flushNow();
      if (head.record.offset > this.committedDelivered) return undefined;
    }
    const next = this.buffer.shift()!;
    this.ackStream(next.message);
    this.fetched = next.record.offset + 1;
    if (!('offset' in this.position)) this.position = { offset: next.record.offset };
    return this.deliver(next.record, member);
  }

  /**
   * Acknowledges stream deliveries up to `message` (stream acks are credit, not settlement), batched: one `multiple`
   * ack per turn of the event loop.
   */
  private ackStream(message: ConsumeMessage): void {
    this.streamAck = message;
    if (this.streamAckScheduled) return;
    this.streamAckScheduled = true;
    const channel = this.stream;
    setImmediate(() => {
      this.streamAckScheduled = false;
      const newest = this.streamAck;
      this.streamAck = undefined;
      if (newest === undefined || channel === undefined || channel !== this.stream) return;
      try {
        channel.ack(newest, true);
      } catch {
        // the channel closed: nothing to give credit for
      }
    });
  }

  private deliver(record: StoredRecord, member: string): Delivery {
    const offset = record.offset;
    const prior =
      this.counts.get(offset) ?? this.priorCounts[String(offset)] ?? (offset <= this.priorDelivered ? 1 : 0);
    const deliveryCount = prior + 1;
    this.counts.set(offset, deliveryCount);
    // The first delivery hands over the bytes as received; a redelivery gets a copy (the handler may have changed them).
    const value = deliveryCount === 1 && prior === 0 ? record.value : new Uint8Array(record.value);
    const state: InFlight = { state: 'inflight', record, generation: this.generation, settled: false };
    this.pending.set(offset, state);
    this.inflight++;
    return {
      ...record,
      value,
      deliveryCount,
      ack: () => this.settle(state, undefined),
      nack: (options?: { delayMs?: number }) => {
        const delayMs: unknown = options?.delayMs ?? 0;
        if (typeof delayMs !== 'number' || !Number.isFinite(delayMs) || delayMs < 0) {
          throw new TidingsError(
            ErrorCode.INVALID_CONFIG,
            `nack of offset ${offset} in topic '${record.topic}' partition ${record.partition} got delayMs ` +
              `${describeValue(delayMs)}; pass a finite number of milliseconds >= 0. The record was not settled.`,
            { topic: record.topic, partition: record.partition, offset, group: this.host.group, member },
          );
        }
        this.settle(state, delayMs);
      },
    };
  }

  private settle(state: InFlight, delayMs: number | undefined): void {
    if (state.settled) return;
    state.settled = true;
    const offset = state.record.offset;
    if (state.generation === this.generation && this.pending.get(offset) === state) {
      this.inflight--;
      if (delayMs === undefined) {
        this.pending.delete(offset);
        this.advance();
      } else if (delayMs <= 0) {
        this.pending.set(offset, { state: 'ready', record: state.record });
        this.redeliver.push(offset);
        this.host.wake();
      } else {
        const timer = setTimeout(() => {
          const entry = this.pending.get(offset);
          if (entry?.state !== 'delayed' || entry.timer !== timer) return;
          this.pending.set(offset, { state: 'ready', record: state.record });
          this.redeliver.push(offset);
          this.redeliver.sort((a, b) => a - b);
          this.host.wake();
        }, delayMs);
        this.pending.set(offset, { state: 'delayed', record: state.record, timer });
      }
      if (this.inflight === 0) this.notifySettled();
    }
    this.host.released();
  }

  /** Moves the committed position to the low-water mark and schedules a commit. */
  private advance(): void {
    if (this.fetched === undefined) return;
    // Both maps hold offsets in the order they were first delivered, which is offset order: the first key is lowest.
    let low = this.fetched;
    for (const offset of this.pending.keys()) {
      low = Math.min(low, offset);
      break;
    }
    this.position = { offset: low };
    for (const offset of this.counts.keys()) {
      if (offset >= low) break;
      this.counts.delete(offset);
    }
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushTimer !== undefined || this.state !== 'active') return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      this.flush().catch((error: unknown) =>
        this.host.failed(error instanceof Error ? error : new Error(describeError(error))),
      );
    }, this.host.options.commitIntervalMs);
  }

  /** Commits at once (unless a commit is under way; it is followed by another if still needed). */
  private flushNow(): void {
    if (this.flushInFlight || this.state !== 'active') return;
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    this.flush()
      .then(() => this.host.wake())
      .catch((error: unknown) =>
        this.host.failed(error instanceof Error ? error : new Error(describeError(error))),
      );
  }

  /**
   * Writes the committed position (and the delivered mark) to the offset queue if either changed, then lets go of
   * older commit messages. With `final`, the delivered mark is exactly what was handed out (a clean handover).
   */
  flush(final = false): Promise<void> {
    const run = async (): Promise<void> => {
      const serialized = JSON.stringify(this.position);
      const handedOut = this.fetched === undefined ? -1 : this.fetched - 1;
      const delivered = final ? handedOut : Math.max(handedOut, this.reserveTo, this.committedDelivered);
      if (serialized === this.lastCommitted && delivered === this.committedDelivered) return;
      const counts: Record<string, number> = {};
      for (const [offset, count] of this.counts) counts[String(offset)] = count;
      const commit: Commit = {
        id: randomUUID(),
        position: this.position,
        counts,
        delivered,
        at: Date.now(),
        ...(this.resetAt === undefined ? {} : { resetAt: this.resetAt }),
      };
      await publishConfirmed(
        await this.host.connector.confirmChannel(),
        '',
        this.queue,
        encodeCommit(commit),
        {
          persistent: true,
          contentType: 'application/json',
        },
      );
      this.lastCommitted = serialized;
      this.committedDelivered = delivered;
      this.ackHeldExcept(commit.id);
      this.host.progressed();
    };
    const previous = this.flushing ?? Promise.resolve();
    const next = previous.then(run, run).finally(() => {
      if (this.flushing === next) this.flushInFlight = false;
      if (this.state === 'active') this.host.wake(); // a record may have waited for its delivered mark
    });
    this.flushInFlight = true;
    this.flushing = next;
    return next;
  }

  private ackHeldExcept(id: string): void {
    const keep: typeof this.held = [];
    for (const entry of this.held) {
      if (entry.commit.id === id) keep.push(entry);
      else {
        try {
          this.host.controlChannel().ack(entry.message);
        } catch {
          // channel gone: the broker returns it to the queue, where the newest commit still wins
        }
      }
    }
    this.held = keep;
  }

  /** The committed offset, when it is concrete. */
  committedOffset(): number | undefined {
    return 'offset' in this.position ? this.position.offset : undefined;
  }

  committedPosition(): Position {
    return this.position;
  }

  /**
   * Gives the partition up. For a rebalance, waits (up to `rebalanceTimeoutMs`) until every delivery is settled;
   * for a close, at once. Then fences what is outstanding, commits, and cancels its consumers so that the broker
   * activates the next member in line.
   */
  async release(wait: boolean): Promise<void> {
    if (this.state === 'done' || this.state === 'releasing') return;
    const wasActive = this.state === 'active';
    this.state = 'releasing';
    clearTimeout(this.activationTimer);
    if (wasActive && wait && this.inflight > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.host.options.rebalanceTimeoutMs);
        this.settledWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    this.fence();
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    try {
      if (wasActive) await withTimeout(this.flush(true), 10_000);
    } finally {
      const stream = this.stream;
      this.stream = undefined;
      this.buffer.length = 0;
      await cancelAndClose(stream, this.streamTag);
      if (this.consumerTag !== undefined) {
        await withTimeout(
          this.host
            .controlChannel()
            .cancel(this.consumerTag)
            .catch(() => undefined),
          2_000,
        );
      }
      this.consumerTag = undefined;
      this.state = 'done';
      // A cancelled consumer keeps its un-acknowledged messages; give the commit back so that the broker hands it
      // to the consumer it activates next.
      for (const { message } of this.held) {
        try {
          this.host.controlChannel().nack(message, false, true);
        } catch {
          // channel gone: the broker requeues it anyway
        }
      }
      this.held = [];
    }
  }

  /** The connection is gone: the broker already took the partition back. Forget everything. */
  drop(): void {
    this.state = 'done';
    clearTimeout(this.activationTimer);
    clearTimeout(this.flushTimer);
    this.fence();
    this.buffer.length = 0;
    this.held = [];
    this.stream = undefined;
  }

  private fence(): void {
    this.generation++;
    for (const entry of this.pending.values()) if (entry.state === 'delayed') clearTimeout(entry.timer);
    // Nacked records waiting here are not settled by anyone: keep the committed offset at or below them.
    this.pending.clear();
    this.redeliver = [];
    this.inflight = 0;
    this.notifySettled();
  }

  private notifySettled(): void {
    const waiters = this.settledWaiters;
    this.settledWaiters = [];
    for (const waiter of waiters) waiter();
  }
}

function encodeCommit(commit: Commit): Buffer {
  return Buffer.from(JSON.stringify(commit));
}
