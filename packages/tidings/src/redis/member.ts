/**
 * One consumer-group member of the Redis transport: its membership (lease, rebalancing, claims and releases), its
 * fetch loop and its deliveries.
 *
 * Protocol (each step one Lua script, so steps of different processes are serialized by Redis):
 * - A member's lease is a key with a TTL (`SET ... PX leaseMs`), renewed by every heartbeat (`sync`). The live
 *   members are those whose lease key exists, in join order; per topic, partition p is assigned to the
 *   (p mod n)-th live member subscribed to it. Every member computes the same assignment from the same rows.
 * - A partition is owned through its owner key, `<member>|<epoch>` with the same TTL. A member claims a partition
 *   assigned to it only when the owner key is absent or names a member that is not live: the epoch counter is bumped
 *   (`HINCRBY`), the owner key set, every entry pending in the group for that partition moved to the claimer
 *   (`XAUTOCLAIM ... JUSTID`) and the previous consumers removed. The claimer first replays those pending entries (in
 *   id order, `XPENDING` pages then `XCLAIM`, which counts the redelivery), then reads new entries (`XREADGROUP >`).
 * - A member that is no longer assigned a partition it owns stops handing out its records, waits until its
 *   deliveries of it are settled (or `rebalanceTimeoutMs` passed), then releases it (deletes the owner key), setting
 *   back the delivery count of entries it read but never handed out.
 * - Every write made for a partition (redeliver, replay, ack, nack delay, release) is a script that first checks
 *   the owner key still holds `<member>|<epoch>`: a member that lost the partition changes nothing (fenced), and
 *   drops the partition when it learns so. New records are read with a plain `XREADGROUP >` (no Lua on the hot path),
 *   pipelined with a read of the owner key and of the group's pending summary: a member hands out what it read only
 *   if it still owned the partition after the read, and an owner that finds entries pending at another consumer (a
 *   stale member that read late) takes them back and replays them, in id order, before anything newer.
 * - A member hands out records only while its own lease (as last renewed, less a margin) has not passed, so a paused
 *   process stops before any other member may claim its partitions.
 * - Joins, leaves, claims and releases are published on the group's channel, so the other members rebalance at once
 *   rather than at their next heartbeat.
 */
import { randomBytes } from 'node:crypto';
import * as os from 'node:os';
import type { Clock } from '../core/clock.js';
import { ErrorCode, isTidingsError } from '../core/errors.js';
import type { Delivery, StartPosition } from '../core/transport.js';
import type { CancelDelayed, DelayQueue } from '../memory/delay-queue.js';
import { decodeEntry, type Entry } from './codec.js';
import { RedisDelivery, type Settler } from './delivery.js';
import { isReplyError, type Connection } from './connection.js';
import { encodeName, type Keys } from './keys.js';
import { hostId, isDeadHere, parseMemberInfo } from './liveness.js';
import type { ResolvedOptions } from './options.js';
import {
  ackScript,
  claimScript,
  nackDelayScript,
  pendingScript,
  releaseScript,
  syncScript,
  takeBackScript,
} from './scripts.js';
import { compareStrings, list, noop, positionArg } from './util.js';

/** What a member needs from its transport. */
export interface MemberContext {
  readonly options: ResolvedOptions;
  readonly keys: Keys;
  readonly commands: Connection;
  readonly delays: DelayQueue;
  readonly clock: Clock;
  /** A new connection for this member's blocking reads. */
  blockingConnection(onConnect: (clientId: number) => void): Connection;
  /** Called once the member has left. */
  memberClosed(member: Member): void;
}

export interface MemberSettings {
  readonly group: string;
  readonly topics: readonly string[];
  readonly startFrom: StartPosition;
  readonly prefetch: number;
}

/** A record read for a partition and not handed out yet, with the delivery count it will be handed out with. */
interface Buffered {
  readonly entry: Entry;
  readonly count: number;
}

/** A delivery handed out and not settled yet, as the member tracks it (the {@link RedisDelivery} itself). */
type InFlight = RedisDelivery<Owned>;

/** A member's state of one partition it owns. */
interface Owned {
  /** `<encoded topic>:<partition>`. */
  readonly key: string;
  readonly topic: string;
  readonly partition: number;
  readonly stream: string;
  readonly ownerKey: string;
  readonly delayKey: string;
  readonly epoch: number;
  /** The owner key's value while this member owns the partition at this epoch. */
  readonly expected: string;
  /** The group's last-delivered id in this stream as far as this member knows: where a blocking wait starts. */
  lastId: string;
  /** While replaying the entries pending at the claim: the `XPENDING` start of the next page. */
  replay: string | undefined;
  buffer: Buffered[];
  head: number;
  /** Pending entries due for redelivery, oldest first, with the delivery count they will have. */
  redeliver: Array<{ id: string; count: number }>;
  /** Nacked entries waiting out their delay (count unknown for delays inherited at a claim until the replay). */
  readonly delayed: Map<string, { count: number | undefined; cancel: CancelDelayed }>;
  readonly inflight: Map<string, InFlight>;
  acks: string[];
  handingOver: boolean;
  cancelHandover: CancelDelayed | undefined;
  dropped: boolean;
}

/** The sync script's reply. Lua's cjson encodes an empty array as `{}`: read every list through {@link list}. */
interface SyncReply {
  rejoined: boolean;
  members: Array<[string, string]> | Record<string, never>;
  targets: Array<[string, number]> | Record<string, never>;
  parts:
    | Array<{
        t: string;
        p: number;
        state: 'own' | 'handover' | 'claimed' | 'other' | 'free';
        epoch: number;
        lastId?: string;
        pending?: number;
        delays?: string[] | Record<string, never>;
      }>
    | Record<string, never>;
}

/** Most bytes of records one read asks for, estimated from the sizes seen so far. */
const readBytesMax = 4 * 1024 * 1024;
/** Most records one read, replay page or redelivery asks for. */
const readCountMax = 1_000;
/** Longest a blocking wait for new records lasts before the loop looks again. */
const blockMs = 1_000;
/** Acks per partition per script call at most (Lua's unpack limit is about 8,000). */
const acksPerCall = 1_000;

let memberSeq = 0;
const memberPrefix = `${os
  .hostname()
  .replace(/[^A-Za-z0-9._-]/g, '_')
  .slice(0, 40)}-${process.pid}-${randomBytes(3).toString('hex')}`;

export class Member implements Settler<Owned> {
  readonly id = `${memberPrefix}-${++memberSeq}`;
  readonly group: string;
  readonly topics: readonly string[];
  readonly prefetch: number;
  readonly closed: Promise<Error | undefined>;
  isClosed = false;

  private readonly ctx: MemberContext;
  private readonly startFrom: StartPosition;
  private readonly eg: string;
  private readonly leaseMarginMs: number;
  private readonly owned = new Map<string, Owned>();
  /** Owned partitions with buffered records, in round-robin order. */
  private readonly ready = new Set<Owned>();
  private readonly ackDirty = new Set<Owned>();
  private ackScheduled = false;
  private targets: Array<{ topic: string; partition: number }> = [];
  private unacked = 0;
  private buffered = 0;
  /** Performance-clock ms until which it may hand out records. */
  private leaseValidUntil = Number.NEGATIVE_INFINITY;
  private joinSent = false;
  private syncing = false;
  private syncAgain = false;
  private dead: string[] = [];
  private waiters: Array<() => void> = [];
  private loopWaiter: (() => void) | undefined;
  private wakeRequested = false;
  private blocking: Connection | undefined;
  private blockingId: number | undefined;
  private inBlock = false;
  private avgEntryBytes = 1024;
  private leaving: Promise<void> | undefined;
  private resolveClosed!: (value: Error | undefined) => void;
  private detachSignal: () => void = noop;
  /** Test hook: a member that no longer renews its lease, as a hung process. */
  heartbeatsPaused = false;

  constructor(ctx: MemberContext, settings: MemberSettings) {
    this.ctx = ctx;
    this.group = settings.group;
    this.topics = settings.topics;
    this.startFrom = settings.startFrom;
    this.prefetch = settings.prefetch;
    this.eg = encodeName(settings.group);
    this.leaseMarginMs = Math.min(1000, Math.floor(ctx.options.leaseMs / 5));
    this.closed = new Promise<Error | undefined>((resolve) => {
      this.resolveClosed = resolve;
    });
  }

  /** Joins the group and starts the fetch loop. */
  start(signal: AbortSignal | undefined): void {
    this.blocking = this.ctx.blockingConnection((clientId) => {
      this.blockingId = clientId;
    });
    if (signal !== undefined) {
      const onAbort = () => void this.close(undefined);
      signal.addEventListener('abort', onAbort, { once: true });
      this.detachSignal = () => signal.removeEventListener('abort', onAbort);
    }
    this.requestSync();
    void this.fetchLoop();
  }

  /** A member born closed (its signal had aborted): it never joined. */
  closeUnjoined(): void {
    this.isClosed = true;
    this.leaving = Promise.resolve();
    this.resolveClosed(undefined);
  }

  assignments(): ReadonlyArray<{ topic: string; partition: number }> {
    return this.isClosed ? [] : this.targets;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Membership

  /** Queues a rebalance step (the join, the first time); coalesces requests made while one runs. */
  requestSync(): void {
    if (this.isClosed || this.heartbeatsPaused) return;
    if (this.syncing) {
      this.syncAgain = true;
      return;
    }
    this.syncing = true;
    void this.syncOnce().finally(() => {
      this.syncing = false;
      if (this.syncAgain && !this.isClosed) {
        this.syncAgain = false;
        this.requestSync();
      }
    });
  }

  private async syncOnce(): Promise<void> {
    const { options, keys, commands } = this.ctx;
    const what = `rebalance group '${this.group}'`;
    if (!commands.isUsable) {
      // Once connected the join goes out first: its waiter was queued before any later command of this transport's.
      try {
        await commands.ready(what, Number.POSITIVE_INFINITY);
      } catch {
        return; // closed
      }
      if (this.isClosed || this.heartbeatsPaused) return;
    }
    // Sent synchronously from here when connected: the join precedes any command issued after subscribe() returned.

    const owned: Record<string, number> = {};
    for (const lp of this.owned.values()) owned[lp.key] = lp.epoch;
    const payload = JSON.stringify({
      prefix: keys.prefix,
      group: this.group,
      eg: this.eg,
      me: this.id,
      leaseMs: options.leaseMs,
      join: !this.joinSent,
      info: JSON.stringify({ topics: this.topics, host: hostId, pid: process.pid }),
      start: positionArg(this.startFrom),
      defaultPartitions: options.defaultPartitions,
      topics: this.topics.map((t) => ({ t, et: encodeName(t) })),
      owned,
      dead: this.dead,
    });
    const sentAt = performance.now();
    this.joinSent = true;
    let reply: unknown;
    try {
      reply = await commands.eval(what, syncScript, 0, [payload], false);
    } catch (error) {
      if (isTidingsError(error) && !error.retryable && error.code !== ErrorCode.CLOSED && !this.isClosed) {
        void this.close(error);
      }
      return; // The next heartbeat tries again.
    }
    if (this.isClosed) return;
    this.applySync(JSON.parse(String(reply)) as SyncReply, sentAt);
  }

  private applySync(reply: SyncReply, sentAt: number): void {
    this.leaseValidUntil = sentAt + this.ctx.options.leaseMs - this.leaseMarginMs;
    this.targets = list(reply.targets)
      .map(([topic, partition]) => ({ topic, partition }))
      .sort((a, b) => compareStrings(a.topic, b.topic) || a.partition - b.partition);
    const dead: string[] = [];
    for (const [id, info] of list(reply.members)) {
      if (id !== this.id && isDeadHere(parseMemberInfo(info))) dead.push(id);
    }
    this.dead = dead;
    if (dead.length > 0) this.syncAgain = true;
    for (const part of list(reply.parts)) {
      const key = `${encodeName(part.t)}:${part.p}`;
      const lp = this.owned.get(key);
      switch (part.state) {
        case 'own':
          if (lp !== undefined && lp.epoch === part.epoch && lp.handingOver) this.resume(lp);
          break;
        case 'handover':
          if (lp !== undefined && lp.epoch === part.epoch) this.startHandover(lp);
          break;
        case 'claimed':
          if (lp !== undefined) this.drop(lp);
          this.startOwned(
            part.t,
            part.p,
            part.epoch,
            part.lastId ?? '0-0',
            part.pending ?? 0,
            list(part.delays),
          );
          break;
        default:
          if (lp !== undefined) this.drop(lp);
      }
    }
    this.wake();
    this.wakeLoop();
  }

  private startOwned(
    topic: string,
    partition: number,
    epoch: number,
    lastId: string,
    pending: number,
    delays: readonly string[],
  ): void {
    const { keys, clock, delays: queue } = this.ctx;
    const lp: Owned = {
      key: `${encodeName(topic)}:${partition}`,
      topic,
      partition,
      stream: keys.stream(topic, partition),
      ownerKey: keys.owner(this.group, topic, partition),
      delayKey: keys.delay(this.group, topic, partition),
      epoch,
      expected: `${this.id}|${epoch}`,
      lastId,
      replay: pending > 0 ? '-' : undefined,
      buffer: [],
      head: 0,
      redeliver: [],
      delayed: new Map(),
      inflight: new Map(),
      acks: [],
      handingOver: false,
      cancelHandover: undefined,
      dropped: false,
    };
    const now = clock.now();
    for (let i = 0; i + 1 < delays.length; i += 2) {
      const id = delays[i]!;
      const dueAtMs = Number(delays[i + 1]);
      if (!(dueAtMs > now)) continue;
      const entry = { count: undefined as number | undefined, cancel: noop };
      lp.delayed.set(id, entry);
      entry.cancel = queue.schedule(dueAtMs, () => this.delayDone(lp, id, entry));
    }
    this.owned.set(lp.key, lp);
  }

  private startHandover(lp: Owned): void {
    if (lp.handingOver || lp.dropped) return;
    lp.handingOver = true;
    this.ready.delete(lp);
    if (lp.inflight.size === 0) {
      this.release(lp);
      return;
    }
    lp.cancelHandover = this.ctx.delays.schedule(
      this.ctx.clock.now() + this.ctx.options.rebalanceTimeoutMs,
      () => {
        lp.cancelHandover = undefined;
        if (!lp.dropped && lp.handingOver) this.release(lp);
      },
    );
  }

  private resume(lp: Owned): void {
    lp.handingOver = false;
    lp.cancelHandover?.();
    lp.cancelHandover = undefined;
    if (lp.head < lp.buffer.length) this.ready.add(lp);
  }

  /** Gives a partition up (fenced): the next owner replays what is still pending. */
  private release(lp: Owned): void {
    if (lp.dropped) return;
    this.flushAcks();
    const part = this.releasePart(lp);
    this.drop(lp);
    const payload = JSON.stringify({
      prefix: this.ctx.keys.prefix,
      group: this.group,
      eg: this.eg,
      me: this.id,
      leave: false,
      parts: [part],
    });
    // On failure the owner key runs out with the lease, or the next sync deletes it as state this member lost.
    this.ctx.commands
      .eval(`release partition ${lp.partition} of topic '${lp.topic}'`, releaseScript, 0, [payload], false)
      .catch(noop);
  }

  private releasePart(lp: Owned) {
    const unhanded: Array<[string, number]> = [];
    for (let i = lp.head; i < lp.buffer.length; i++) {
      const buffered = lp.buffer[i]!;
      unhanded.push([buffered.entry.id, buffered.count - 1]);
    }
    return { t: lp.topic, et: encodeName(lp.topic), p: lp.partition, epoch: lp.epoch, unhanded };
  }

  /** Forgets a partition locally (lost, released or left). Its unsettled deliveries are fenced. */
  private drop(lp: Owned): void {
    if (lp.dropped) return;
    lp.dropped = true;
    if (this.owned.get(lp.key) === lp) this.owned.delete(lp.key);
    this.ready.delete(lp);
    this.ackDirty.delete(lp);
    lp.acks = [];
    for (const entry of lp.delayed.values()) entry.cancel();
    lp.delayed.clear();
    lp.cancelHandover?.();
    lp.cancelHandover = undefined;
    this.buffered -= lp.buffer.length - lp.head;
    lp.buffer = [];
    lp.head = 0;
    lp.redeliver = [];
    lp.replay = undefined;
  }

  /** A partition whose write was fenced: drop it and rebalance. */
  private fenced(lp: Owned): void {
    if (lp.dropped) return;
    this.drop(lp);
    this.requestSync();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Fetching

  /** Lets a fetch loop that waits for room (prefetch) or for its lease look again. */
  private kickLoop(): void {
    const waiter = this.loopWaiter;
    if (waiter !== undefined) {
      this.loopWaiter = undefined;
      waiter();
    }
  }

  /** There is new work (a claim, a redelivery, closing): the fetch loop looks again, even if blocked in a read. */
  private wakeLoop(): void {
    this.wakeRequested = true;
    this.kickLoop();
    if (this.inBlock && this.blockingId !== undefined && this.ctx.commands.isUsable) {
      this.ctx.commands.client.client('UNBLOCK', this.blockingId).catch(noop);
    }
  }

  private waitLoop(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        if (this.loopWaiter === done) this.loopWaiter = undefined;
        resolve();
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.loopWaiter = done;
    });
  }

  /** Reads records into the partitions' buffers while there is room, waiting for new ones when there are none. */
  private async fetchLoop(): Promise<void> {
    let failures = 0;
    while (!this.isClosed) {
      this.wakeRequested = false;
      try {
        const free = this.prefetch - this.unacked - this.buffered;
        // While records wait to be handed out, read again only once half the prefetch is free: fewer, larger reads.
        const room = this.buffered > 0 ? free >= Math.max(1, this.prefetch / 2) : free > 0;
        if (!room || performance.now() >= this.leaseValidUntil || this.owned.size === 0) {
          await this.waitLoop(blockMs);
          continue;
        }
        const progressed = await this.fetchOnce(free);
        failures = 0;
        if (!progressed && !this.wakeRequested) await this.block();
      } catch (error) {
        if (this.isClosed) break;
        if (isTidingsError(error) && !error.retryable && error.code !== ErrorCode.TRANSPORT_UNAVAILABLE) {
          void this.close(error);
          break;
        }
        failures++;
        await this.waitLoop(Math.min(50 * 2 ** Math.min(failures, 5), this.ctx.options.reconnectDelayMsMax));
        try {
          await this.ctx.commands.ready('read records', Number.POSITIVE_INFINITY);
        } catch {
          break; // closed
        }
      }
    }
  }

  /** One step: a redelivery, a replay page or a read of new records. Returns whether anything happened. */
  private async fetchOnce(free: number): Promise<boolean> {
    const active: Owned[] = [];
    for (const lp of this.owned.values()) {
      if (lp.handingOver || lp.dropped) continue;
      if (lp.redeliver.length > 0) {
        await this.redeliver(lp, free);
        return true;
      }
      if (lp.replay !== undefined) {
        await this.replayPage(lp, free);
        return true;
      }
      active.push(lp);
    }
    if (active.length === 0) return false;
    try {
      return await this.readNew(active, free);
    } catch (error) {
      // The read may have run with its reply lost (the connection dropped): entries it moved to this member's
      // pending list would never come. Replay the pending list of those partitions, skipping what is known here.
      for (const lp of active) if (!lp.dropped) lp.replay = '-';
      throw error;
    }
  }

  private async redeliver(lp: Owned, free: number): Promise<void> {
    const batch = lp.redeliver.splice(0, Math.min(free, readCountMax));
    const counts = new Map(batch.map((item) => [item.id, item.count]));
    let reply: unknown;
    try {
      reply = await this.ctx.commands.eval(
        `redeliver records of partition ${lp.partition} of topic '${lp.topic}'`,
        claimScript,
        0,
        [lp.ownerKey, lp.expected, lp.stream, this.group, this.id, ...batch.map((item) => item.id)],
        true,
      );
    } catch (error) {
      // Still pending whether or not the claim ran: try them again (a lost reply counts one delivery too many).
      if (!lp.dropped) lp.redeliver = batch.concat(lp.redeliver);
      throw error;
    }
    if (lp.dropped) return;
    if (reply === null) {
      this.fenced(lp);
      return;
    }
    for (const [id, fields] of reply as Array<[Buffer, Buffer[]]>) {
      const entry = decodeEntry(lp.topic, lp.partition, id, fields);
      this.push(lp, entry, counts.get(entry.id) ?? 1);
    }
  }

  private async replayPage(lp: Owned, free: number): Promise<void> {
    const count = Math.min(Math.max(free, 16), readCountMax);
    const reply = await this.ctx.commands.eval(
      `replay pending records of partition ${lp.partition} of topic '${lp.topic}'`,
      pendingScript,
      0,
      [lp.ownerKey, lp.expected, lp.stream, this.group, this.id, lp.replay!, count],
      false,
    );
    if (lp.dropped) return;
    if (reply === null) {
      this.fenced(lp);
      return;
    }
    const flat = reply as Array<string | number>;
    // Entries this member already holds (handed out, read ahead, acked but not yet sent, due again) are not replayed.
    const known = new Set<string>(lp.inflight.keys());
    for (let i = lp.head; i < lp.buffer.length; i++) known.add(lp.buffer[i]!.entry.id);
    for (const id of lp.acks) known.add(id);
    for (const item of lp.redeliver) known.add(item.id);
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const id = String(flat[i]);
      const next = Number(flat[i + 1]) + 1;
      lp.replay = `(${id}`;
      const delayed = lp.delayed.get(id);
      if (delayed !== undefined) delayed.count ??= next;
      else if (!known.has(id)) lp.redeliver.push({ id, count: next });
    }
    if (flat.length / 2 < count) lp.replay = undefined;
  }

  /**
   * Reads new records of the owned partitions with one pipeline: `XREADGROUP >` over their streams, then per stream
   * the owner key and the group's pending summary. The owner key read after the read proves this member owned the
   * partition while it read (epochs never come back), so a member that lost a partition hands out nothing it read
   * late. Entries another consumer holds (a stale member that read after losing the partition, a rare race) are
   * taken back and replayed in order, with what this read brought, before anything newer is handed out.
   */
  private async readNew(active: Owned[], free: number): Promise<boolean> {
    const { commands } = this.ctx;
    const countByBytes = Math.max(1, Math.floor(readBytesMax / this.avgEntryBytes));
    const perStream = Math.max(1, Math.min(Math.floor(free / active.length), countByBytes, readCountMax));
    const what = `read records of group '${this.group}'`;
    const results = (await commands.command(what, (client) => {
      const pipeline = client.pipeline();
      pipeline.xreadgroupBuffer(
        'GROUP',
        this.group,
        this.id,
        'COUNT',
        perStream,
        'STREAMS',
        ...active.map((lp) => lp.stream),
        ...active.map(() => '>'),
      );
      for (const lp of active) pipeline.get(lp.ownerKey).xpending(lp.stream, this.group);
      return pipeline.exec();
    })) as Array<[Error | null, unknown]>;
    const [readError, readReply] = results[0]!;
    if (readError !== null) {
      if (isReplyError(readError)) {
        // The group is gone from a stream (reset by hand, or data lost with a restart): claim again (recreates it).
        for (const lp of active) this.fenced(lp);
        return true;
      }
      throw commands.toError(what, readError);
    }
    const read = new Map<string, Array<[Buffer, Buffer[]]>>();
    for (const [stream, entries] of (readReply as Array<[Buffer, Array<[Buffer, Buffer[]]>]> | null) ?? []) {
      read.set(stream.toString('utf8'), entries);
    }
    let bytes = 0;
    let records = 0;
    active.forEach((lp, index) => {
      const [ownerError, owner] = results[1 + index * 2]!;
      const [, summary] = results[2 + index * 2]!;
      const entries = read.get(lp.stream) ?? [];
      if (entries.length > 0) lp.lastId = entries[entries.length - 1]![0].toString('latin1');
      if (ownerError !== null || owner !== lp.expected) {
        this.fenced(lp); // what it read stays pending for the owner, who takes it back
        return;
      }
      if (hasForeignPending(summary, this.id)) {
        this.takeBack(lp);
        return;
      }
      for (const [id, fields] of entries) {
        const entry = decodeEntry(lp.topic, lp.partition, id, fields);
        bytes += entry.value.byteLength + 64;
        records++;
        this.push(lp, entry, 1);
      }
    });
    if (records > 0) {
      this.avgEntryBytes = Math.max(64, Math.round(this.avgEntryBytes * 0.5 + (bytes / records) * 0.5));
      return true;
    }
    if (read.size > 0) return true;
    await this.refreshPositions(active);
    return false;
  }

  /**
   * Takes back entries pending at other consumers of the group in this partition (fenced), then replays this
   * member's pending list in id order, skipping what it holds already.
   */
  private takeBack(lp: Owned): void {
    this.buffered -= lp.buffer.length - lp.head;
    lp.buffer = [];
    lp.head = 0;
    this.ready.delete(lp);
    lp.replay = '-';
    this.ctx.commands
      .eval(
        `take back records of partition ${lp.partition} of topic '${lp.topic}'`,
        takeBackScript,
        0,
        [lp.ownerKey, lp.expected, lp.stream, this.group, this.id],
        false,
      )
      .then((owned) => {
        if (owned === 0) this.fenced(lp);
      })
      .catch(noop); // the replay's fenced reads find out
  }

  /** After a read that found nothing: the group's position in each stream, where a blocking wait starts. */
  private async refreshPositions(active: Owned[]): Promise<void> {
    const results = (await this.ctx.commands.command(`read records of group '${this.group}'`, (client) => {
      const pipeline = client.pipeline();
      for (const lp of active) pipeline.xinfo('GROUPS', lp.stream);
      return pipeline.exec();
    })) as Array<[Error | null, unknown]>;
    active.forEach((lp, index) => {
      const [error, groups] = results[index]!;
      if (error !== null || lp.dropped || !Array.isArray(groups)) return;
      for (const group of groups as unknown[][]) {
        const fields = new Map<unknown, unknown>();
        for (let i = 0; i + 1 < group.length; i += 2) fields.set(group[i], group[i + 1]);
        if (fields.get('name') === this.group) lp.lastId = String(fields.get('last-delivered-id'));
      }
    });
  }

  private push(lp: Owned, entry: Entry, count: number): void {
    lp.buffer.push({ entry, count });
    this.buffered++;
    if (!lp.handingOver) this.ready.add(lp);
    this.wake();
  }

  /** Waits (XREAD BLOCK on the member's own connection) until an owned partition has an entry it has not read. */
  private async block(): Promise<void> {
    const blocking = this.blocking!;
    const streams: string[] = [];
    const ids: string[] = [];
    for (const lp of this.owned.values()) {
      if (lp.handingOver || lp.dropped || lp.replay !== undefined || lp.redeliver.length > 0) continue;
      streams.push(lp.stream);
      ids.push(lp.lastId);
    }
    if (streams.length === 0 || !blocking.isUsable) {
      await this.waitLoop(streams.length === 0 ? blockMs : 50);
      return;
    }
    this.inBlock = true;
    try {
      if (this.wakeRequested) return;
      await blocking.client.callBuffer('XREAD', [
        'BLOCK',
        blockMs,
        'COUNT',
        1,
        'STREAMS',
        ...streams,
        ...ids,
      ]);
    } catch {
      // Unblocked, or the connection dropped: the loop looks again (and waits for the connection if it must).
    } finally {
      this.inBlock = false;
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Delivery and settlement

  /** The iterator's `next()`: the next delivery, waiting for one; done once the member closed. */
  async next(): Promise<IteratorResult<Delivery, undefined>> {
    for (;;) {
      if (this.isClosed) return { done: true, value: undefined };
      if (this.unacked < this.prefetch && performance.now() < this.leaseValidUntil) {
        const delivery = this.take();
        if (delivery !== undefined) return { done: false, value: delivery };
      }
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  private take(): Delivery | undefined {
    for (const lp of this.ready) {
      this.ready.delete(lp);
      if (lp.dropped || lp.handingOver || lp.head >= lp.buffer.length) continue;
      const buffered = lp.buffer[lp.head++]!;
      if (lp.head === lp.buffer.length) {
        lp.buffer = [];
        lp.head = 0;
      } else {
        this.ready.add(lp); // to the back of the line: fair across partitions
      }
      this.buffered--;
      this.kickLoop();
      return this.deliver(lp, buffered);
    }
    return undefined;
  }

  private deliver(lp: Owned, buffered: Buffered): Delivery {
    const delivery = new RedisDelivery(this, lp, buffered.entry, buffered.count);
    lp.inflight.set(buffered.entry.id, delivery);
    this.unacked++;
    return delivery;
  }

  /** Acks (`delayMs` undefined) or nacks a delivery. No-op if settled already; ignored if the partition was lost. */
  settle(state: InFlight, delayMs: number | undefined): void {
    if (state.settled) return;
    state.settled = true;
    this.unacked--;
    const lp = state.lp;
    if (!lp.dropped && lp.inflight.get(state.id) === state) {
      lp.inflight.delete(state.id);
      if (delayMs === undefined) {
        lp.acks.push(state.id);
        this.ackDirty.add(lp);
        this.scheduleAckFlush();
      } else if (delayMs <= 0) {
        lp.redeliver.push({ id: state.id, count: state.count + 1 });
        this.wakeLoop();
      } else {
        this.delayNack(lp, state, delayMs);
      }
      if (lp.handingOver && lp.inflight.size === 0) this.release(lp);
    }
    this.wake();
    this.kickLoop();
  }

  private delayNack(lp: Owned, state: InFlight, delayMs: number): void {
    const dueAtMs = this.ctx.clock.now() + delayMs;
    const entry = { count: (state.count + 1) as number | undefined, cancel: noop };
    lp.delayed.set(state.id, entry);
    entry.cancel = this.ctx.delays.schedule(dueAtMs, () => this.delayDone(lp, state.id, entry));
    // Kept for the next owner, should the partition move before the delay has passed.
    this.ctx.commands
      .eval(
        `record a nack delay in topic '${lp.topic}'`,
        nackDelayScript,
        0,
        [lp.ownerKey, lp.expected, lp.delayKey, state.id, String(dueAtMs)],
        false,
      )
      .catch(noop);
  }

  private delayDone(lp: Owned, id: string, entry: { count: number | undefined }): void {
    if (lp.delayed.get(id) !== entry) return;
    lp.delayed.delete(id);
    if (lp.dropped) return;
    // A delay inherited at a claim whose entry the replay has not reached yet: the replay delivers it.
    if (entry.count !== undefined) lp.redeliver.push({ id, count: entry.count });
    this.wakeLoop();
  }

  private scheduleAckFlush(): void {
    if (this.ackScheduled) return;
    this.ackScheduled = true;
    setImmediate(() => {
      this.ackScheduled = false;
      this.flushAcks();
    });
  }

  /** Sends every queued ack now (one fenced script call); a partition whose acks were fenced is dropped. */
  flushAcks(): void {
    if (this.ackDirty.size === 0) return;
    const args: string[] = [this.group];
    const sent: Array<{ lp: Owned; ids: string[] }> = [];
    for (const lp of this.ackDirty) {
      const ids = lp.acks;
      lp.acks = [];
      sent.push({ lp, ids });
      for (let i = 0; i < ids.length; i += acksPerCall) {
        const chunk = ids.slice(i, i + acksPerCall);
        args.push(lp.ownerKey, lp.expected, lp.stream, lp.delayKey, String(chunk.length), ...chunk);
      }
    }
    this.ackDirty.clear();
    this.ctx.commands
      .eval(`acknowledge deliveries of group '${this.group}'`, ackScript, 0, args, false)
      .then((fenced) => {
        const streams = new Set((fenced as string[]).map(String));
        for (const { lp } of sent) if (streams.has(lp.stream)) this.fenced(lp);
      })
      .catch(() => {
        // Not written (or not known to be): send again. Acks are idempotent; a lost partition drops them.
        if (this.isClosed) return;
        for (const { lp, ids } of sent) {
          if (lp.dropped) continue;
          lp.acks = ids.concat(lp.acks);
          this.ackDirty.add(lp);
        }
        setTimeout(() => this.flushAcks(), 100).unref();
      });
  }

  private wake(): void {
    if (this.waiters.length === 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Leaving

  /**
   * Leaves the group: sends the acks queued so far, releases every partition (what is unacknowledged stays pending
   * for the next owner) and removes the member row. Idempotent.
   */
  close(error: Error | undefined): Promise<void> {
    if (this.leaving !== undefined) return this.leaving;
    this.isClosed = true;
    this.detachSignal();
    this.wake();
    this.wakeLoop();
    this.leaving = (async () => {
      this.flushAcks();
      const parts = [...this.owned.values()].map((lp) => this.releasePart(lp));
      for (const lp of [...this.owned.values()]) this.drop(lp);
      this.targets = [];
      if (this.joinSent) {
        const payload = JSON.stringify({
          prefix: this.ctx.keys.prefix,
          group: this.group,
          eg: this.eg,
          me: this.id,
          leave: true,
          parts,
        });
        try {
          await this.ctx.commands.eval(`leave group '${this.group}'`, releaseScript, 0, [payload], false);
        } catch {
          // Unreachable or closed: the lease runs out and the other members take over then.
        }
      }
      await this.blocking?.close(true);
      this.ctx.memberClosed(this);
      this.resolveClosed(error);
    })();
    return this.leaving;
  }
}

/** Whether a group's pending summary (`XPENDING key group`) lists entries held by a consumer other than `me`. */
function hasForeignPending(summary: unknown, me: string): boolean {
  if (!Array.isArray(summary) || !Array.isArray(summary[3])) return false;
  return (summary[3] as unknown[][]).some((consumer) => consumer[0] !== me && Number(consumer[1]) > 0);
}
