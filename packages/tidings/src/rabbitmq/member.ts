/**
 * A subscription: one member of a consumer group. It runs sessions on the transport's connection; a session joins
 * the group (announces itself, learns the others, waits on the offset queues of its assigned partitions), hands out
 * records of the partitions it owns, and ends when the connection is lost. Then everything it owned is fenced (the
 * broker has already given those partitions to the next member in line) and a new session starts once the broker is
 * reachable again, resuming from the committed positions.
 */
import type { Channel } from 'amqplib';
import { randomUUID } from 'node:crypto';
import { describeError } from '../core/errors.js';
import type { Delivery, Subscription } from '../core/transport.js';
import { cancelAndClose, closeQuietly, withTimeout, type Connector } from './connection.js';
import { assignedPartitions, MembershipView, type Announcement } from './membership.js';
import type { Names } from './names.js';
import type { ResolvedOptions } from './options.js';
import { PartitionOwner, type OwnerHost } from './partition-owner.js';
import { positionOf, type Position } from './positions.js';
import type { Registry } from './registry.js';
import {
  declareStream,
  isMarker,
  markerHeader,
  markerText,
  publishConfirmed,
  settleOwnStream,
} from './streams.js';
import type { CheckedSubscribeOptions } from './validation.js';
import { iterateOnce } from '../core/subscription-iterator.js';

export interface MemberContext {
  connector: Connector;
  names: Names;
  registry: Registry;
  options: ResolvedOptions;
  /** Called once the member has closed, so that the transport forgets it. */
  forget(member: RabbitMqMember): void;
}

/** Group streams keep announcements this long; `describeGroup` reads only the last lease's worth. */
const groupStreamMaxAge = '3600s';

export class RabbitMqMember implements Subscription {
  readonly group: string;
  readonly memberId: string;
  readonly closed: Promise<Error | undefined>;
  private resolveClosed!: (value: Error | undefined) => void;
  private readonly topics: string[];
  private readonly prefetch: number;
  private readonly startPosition: Position;
  private readonly joinedAt = Date.now();
  private readonly view: MembershipView;
  private readonly owners = new Map<string, PartitionOwner>();
  private assigned = new Map<string, { topic: string; partition: number }>();
  private rotation = 0;
  private unacked = 0;
  private waiters: Array<() => void> = [];
  private iterated = false;
  private closing = false;
  private closePromise: Promise<void> | undefined;
  private session: Session | undefined;
  private detachSignal: () => void = () => undefined;
  private readonly loop: Promise<void>;

  constructor(
    private readonly context: MemberContext,
    options: CheckedSubscribeOptions,
  ) {
    this.group = options.group;
    this.topics = options.topics;
    this.prefetch = options.prefetch;
    this.memberId = `${options.group}/${randomUUID()}`;
    this.startPosition = positionOf(options.startFrom, this.joinedAt);
    this.view = new MembershipView(context.options.memberLeaseMs);
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    const signal = options.signal;
    if (signal?.aborted) {
      this.closing = true;
      this.closePromise = Promise.resolve();
      this.resolveClosed(undefined);
      this.loop = Promise.resolve();
      return;
    }
    if (signal !== undefined) {
      const onAbort = () => void this.close();
      signal.addEventListener('abort', onAbort, { once: true });
      this.detachSignal = () => signal.removeEventListener('abort', onAbort);
    }
    this.loop = this.run();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Sessions

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.closing) {
      const session = new Session(this);
      this.session = session;
      try {
        await session.run();
        failures = 0;
      } catch {
        failures++;
      } finally {
        this.endSession(session);
      }
      if (this.closing) break;
      await sleep(Math.min(100 * 2 ** Math.min(failures, 5), 2_000));
    }
  }

  private endSession(session: Session): void {
    if (this.session === session) this.session = undefined;
    session.stop();
    for (const owner of this.owners.values()) owner.drop();
    this.owners.clear();
    this.wakeAll();
  }

  /** Recomputes this member's partitions from the view and joins or leaves offset queues to match. */
  reconcile(session: Session): void {
    if (this.closing || session !== this.session || !session.ready) return;
    const live = this.view.live();
    if (!live.some((state) => state.member === this.memberId)) live.push(this.selfState());
    live.sort((a, b) => a.joinedAt - b.joinedAt || (a.member < b.member ? -1 : a.member > b.member ? 1 : 0));
    const desired = new Map<string, { topic: string; partition: number }>();
    for (const topic of this.topics) {
      const entry = this.context.registry.cachedTopic(topic);
      if (entry === undefined) continue;
      for (const partition of assignedPartitions(live, this.memberId, topic, entry.partitions)) {
        desired.set(`${topic}\u0000${partition}`, { topic, partition });
      }
    }
    this.assigned = desired;
    for (const [key, owner] of this.owners) {
      if (desired.has(key) || owner.state === 'releasing' || owner.state === 'done') continue;
      owner
        .release(true)
        .catch(() => undefined)
        .finally(() => {
          if (this.owners.get(key) === owner) this.owners.delete(key);
          session.announceSoon();
          this.reconcile(session);
        });
    }
    for (const [key, { topic, partition }] of desired) {
      if (this.owners.has(key)) continue;
      const owner = new PartitionOwner(session.host, topic, partition);
      this.owners.set(key, owner);
      owner
        .join()
        .catch((error: unknown) =>
          session.fail(error instanceof Error ? error : new Error(describeError(error))),
        );
    }
    session.announceSoon();
  }

  /** Whether the member is open (not closing or closed). */
  get live(): boolean {
    return !this.closing;
  }

  selfState() {
    return {
      member: this.memberId,
      topics: this.topics,
      joinedAt: this.joinedAt,
      lastSeen: Date.now(),
      owned: [],
      assigned: [],
    };
  }

  announcement(): Announcement {
    const owned: NonNullable<Announcement['owned']> = [];
    for (const owner of this.owners.values()) {
      if (owner.state !== 'active') continue;
      const committed = owner.committedOffset();
      owned.push(
        committed === undefined
          ? {
              topic: owner.topic,
              partition: owner.partition,
              committed: null,
              start: owner.committedPosition(),
            }
          : { topic: owner.topic, partition: owner.partition, committed },
      );
    }
    return {
      type: 'hb',
      member: this.memberId,
      topics: this.topics,
      joinedAt: this.joinedAt,
      at: Date.now(),
      owned,
      assigned: [...this.assigned.values()],
    };
  }

  applyAnnouncement(announcement: Announcement): boolean {
    return this.view.apply(announcement);
  }

  get ctx(): MemberContext {
    return this.context;
  }

  get start(): Position {
    return this.startPosition;
  }

  get topicList(): readonly string[] {
    return this.topics;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Deliveries

  /** The deliveries, for one `for await` loop (see {@link iterateOnce}). */
  [Symbol.asyncIterator](): AsyncIterator<Delivery, undefined> {
    const iterator = iterateOnce(this, this.iterated, () => this.next());
    this.iterated = true;
    return iterator;
  }

  private async next(): Promise<IteratorResult<Delivery, undefined>> {
    for (;;) {
      if (this.closing) return { done: true, value: undefined };
      if (this.unacked < this.prefetch) {
        const delivery = this.take();
        if (delivery !== undefined) return { done: false, value: delivery };
      }
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  private take(): Delivery | undefined {
    const owners = [...this.owners.values()];
    for (let i = 0; i < owners.length; i++) {
      const owner = owners[(this.rotation + i) % owners.length]!;
      const delivery = owner.take(this.memberId);
      if (delivery === undefined) continue;
      this.rotation = (this.rotation + i + 1) % owners.length;
      this.unacked++;
      return delivery;
    }
    return undefined;
  }

  wakeAll(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter();
  }

  settledOne(): void {
    this.unacked = Math.max(0, this.unacked - 1);
    this.wakeAll();
  }

  assignments(): ReadonlyArray<{ topic: string; partition: number }> {
    return [...this.assigned.values()].sort((a, b) =>
      a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition,
    );
  }

  close(): Promise<void> {
    this.closePromise ??= this.shutdown();
    return this.closePromise;
  }

  private async shutdown(): Promise<void> {
    this.closing = true;
    this.detachSignal();
    this.wakeAll();
    const session = this.session;
    try {
      if (session !== undefined) await withTimeout(session.leave([...this.owners.values()]), 15_000);
    } finally {
      if (session !== undefined) this.endSession(session);
      await withTimeout(
        this.loop.catch(() => undefined),
        10_000,
      );
      this.context.forget(this);
      this.resolveClosed(undefined);
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** One connection's worth of membership: channels, consumers and timers, all dropped when it ends. */
class Session {
  ready = false;
  readonly host: OwnerHost;
  private control: Channel | undefined;
  private groupChannel: Channel | undefined;
  private groupTag: string | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private announceTimer: NodeJS.Timeout | undefined;
  private reconcileTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private end!: (error: Error | undefined) => void;
  private readonly ended: Promise<Error | undefined>;
  private unsubscribeDown: () => void = () => undefined;

  constructor(private readonly member: RabbitMqMember) {
    this.ended = new Promise((resolve) => {
      this.end = resolve;
    });
    const ctx = member.ctx;
    this.host = {
      group: member.group,
      connector: ctx.connector,
      names: ctx.names,
      options: ctx.options,
      controlChannel: () => this.control!,
      startPosition: member.start,
      wake: () => member.wakeAll(),
      released: () => member.settledOne(),
      progressed: () => this.announceSoon(),
      failed: (error) => this.fail(error),
    };
  }

  fail(error: Error): void {
    if (!this.stopped) this.end(error);
  }

  async run(): Promise<void> {
    const { connector, registry, names, options } = this.member.ctx;
    await connector.connection();
    const epoch = connector.epoch;
    this.unsubscribeDown = connector.onDown(() => this.end(new Error('connection lost')));
    if (connector.epoch !== epoch) throw new Error('connection lost');
    const groupStream = names.groupStream(this.member.group);
    // Independent steps, at once: the member's channels, the topics, the group's registration, the group stream.
    const channels = Promise.all([connector.channel(), connector.channel()]).then(([control, group]) => {
      this.control = control;
      this.groupChannel = group;
      control.on('close', () => this.fail(new Error('control channel closed')));
      group.on('close', () => this.fail(new Error('group channel closed')));
      return declareStream(control, groupStream, {
        'x-max-age': groupStreamMaxAge,
        'x-stream-max-segment-size-bytes': 1024 * 1024,
      }).then(() => settleOwnStream(connector, groupStream));
    });
    await Promise.all([
      channels,
      ...this.member.topicList.map((topic) =>
        registry.ensureTopic(topic, { partitions: options.defaultPartitions }),
      ),
      registry.noteGroup(this.member.group, this.member.topicList),
    ]);
    const groupChannel = this.groupChannel!;
    await groupChannel.prefetch(1_000, false);
    const marker = randomUUID();
    let caughtUp!: () => void;
    const caughtUpPromise = new Promise<void>((resolve) => {
      caughtUp = resolve;
    });
    const { consumerTag } = await groupChannel.consume(
      groupStream,
      (message) => {
        if (message === null) return this.fail(new Error('group stream deleted'));
        groupChannel.ack(message);
        if (isMarker(message)) {
          const seen: unknown = (message.properties.headers as Record<string, unknown> | undefined)?.[
            markerHeader
          ];
          if (markerText(seen) === marker) caughtUp();
          return;
        }
        let announcement: Announcement;
        try {
          announcement = JSON.parse(message.content.toString('utf8')) as Announcement;
        } catch {
          return;
        }
        if (this.member.applyAnnouncement(announcement)) this.reconcileSoon();
      },
      {
        noAck: false,
        arguments: {
          'x-stream-offset': {
            '!': 'timestamp',
            value: Math.floor((Date.now() - options.memberLeaseMs) / 1000) - 1,
          },
        },
      },
    );
    this.groupTag = consumerTag;
    await this.announce();
    const confirm = await connector.confirmChannel();
    await publishConfirmed(confirm, '', groupStream, Buffer.from('{}'), {
      headers: { [markerHeader]: marker },
    });
    await Promise.race([caughtUpPromise, sleep(5_000), this.ended]);
    this.ready = true;
    this.member.reconcile(this);
    this.heartbeat = setInterval(() => {
      this.announce().catch(() => undefined);
      this.member.reconcile(this);
    }, options.heartbeatMs);
    const error = await this.ended;
    if (error !== undefined && !this.stopped) throw error;
  }

  reconcileSoon(): void {
    if (this.reconcileTimer !== undefined || !this.ready) return;
    this.reconcileTimer = setTimeout(() => {
      this.reconcileTimer = undefined;
      this.member.reconcile(this);
    }, 0);
  }

  announceSoon(): void {
    if (this.announceTimer !== undefined || this.stopped) return;
    this.announceTimer = setTimeout(() => {
      this.announceTimer = undefined;
      this.announce().catch(() => undefined);
    }, 20);
  }

  private async announce(record: Announcement = this.member.announcement()): Promise<void> {
    if (this.stopped && record.type !== 'leave') return;
    const { connector, names } = this.member.ctx;
    const channel = await connector.confirmChannel();
    await publishConfirmed(
      channel,
      '',
      names.groupStream(this.member.group),
      Buffer.from(JSON.stringify(record)),
      {
        contentType: 'application/json',
      },
    );
  }

  /** Gives every partition up (committing what was acknowledged) and tells the group this member left. */
  async leave(owners: PartitionOwner[]): Promise<void> {
    await Promise.all(owners.map((owner) => owner.release(false).catch(() => undefined)));
    this.stopTimers();
    await this.announce({ type: 'leave', member: this.member.memberId, at: Date.now() }).catch(
      () => undefined,
    );
    this.stop();
  }

  private stopTimers(): void {
    clearInterval(this.heartbeat);
    clearTimeout(this.announceTimer);
    clearTimeout(this.reconcileTimer);
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.stopTimers();
    this.unsubscribeDown();
    this.end(undefined);
    void cancelAndClose(this.groupChannel, this.groupTag);
    void closeQuietly(this.control);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
