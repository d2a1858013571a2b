/**
 * The NATS JetStream transport: publish, subscribe and admin over one lazily made connection. See
 * {@link createNatsTransport} for the contract and `docs/transports/nats.md` for the mapping onto JetStream.
 */
import type { PubAck } from '@nats-io/jetstream';
import { ErrorCode, TidingsError, describeError, isTidingsError } from '../core/errors.js';
import { partitionForKey } from '../core/partitioner.js';
import type {
  OutgoingRecord,
  PublishAck,
  SubscribeOptions,
  Transport,
  TransportAdmin,
  TransportFeatures,
} from '../core/transport.js';
import { GroupBucket } from './bucket.js';
import { NatsConnector, type NatsSession } from './connection.js';
import type { NatsContext } from './context.js';
import { isConnectionFailure } from './failures.js';
import { GroupAdmin } from './group-admin.js';
import { GroupSession } from './group-session.js';
import { NatsMember, type MemberHost, type NatsSubscription } from './member.js';
import { NatsNames } from './names.js';
import {
  describeValue,
  natsDefaults,
  natsLimits,
  resolveNatsOptions,
  type NatsTransportOptions,
} from './options.js';
import { encodeRecord, type EncodedRecord } from './records.js';
import { Topics } from './topics.js';
import { checkName, checkRecord, checkSubscribeOptions } from './validation.js';

/** The transport returned by {@link createNatsTransport}. */
export interface NatsTransport extends Transport {
  readonly name: 'nats';
  /**
   * Joins `options.group` as a new member. Returns at once; the member joins in the background (topics created if
   * missing, lease written, partitions claimed), retrying while the server is unreachable. `assignments()` is empty
   * until then. With `startFrom: 'latest'`, the member's starting point is the partitions' ends when it joined,
   * and publishes through this transport wait for that to be read, so they are included. Throws `INVALID_CONFIG`
   * for bad options and `CLOSED` once the transport is closed; with an already aborted `signal` it returns a
   * subscription that is closed and never joined.
   */
  subscribe(options: SubscribeOptions): NatsSubscription;
  /**
   * Connects now (the transport otherwise connects on first use). Resolves once connected; rejects with
   * `TRANSPORT_UNAVAILABLE` naming the URL if the server cannot be reached (a later call tries again).
   */
  connect(): Promise<void>;
}

function isRecordArray(value: unknown): value is readonly OutgoingRecord[] {
  return Array.isArray(value);
}

/** Records of one publish call in flight at once; larger calls go in consecutive windows. */
const publishWindow = 2_048;

/**
 * Creates a transport on a NATS server with JetStream (`nats-server -js`), using `@nats-io/jetstream` and
 * `@nats-io/transport-node` (optional peer dependencies of `tidings`).
 *
 * Contract, beyond the interface docs (the same as the in-memory transport where not said otherwise):
 * - A topic is one stream per partition (`<prefix>_<topic>_<partition>`, file storage, `replicas` replicas); a
 *   record's offset is its stream sequence less one. Topics are created on first `publish` or `subscribe` with
 *   `defaultPartitions`; `retentionMs`/`retentionBytes` become the streams' `max_age`/`max_bytes`.
 * - `publish` validates every record first (`VALIDATION_FAILED`, `EVENT_TOO_LARGE`: nothing written), then sends
 *   them in input order on the one connection and resolves once JetStream acknowledged every one (a PubAck: the
 *   record is in the stream's file store, written to the OS page cache and, with `replicas` > 1, on a quorum of
 *   servers; the server fsyncs every 2 minutes by default). One call is not atomic: on failure it rejects with
 *   `PUBLISH_FAILED` (or `TRANSPORT_UNAVAILABLE` when the connection is down) and some records may be stored.
 * - Consumer groups span processes and machines: membership, partition ownership and committed positions live in
 *   the key-value bucket `<prefix>-groups`; see `groups.ts`. Each claim of a partition creates a durable pull
 *   consumer for the new epoch at the committed position, so a fenced owner's acks are ignored. Within a group,
 *   records of one key are delivered in offset order across joins, graceful leaves and takeovers; deliveries of a
 *   member that leaves, crashes or loses its lease are redelivered (with the acked records after them) to the next
 *   owner, after the previous owner settled them, `rebalanceTimeoutMs` passed, or its lease expired.
 * - `ack` acks the record on the epoch's consumer (fire-and-forget, like the raw client; the acks of one event-loop
 *   turn are written together); the committed position is the consumer's ack floor: the low-water mark.
 *   `nack({ delayMs })` is JetStream's `nak` with that delay (native); a delay still running when the partition
 *   moves is carried to the next owner.
 * - A member hands out at most `prefetch` unsettled deliveries, and each epoch consumer has `max_ack_pending` =
 *   `prefetch`: a member holds at most `prefetch` records per partition it owns (handed out, pulled or waiting out
 *   a nack delay), whatever the backlog.
 * - Nothing blocks while the server is down: `publish` and admin calls reject with `TRANSPORT_UNAVAILABLE` naming
 *   the URL; members keep retrying and resume from the committed positions once it is back.
 *
 * Throws `TidingsError` `INVALID_CONFIG` when an option is unknown or out of range.
 */
export function createNatsTransport(options: NatsTransportOptions = {}): NatsTransport {
  return new NatsTransportImpl(options);
}

class NatsTransportImpl implements NatsTransport, MemberHost {
  readonly name = 'nats' as const;
  readonly admin: TransportAdmin;

  private readonly ctx: NatsContext;
  private readonly groupAdmin: GroupAdmin;
  private readonly sessions = new Map<string, GroupSession>();
  private readonly members = new Set<NatsMember>();
  private maxPayload: number | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(options: NatsTransportOptions) {
    const resolved = resolveNatsOptions(options);
    const connector = new NatsConnector(resolved, (session) => {
      this.maxPayload = session.maxPayload;
    });
    const names = new NatsNames(resolved.prefix);
    const bucket = new GroupBucket(connector, names, resolved.replicas);
    const topics = new Topics(connector, names, resolved.replicas, resolved.defaultPartitions);
    this.ctx = { connector, names, bucket, topics, options: resolved, clock: resolved.clock };
    this.groupAdmin = new GroupAdmin(this.ctx);
    this.admin = Object.freeze<TransportAdmin>({
      createTopic: (name, config) => this.adminCall('create a topic', () => topics.create(name, config)),
      describeTopic: (name) => this.adminCall('describe a topic', () => topics.describe(name)),
      listTopics: () => this.adminCall('list topics', () => topics.list()),
      read: (topic, partition, fromOffset, limit) =>
        this.adminCall('read a partition', () => topics.read(topic, partition, fromOffset, limit)),
      offsetForTime: (topic, partition, timestamp) =>
        this.adminCall('look up an offset by time', () => topics.offsetForTime(topic, partition, timestamp)),
      listGroups: () => this.adminCall('list groups', () => this.groupAdmin.listGroups()),
      describeGroup: (group) =>
        this.adminCall('describe a group', async () => {
          await this.joinsOf(group);
          return this.groupAdmin.describeGroup(group, this.sessions.get(group));
        }),
      resetOffsets: (group, topic, to) =>
        this.adminCall('reset offsets', () => this.groupAdmin.resetOffsets(group, topic, to)),
    });
  }

  /**
   * `maxRecordBytes`: the configured value, else the server's `max_payload` less 1 KiB once connected (1 MiB -
   * 1 KiB before).
   */
  get features(): TransportFeatures {
    const configured = this.ctx.options.maxRecordBytes;
    const maxRecordBytes =
      configured ??
      (this.maxPayload === undefined
        ? natsDefaults.maxRecordBytes
        : Math.max(1, this.maxPayload - natsLimits.headerReserveBytes));
    return {
      persistent: true,
      consumerGroups: true,
      perKeyOrder: true,
      replayByOffset: true,
      replayByTime: true,
      nativeDelay: true,
      maxRecordBytes,
    };
  }

  async connect(): Promise<void> {
    await this.ctx.connector.get();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Publish

  async publish(
    topic: string,
    records: readonly OutgoingRecord[],
    options?: { signal?: AbortSignal },
  ): Promise<PublishAck[]> {
    if (this.closed) {
      throw new TidingsError(
        ErrorCode.CLOSED,
        `Cannot publish to topic '${String(topic)}': the NATS transport is closed. Create a new transport.`,
        { topic },
      );
    }
    const signal = options?.signal;
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
    checkName(topic, 'topic');
    if (!isRecordArray(records)) {
      throw new TidingsError(
        ErrorCode.VALIDATION_FAILED,
        `publish to topic '${topic}' needs an array of records, got ${describeValue(records)}; nothing was written.`,
        { topic },
      );
    }
    const limit = this.features.maxRecordBytes;
    records.forEach((record, index) => {
      const bytes = checkRecord(topic, record, index);
      if (bytes > limit)
        throw this.tooLarge(
          topic,
          record,
          index,
          `is ${bytes} bytes, over the maxRecordBytes limit of ${limit}`,
          { sizeBytes: bytes, maxRecordBytes: limit },
        );
    });
    if (records.length === 0) return [];
    const encoded = records.map((record) =>
      encodeRecord(record.key, record.headers, record.value, record.timestamp),
    );
    const session = await this.ctx.connector.get();
    if (!this.ctx.connector.connected) {
      throw this.ctx.connector.unavailable(
        `Cannot publish to topic '${topic}': the connection to the NATS server at ${this.ctx.connector.url} is ` +
          `down (reconnecting); nothing was written`,
        new Error('disconnected'),
      );
    }
    encoded.forEach((message, index) => {
      if (message.wireBytes > session.maxPayload) {
        throw this.tooLarge(
          topic,
          records[index]!,
          index,
          `is ${message.wireBytes} bytes as a NATS message (headers included), over the server's max_payload of ` +
            `${session.maxPayload}`,
          { wireBytes: message.wireBytes, maxPayload: session.maxPayload },
        );
      }
    });
    await Promise.all([...this.members].map((member) => member.snapshotTaken));
    let partitions: number;
    try {
      partitions = (await this.ctx.topics.ensure(topic)).partitions;
    } catch (error) {
      throw this.failure(
        error,
        `Cannot publish to topic '${topic}': creating or loading the topic failed`,
        topic,
        0,
      );
    }
    const acks: PublishAck[] = [];
    for (let start = 0; start < records.length; start += publishWindow) {
      const end = Math.min(records.length, start + publishWindow);
      const pending = this.send(session, topic, partitions, records, encoded, start, end);
      const settled = await Promise.allSettled(pending);
      for (let i = 0; i < settled.length; i++) {
        const outcome = settled[i]!;
        if (outcome.status === 'rejected') {
          throw this.failure(
            outcome.reason,
            `Publishing ${records.length} record(s) to topic '${topic}' failed at record ${start + i}`,
            topic,
            start + i,
          );
        }
        const { partition, ack } = outcome.value;
        acks.push({ topic, partition, offset: ack.seq - 1 });
      }
    }
    return acks;
  }

  /** Sends records [start, end) in order (one connection keeps the order); one promise per record. */
  private send(
    session: NatsSession,
    topic: string,
    partitions: number,
    records: readonly OutgoingRecord[],
    encoded: readonly EncodedRecord[],
    start: number,
    end: number,
  ): Array<Promise<{ partition: number; ack: PubAck }>> {
    const pending: Array<Promise<{ partition: number; ack: PubAck }>> = [];
    const timeout = this.ctx.options.requestTimeoutMs;
    for (let index = start; index < end; index++) {
      const record = records[index]!;
      const partition = partitionForKey(record.key, partitions);
      const subject = this.ctx.names.subject(topic, partition);
      pending.push(
        session.js
          .publish(subject, record.value, { headers: encoded[index]!.headers, timeout })
          .then((ack) => ({ partition, ack })),
      );
    }
    return pending;
  }

  private tooLarge(
    topic: string,
    record: OutgoingRecord,
    index: number,
    what: string,
    details: Record<string, unknown>,
  ): TidingsError {
    return new TidingsError(
      ErrorCode.EVENT_TOO_LARGE,
      `Record ${index} published to topic '${topic}' (key '${record.key}') ${what}; nothing was written. Make the ` +
        `event smaller (store large payloads elsewhere and publish a reference), or raise the server's ` +
        `max_payload (nats-server config, up to 64 MiB) and maxRecordBytes.`,
      { topic, index, ...details },
    );
  }

  private failure(error: unknown, what: string, topic: string, index: number): TidingsError {
    if (isTidingsError(error)) return error;
    if (isConnectionFailure(error) || !this.ctx.connector.connected) {
      return new TidingsError(
        ErrorCode.TRANSPORT_UNAVAILABLE,
        `${what}: the NATS server at ${this.ctx.connector.url} did not confirm it (${describeError(error)}). ` +
          `Records before it were stored; it and later ones may or may not have been. Retry once the server is ` +
          `reachable (consumers are at-least-once, so a retried record may be delivered twice).`,
        { topic, index, url: this.ctx.connector.url, cause: error },
      );
    }
    return new TidingsError(
      ErrorCode.PUBLISH_FAILED,
      `${what}: ${describeError(error)}. Records before it were stored; it and later ones may or may not have been.`,
      { topic, index, cause: error },
    );
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Subscribe

  subscribe(options: SubscribeOptions): NatsSubscription {
    const checked = checkSubscribeOptions(options);
    if (this.closed) {
      throw new TidingsError(
        ErrorCode.CLOSED,
        `Cannot subscribe group '${checked.group}': the NATS transport is closed. Create a new transport.`,
        { group: checked.group },
      );
    }
    let session = this.sessions.get(checked.group);
    if (session === undefined) {
      session = new GroupSession(checked.group, this.ctx.bucket, this.ctx.names, (error) =>
        this.report(error, `watching group '${checked.group}'`),
      );
      this.sessions.set(checked.group, session);
    }
    const member = new NatsMember(this.ctx, checked, session, this);
    if (!checked.signal?.aborted) this.members.add(member);
    member.start();
    return member.subscription;
  }

  /** Waits for the first join attempt of this transport's members of `group`, so they are described. */
  private async joinsOf(group: string): Promise<void> {
    await Promise.all(
      [...this.members].filter((member) => member.group === group).map((member) => member.firstJoin),
    );
  }

  memberClosed(member: NatsMember): void {
    this.members.delete(member);
    if (![...this.members].some((other) => other.group === member.group)) this.sessions.delete(member.group);
  }

  /** Background failures (a member's join, renewal, pull) are retried; they go to the logger at debug level. */
  report(error: unknown, what: string): void {
    this.ctx.options.logger.debug(
      { transport: 'nats', url: this.ctx.connector.url, error: describeError(error) },
      `NATS transport: ${what} failed; retrying`,
    );
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Admin and close

  private async adminCall<T>(what: string, call: () => Promise<T>): Promise<T> {
    if (this.closed) {
      throw new TidingsError(
        ErrorCode.CLOSED,
        'The NATS transport is closed; its admin is no longer available.',
      );
    }
    try {
      return await call();
    } catch (error) {
      if (isTidingsError(error)) throw error;
      if (isConnectionFailure(error) || !this.ctx.connector.connected) {
        throw this.ctx.connector.unavailable(
          `Cannot ${what} on the NATS server at ${this.ctx.connector.url}`,
          error,
        );
      }
      throw new TidingsError(
        ErrorCode.TRANSPORT_UNAVAILABLE,
        `Cannot ${what}: the NATS server at ${this.ctx.connector.url} refused: ${describeError(error)}.`,
        { url: this.ctx.connector.url, cause: error, retryable: false },
      );
    }
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      await Promise.all([...this.members].map((member) => member.close()));
      await this.ctx.connector.close();
    })();
    return this.closing;
  }
}
