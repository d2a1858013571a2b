/**
 * The Redis Streams transport: partitioned topics as one stream per partition, consumer groups as Redis consumer
 * groups with partition ownership by leases and fencing epochs, dense offsets kept beside the streams, retention,
 * replay by offset and time. Semantics follow the in-memory reference transport wherever Redis allows.
 */
import type { Redis } from 'ioredis';
import type { Clock } from '../core/clock.js';
import { ErrorCode, TidingsError, isTidingsError } from '../core/errors.js';
import { partitionForKey } from '../core/partitioner.js';
import type {
  OutgoingRecord,
  PublishAck,
  SubscribeOptions,
  Subscription,
  TopicConfig,
  Transport,
  TransportAdmin,
  TransportFeatures,
} from '../core/transport.js';
import { DelayQueue } from '../memory/delay-queue.js';
import { createAdmin, parseTopicConfig } from './admin.js';
import { prepareRecord, type PreparedRecord } from './codec.js';
import { Connection, isReplyError } from './connection.js';
import { Keys } from './keys.js';
import { Member, type MemberContext } from './member.js';
import { redactUrl, validateOptions, type RedisTransportOptions, type ResolvedOptions } from './options.js';
import { allScripts, ensureTopicScript, offsetsScript, publishScript } from './scripts.js';
import { RedisSubscriptionImpl, type RedisSubscription } from './subscription.js';
import { encodeName } from './keys.js';
import { checkName, checkSubscribeOptions, describeValue, limits } from './validation.js';

/** The transport returned by {@link createRedisTransport}. */
export interface RedisTransport extends Transport {
  readonly name: 'redis';
  /** The server's URL, with any password replaced by `***`. */
  readonly url: string;
  /**
   * Joins `options.group` as a new member. Returns at once; the member joins in the background, with its first
   * command on the transport's connection, so `'latest'` includes every record published through this transport
   * after `subscribe` returned. `assignments()` is empty until the join is done. While the server is unreachable the
   * member keeps trying; its subscription stays open. Throws `INVALID_CONFIG` for bad options and `CLOSED` once the
   * transport is closed; with an already aborted `signal` it returns a subscription that is closed and never joined.
   */
  subscribe(options: SubscribeOptions): RedisSubscription;
}

/**
 * Creates a transport on a Redis server (7.0 or later; standalone or behind Sentinel, not Redis Cluster). Connects
 * at once, in the background; nothing waits for the connection until an operation needs it.
 *
 * Contract, beyond the interface docs (and the same as the in-memory transport where not said otherwise):
 * - `publish` validates every record first (`VALIDATION_FAILED`, `EVENT_TOO_LARGE`: nothing written), then appends
 *   the call's records with one Lua script: per partition, each record gets the partition's next offset and an entry
 *   id `<ms>-<seq>` whose `ms` is the running maximum of the records' timestamps (so ids order by offset and time).
 *   One call is atomic on the server. It resolves once Redis replied to that script: the records are in the
 *   primary's memory and, with `appendonly yes`, in its AOF (with `appendfsync always`, fsync'd before the reply);
 *   with `waitReplicas`, also on that many replicas. A lost connection rejects with `TRANSPORT_UNAVAILABLE` (the
 *   records may or may not have been written).
 * - Consumer groups are Redis consumer groups (one per group and partition stream), with partition ownership by
 *   leases and fencing epochs among the members (see `member.ts`). Within a group, records of one key are delivered
 *   in offset order across joins, graceful leaves and takeovers; the entries pending at a member that leaves,
 *   crashes or loses its lease are redelivered (in order, before new ones) to the next owner.
 * - `ack()` is `XACK` (fenced, batched per event-loop turn): the group's committed offset, as `describeGroup`
 *   reports it, is its low-water mark (oldest pending entry). Acked entries above an unacked one are not delivered
 *   again after a crash, unlike a Kafka-style offset commit.
 * - `deliveryCount` is Redis's delivery counter: it survives handovers and crashes. A record read ahead but never
 *   handed out by a member that crashed counts once more than it was handed out.
 * - `nack({ delayMs })` is emulated: the record stays pending and is redelivered by this member after the delay; the
 *   due time is stored in Redis so a new owner honours it. `features.nativeDelay` is false.
 * - Retention (`retentionMs` by entry id time with `XTRIM MINID`, `retentionBytes` by walking the oldest entries)
 *   runs on every publish to a partition, before admin reads of it, and every `retentionIntervalMs`.
 *
 * Throws `INVALID_CONFIG` for a bad option.
 */
export function createRedisTransport(options: RedisTransportOptions = {}): RedisTransport {
  return new RedisTransportImpl(validateOptions(options));
}

class RedisTransportImpl implements RedisTransport {
  readonly name = 'redis';
  readonly url: string;
  readonly features: TransportFeatures;
  readonly admin: TransportAdmin;

  private readonly options: ResolvedOptions;
  private readonly clock: Clock;
  private readonly keys: Keys;
  private readonly commands: Connection;
  private readonly delays: DelayQueue;
  private readonly topicConfigs = new Map<string, TopicConfig>();
  private readonly members = new Set<Member>();
  private readonly memberContext: MemberContext;
  private notifications: Connection | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private readonly retentionTimer: NodeJS.Timeout;
  private retentionRunning = false;
  /** From `INFO persistence` at connect time; undefined when the server would not say. */
  private aofEnabled: boolean | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(options: ResolvedOptions) {
    this.options = options;
    this.clock = options.clock;
    this.url = redactUrl(options.url);
    this.keys = new Keys(options.keyPrefix);
    this.delays = new DelayQueue(options.clock);
    this.commands = this.connection('commands', allScripts, async (client) => {
      this.aofEnabled = await readAofEnabled(client);
    });
    this.features = Object.freeze({
      persistent: options.persistent,
      consumerGroups: true,
      perKeyOrder: true,
      replayByOffset: true,
      replayByTime: true,
      nativeDelay: false,
      maxRecordBytes: options.maxRecordBytes,
    });
    this.admin = createAdmin({
      commands: this.commands,
      keys: this.keys,
      clock: this.clock,
      checkOpen: (what) => {
        this.checkOpen(what);
        for (const member of this.members) member.flushAcks();
      },
      topicConfig: (topic) => this.topicConfig(topic),
      rememberTopic: (topic, config) => this.topicConfigs.set(topic, config),
    });
    this.memberContext = {
      options,
      keys: this.keys,
      commands: this.commands,
      delays: this.delays,
      clock: this.clock,
      blockingConnection: (onConnect) =>
        this.connection('subscription reads', [], async (client) => {
          onConnect(Number(await client.client('ID')));
        }),
      memberClosed: (member) => this.memberClosed(member),
    };
    this.retentionTimer = setInterval(() => void this.runRetention(), options.retentionIntervalMs);
    this.retentionTimer.unref();
  }

  private connection(
    role: string,
    scripts: typeof allScripts,
    onConnect?: (client: Redis) => Promise<void>,
    onMessage?: (channel: string, message: string) => void,
  ): Connection {
    return new Connection({
      url: this.options.url,
      shownUrl: this.url,
      redis: this.options.redis,
      connectTimeoutMs: this.options.connectTimeoutMs,
      reconnectDelayMsMax: this.options.reconnectDelayMsMax,
      role,
      scripts,
      ...(onConnect === undefined ? {} : { onConnect }),
      ...(onMessage === undefined ? {} : { onMessage }),
    });
  }

  private checkOpen(what: string): void {
    if (this.closed) {
      throw new TidingsError(
        ErrorCode.CLOSED,
        `Cannot ${what}: the Redis transport is closed. Create a new transport.`,
      );
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Topics

  private async topicConfig(topic: string): Promise<TopicConfig | undefined> {
    const cached = this.topicConfigs.get(topic);
    if (cached !== undefined) return cached;
    const json = (await this.commands.command(`look up topic '${topic}'`, (client) =>
      client.hget(this.keys.topics, topic),
    )) as string | null;
    if (json === null) return undefined;
    const config = parseTopicConfig(json);
    this.topicConfigs.set(topic, config);
    return config;
  }

  /** The topic's config, creating the topic with `defaultPartitions` if it does not exist. */
  private async ensureTopic(topic: string): Promise<TopicConfig> {
    const cached = this.topicConfigs.get(topic);
    if (cached !== undefined) return cached;
    const json = await this.commands.eval(
      `create topic '${topic}'`,
      ensureTopicScript,
      0,
      [this.keys.topics, topic, JSON.stringify({ partitions: this.options.defaultPartitions })],
      false,
    );
    const config = parseTopicConfig(String(json));
    this.topicConfigs.set(topic, config);
    return config;
  }

  private async runRetention(): Promise<void> {
    if (this.retentionRunning || this.closed || !this.commands.isUsable) return;
    this.retentionRunning = true;
    try {
      for (const [topic, config] of this.topicConfigs) {
        if (config.retentionMs === undefined && config.retentionBytes === undefined) continue;
        await this.commands.eval(
          `apply retention to topic '${topic}'`,
          offsetsScript,
          0,
          [this.keys.prefix, topic, encodeName(topic), this.clock.now()],
          false,
        );
      }
    } catch {
      // Tried again at the next interval.
    } finally {
      this.retentionRunning = false;
    }
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
      this.checkOpen(`publish to topic '${String(topic)}'`);
      if (signal?.aborted) throw abortedError(topic, signal);
      checkName(topic, 'topic', limits.topicNameLength);
      if (!Array.isArray(records)) {
        throw new TidingsError(
          ErrorCode.VALIDATION_FAILED,
          `publish to topic '${topic}' needs an array of records, got ${describeValue(records)}; nothing was written.`,
          { topic },
        );
      }
      const now = this.clock.now();
      const max = this.options.maxRecordBytes;
      prepared = new Array<PreparedRecord>(records.length);
      for (let index = 0; index < records.length; index++) {
        prepared[index] = prepareRecord(topic, records[index] as OutgoingRecord, index, now, max);
      }
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    if (prepared.length === 0) return Promise.resolve([]);
    return this.append(topic, prepared, signal);
  }

  private async append(
    topic: string,
    prepared: PreparedRecord[],
    signal: AbortSignal | undefined,
  ): Promise<PublishAck[]> {
    const config = this.topicConfigs.get(topic) ?? (await this.ensureTopic(topic));
    if (signal?.aborted) throw abortedError(topic, signal);
    if (this.options.persistent && this.aofEnabled === false) {
      throw new TidingsError(
        ErrorCode.INVALID_CONFIG,
        `Refusing to publish to topic '${topic}': the transport was created with persistent: true but Redis at ` +
          `${this.url} runs with appendonly no, so it would lose acknowledged records when it restarts; nothing was ` +
          `written. Turn on appendonly (with appendfsync always), or create the transport with persistent: false.`,
        { topic, url: this.url },
      );
    }
    const partitionCount = config.partitions;
    const partitions = new Array<number>(prepared.length);
    const byPartition = new Map<number, number[]>();
    for (let i = 0; i < prepared.length; i++) {
      const partition = partitionForKey(prepared[i]!.key, partitionCount);
      partitions[i] = partition;
      const indices = byPartition.get(partition);
      if (indices === undefined) byPartition.set(partition, [i]);
      else indices.push(i);
    }
    const keys: string[] = [this.keys.next(topic)];
    const args: Array<string | number | Buffer> = [
      this.clock.now(),
      config.retentionMs ?? '',
      config.retentionBytes ?? '',
    ];
    const order: number[] = [];
    for (const [partition, indices] of byPartition) {
      keys.push(this.keys.stream(topic, partition), this.keys.index(topic, partition));
      order.push(partition);
      args.push(partition, indices.length);
      for (const i of indices) {
        const record = prepared[i]!;
        args.push(record.timestamp, record.key, record.size, record.headers.length / 2);
        for (const item of record.headers) args.push(item);
        args.push(record.value);
      }
    }
    const what = `publish ${prepared.length} record${prepared.length === 1 ? '' : 's'} to topic '${topic}'`;
    let firsts: number[];
    try {
      firsts = (await this.commands.eval(
        what,
        publishScript,
        keys.length,
        [...keys, ...args],
        false,
      )) as number[];
    } catch (error) {
      throw this.publishError(topic, prepared.length, error);
    }
    const next = new Map<number, number>();
    order.forEach((partition, index) => next.set(partition, Number(firsts[index])));
    const acks = partitions.map((partition) => {
      const offset = next.get(partition)!;
      next.set(partition, offset + 1);
      return { topic, partition, offset };
    });
    if (this.options.waitReplicas > 0) await this.waitForReplicas(topic, prepared.length);
    return acks;
  }

  private async waitForReplicas(topic: string, count: number): Promise<void> {
    const { waitReplicas, waitTimeoutMs } = this.options;
    let reached: number;
    try {
      reached = Number(
        await this.commands.command(`wait for ${waitReplicas} replicas`, (client) =>
          client.wait(waitReplicas, waitTimeoutMs),
        ),
      );
    } catch (error) {
      throw this.publishError(topic, count, error);
    }
    if (reached < waitReplicas) {
      throw new TidingsError(
        ErrorCode.PUBLISH_FAILED,
        `Published ${count} record${count === 1 ? '' : 's'} to topic '${topic}' on the primary at ${this.url}, but ` +
          `only ${reached} of the ${waitReplicas} replicas asked for (waitReplicas) confirmed them within ` +
          `${waitTimeoutMs} ms. They are on the primary and may be lost if it fails now; publish again (consumers ` +
          `dedupe by event id) or check replication.`,
        { topic, url: this.url, replicas: reached, waitReplicas },
      );
    }
  }

  private publishError(topic: string, count: number, error: unknown): TidingsError {
    if (
      isTidingsError(error) &&
      error.code === ErrorCode.TRANSPORT_UNAVAILABLE &&
      isReplyError(error.cause)
    ) {
      return new TidingsError(
        ErrorCode.PUBLISH_FAILED,
        `Publishing ${count} record${count === 1 ? '' : 's'} to topic '${topic}' failed: Redis at ${this.url} ` +
          `replied ${(error.cause as Error).message}. They may or may not have been written; publish again ` +
          `(consumers dedupe by event id) once the cause (memory, replication) is fixed.`,
        { topic, url: this.url, cause: error.cause },
      );
    }
    if (isTidingsError(error)) return error;
    return this.commands.toError(`publish to topic '${topic}'`, error);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Subscribe

  subscribe(options: SubscribeOptions): RedisSubscription {
    const checked = checkSubscribeOptions(options);
    this.checkOpen(`subscribe group '${checked.group}'`);
    const member = new Member(this.memberContext, checked);
    const subscription = new RedisSubscriptionImpl(member);
    if (checked.signal?.aborted) {
      member.closeUnjoined();
      return subscription;
    }
    this.members.add(member);
    this.listen(member.group);
    if (this.heartbeatTimer === undefined) {
      // Referenced: a live subscription keeps the process running, as a consumer service expects.
      this.heartbeatTimer = setInterval(() => {
        for (const m of this.members) m.requestSync();
      }, this.options.heartbeatIntervalMs);
    }
    member.start(checked.signal);
    return subscription;
  }

  /** Rebalances local members of a group when another member publishes a change on the group's channel. */
  private listen(group: string): void {
    this.notifications ??= this.connection('group notifications', [], undefined, (channel, memberId) => {
      for (const member of this.members) {
        if (member.id !== memberId && this.keys.changed(member.group) === channel) member.requestSync();
      }
    });
    this.notifications.listen(this.keys.changed(group));
  }

  private memberClosed(member: Member): void {
    this.members.delete(member);
    if (![...this.members].some((m) => m.group === member.group)) {
      this.notifications?.unlisten(this.keys.changed(member.group));
    }
    if (this.members.size === 0) {
      clearInterval(this.heartbeatTimer);
      this.heartbeatTimer = undefined;
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Close

  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    this.closed = true;
    this.closing = (async () => {
      await Promise.all([...this.members].map((member) => member.close(undefined)));
      clearInterval(this.heartbeatTimer);
      this.heartbeatTimer = undefined;
      clearInterval(this.retentionTimer);
      this.delays.close();
      await this.notifications?.close();
      await this.commands.close();
    })();
    return this.closing;
  }
}

function abortedError(topic: string, signal: AbortSignal): TidingsError {
  return new TidingsError(
    ErrorCode.ABORTED,
    `Publish to topic '${String(topic)}' was aborted before anything was written.`,
    { topic, cause: signal.reason },
  );
}

async function readAofEnabled(client: Redis): Promise<boolean | undefined> {
  try {
    const info = await client.info('persistence');
    const match = /^aof_enabled:(\d)/m.exec(info);
    return match === null ? undefined : match[1] === '1';
  } catch {
    return undefined; // INFO refused (ACL): the server's persistence is unknown.
  }
}

/** Test hooks, not part of the public API. */
export const internals = {
  /** Makes a subscription's member stop renewing its lease, as a hung process would. */
  pauseHeartbeats(subscription: Subscription): void {
    (subscription as RedisSubscriptionImpl).member.heartbeatsPaused = true;
  },
};
