/**
 * The transport contract: what every engine under Tidings (the in-memory reference, the embedded log, NATS,
 * RabbitMQ, Redis, PostgreSQL, ...) implements, and what the conformance suite checks.
 *
 * A transport moves opaque records. It knows topics, partitions, keys, headers, bytes, consumer groups and offsets;
 * it knows nothing of event types, schemas or handlers. Three small roles: publish, subscribe, admin.
 */

import type { InboxStore } from './inbox.js';
import type { ParkingStore } from './parking.js';

/** The most records one `TransportAdmin.read` call returns, on every transport. */
export const readLimitMax = 10_000;

/** A record as a producer hands it to the transport. */
export interface OutgoingRecord {
  /** The aggregate key. Decides the partition (see `partitionForKey`) and with it the order. */
  key: string;
  /** String headers. In CloudEvents binary mode these carry the `ce-*` attributes. */
  headers: Record<string, string>;
  /** The encoded payload. */
  value: Uint8Array;
  /** Milliseconds since the epoch; the transport's own clock if absent. */
  timestamp?: number;
}

/** A record as stored in a topic partition. */
export interface StoredRecord {
  topic: string;
  partition: number;
  /** Position in the partition: 0, 1, 2, ... dense and increasing for log transports. */
  offset: number;
  key: string;
  headers: Readonly<Record<string, string>>;
  value: Uint8Array;
  /** Milliseconds since the epoch at which the transport stored it. */
  timestamp: number;
}

/** Where a record landed. Returned only once the record is durable on the transport. */
export interface PublishAck {
  topic: string;
  partition: number;
  offset: number;
}

/** Where a group with no committed offset starts, or where a reset moves it. */
export type StartPosition =
  | 'earliest'
  | 'latest'
  /** The first record at or after this offset, in every partition. */
  | { offset: number }
  /** The first record stored at or after this time (ms since epoch), in every partition. */
  | { timestamp: number };

export interface SubscribeOptions {
  /** The consumer group: every group receives every record; members of one group share the partitions. */
  group: string;
  /** The topics this member consumes. */
  topics: readonly string[];
  /** Where to begin in partitions that have no committed offset for this group. Default `'latest'`. */
  startFrom?: StartPosition;
  /**
   * The most deliveries this member holds un-acknowledged at once; the transport stops handing out records at
   * that point (backpressure). Default 256.
   */
  prefetch?: number;
  /** Aborting closes the subscription as `close()` does. */
  signal?: AbortSignal;
}

/** One record handed to a group member, to be settled exactly once with `ack` or `nack`. */
export interface Delivery extends StoredRecord {
  /** How many times this record has been handed to this group, 1 on the first delivery. At least 1. */
  readonly deliveryCount: number;
  /**
   * Marks the record processed. Log transports commit the group's offset up to the lowest record that is still
   * un-acknowledged in the partition (the low-water mark), so acks may arrive in any order.
   * Acks from a member that has lost the partition in a rebalance are ignored (fenced).
   */
  ack(): void;
  /**
   * Gives the record back: it is delivered again, to this member or, after a rebalance, to another, after at least
   * `delayMs` (default 0). Records of the same partition that were already delivered are not recalled.
   */
  nack(options?: { delayMs?: number }): void;
}

/**
 * A member's stream of deliveries. Iterate it once (a second iteration throws `INVALID_CONFIG`); the iteration ends
 * when the subscription closes, and leaving the loop early (`break`, `return`, a throw) closes it. `closed` resolves
 * once it has closed: to `undefined` after `close()`, or to the Error that ended it.
 */
export interface Subscription extends AsyncIterable<Delivery>, AsyncDisposable {
  readonly group: string;
  /** This member's id, as `describeGroup` lists it. */
  readonly memberId: string;
  readonly closed: Promise<Error | undefined>;
  /**
   * The partitions assigned to this member, per topic. Changes on rebalance; a partition is listed from the moment
   * it is assigned, though its records flow only once the previous owner has settled its deliveries.
   */
  assignments(): ReadonlyArray<{ topic: string; partition: number }>;
  /**
   * Stops handing out records, commits what was acknowledged and leaves the group (its partitions move to the
   * remaining members). Deliveries not yet acknowledged are redelivered to the group later. Idempotent.
   */
  close(): Promise<void>;
}

export interface TopicConfig {
  /** Number of partitions, fixed at creation. */
  partitions: number;
  /** Records older than this are removed in the background. Unlimited if absent. */
  retentionMs?: number;
  /** Oldest records are removed once a partition holds more than this. Unlimited if absent. */
  retentionBytes?: number;
}

export interface TopicDescription extends TopicConfig {
  name: string;
  /** Per partition: the first offset still stored and the offset the next record will get. */
  partitionOffsets: ReadonlyArray<{ partition: number; lowOffset: number; highOffset: number }>;
}

export interface PartitionLag {
  topic: string;
  partition: number;
  /** The next offset the group will read (its committed position), or the low offset if none is committed. */
  committedOffset: number;
  /** The offset the next published record will get. */
  highOffset: number;
  /**
   * `highOffset - committedOffset`: records published but not yet processed by the group. When retention removed
   * records below the committed offset, `committedOffset` is reported as the low offset.
   */
  lag: number;
}

export interface GroupDescription {
  group: string;
  /** Live members and what they own. */
  members: ReadonlyArray<{
    memberId: string;
    assignments: ReadonlyArray<{ topic: string; partition: number }>;
  }>;
  lag: readonly PartitionLag[];
}

/** Reading and managing topics and groups. */
export interface TransportAdmin {
  /**
   * Creates a topic. Resolves once it exists; if it exists already with the same partition count it resolves too,
   * and with a different partition count it rejects with `CONFLICT`.
   */
  createTopic(name: string, config: TopicConfig): Promise<void>;
  /** Rejects with `NOT_FOUND` for an unknown topic. */
  describeTopic(name: string): Promise<TopicDescription>;
  listTopics(): Promise<string[]>;
  /**
   * Reads stored records of one partition from `fromOffset` (inclusive; from the low offset if it is below it), at
   * most `limit` (1 to {@link readLimitMax}), in offset order, without touching any group. For audit, tailing and
   * dead-letter listing.
   */
  read(topic: string, partition: number, fromOffset: number, limit: number): Promise<StoredRecord[]>;
  /**
   * The offset of the first record stored at or after `timestamp` in the partition (the high offset if none).
   * Timestamps are expected to increase within a partition; with producer clocks out of step the answer is the
   * first record whose running maximum timestamp reaches `timestamp`, as Kafka's time index gives.
   */
  offsetForTime(topic: string, partition: number, timestamp: number): Promise<number>;
  listGroups(): Promise<string[]>;
  /**
   * Members and lag of a group, over the topics it has committed offsets or live members for. Rejects with
   * `NOT_FOUND` for a group that never subscribed.
   */
  describeGroup(group: string): Promise<GroupDescription>;
  /**
   * Moves a group's committed offsets in every partition of `topic`. Refused with `CONFLICT` while any member of the
   * group is live, since a running member would overwrite the reset.
   */
  resetOffsets(group: string, topic: string, to: StartPosition): Promise<void>;
}

/** What a transport can and cannot promise; the conformance suite and the bus read it. */
export interface TransportFeatures {
  /** Records survive the process (and for durable transports, a crash) once a publish resolved. */
  persistent: boolean;
  /** Several groups each receive every record; members of a group share the work. */
  consumerGroups: boolean;
  /** Records with the same key are delivered to a group in publish order. */
  perKeyOrder: boolean;
  /** A group can start at, or be reset to, an offset. */
  replayByOffset: boolean;
  /** A group can start at, or be reset to, a time. */
  replayByTime: boolean;
  /** `nack({ delayMs })` is honoured by the broker rather than emulated. */
  nativeDelay: boolean;
  /** The largest record the transport accepts, in bytes: value plus UTF-8 bytes of key and header names and values. */
  maxRecordBytes: number;
}

/** What an operator asked a running consumer group to do (from the CLI or console, possibly in another process). */
export type OperatorRequest = {
  id: string;
  group: string;
  topic: string;
  key: string;
  /** ms since epoch. */
  requestedAt: number;
} & (
  | { kind: 'retry-parked' | 'skip-parked' }
  | {
      kind: 'retry-dead-letter';
      /** `<partition>:<offset>` in the dead-letter topic. */
      deadLetterId: string;
    }
);

/** A request as filed: everything but the id and time the store assigns. */
export type NewOperatorRequest = OperatorRequest extends infer R
  ? R extends OperatorRequest
    ? Omit<R, 'id' | 'requestedAt'>
    : never
  : never;

/** The outcome a consumer records for a request it carried out. */
export interface OperatorRequestOutcome {
  ok: boolean;
  /** What happened, in a sentence. */
  message: string;
}

/**
 * Durable requests from operators to consumer groups. A request is carried out by the running member of the group
 * that owns the key's partition, which polls `pending` and records `complete`.
 */
export interface OperatorRequestStore {
  /** Files a request; resolves with its id. */
  add(request: NewOperatorRequest): string | Promise<string>;
  /** Requests of `group` not yet completed, oldest first, at most `limit`. */
  pending(group: string, limit: number): OperatorRequest[] | Promise<OperatorRequest[]>;
  /** Marks a request done; completing twice keeps the first outcome. */
  complete(id: string, outcome: OperatorRequestOutcome): void | Promise<void>;
  /** A request with its outcome, if any; undefined if unknown. */
  get(
    id: string,
  ):
    | (OperatorRequest & { outcome?: OperatorRequestOutcome })
    | undefined
    | Promise<(OperatorRequest & { outcome?: OperatorRequestOutcome }) | undefined>;
}

/** Durable stores a transport keeps beside its data; the bus uses them instead of the in-memory defaults. */
export interface TransportStores {
  parking?: ParkingStore;
  inbox?: InboxStore;
  requests?: OperatorRequestStore;
}

/**
 * A transport: publish, subscribe, admin. Implementations validate and default their config at construction.
 */
export interface Transport {
  /** Short name for logs and docs: `memory`, `log`, `nats`, ... */
  readonly name: string;
  readonly features: TransportFeatures;
  readonly admin: TransportAdmin;
  /** Durable parking, inbox and operator-request stores, when the transport has somewhere to keep them. */
  readonly stores?: TransportStores | undefined;
  /**
   * Appends records to a topic (created with the transport's default partition count if it does not exist).
   * Resolves, with one ack per record in input order, only when every record is durable on the transport.
   * Records with the same key keep their input order. Rejects with a `TidingsError`: before anything is written
   * with `EVENT_TOO_LARGE`, `VALIDATION_FAILED` (a malformed record), `ABORTED` or `CLOSED`; with `PUBLISH_FAILED`
   * or `TRANSPORT_UNAVAILABLE` when some records may have been written.
   */
  publish(
    topic: string,
    records: readonly OutgoingRecord[],
    options?: { signal?: AbortSignal },
  ): Promise<PublishAck[]>;
  /**
   * Joins `options.group` as a new member and returns its stream of deliveries. Topics that do not exist yet are
   * created as `publish` creates them. Throws `CLOSED` after `close()`.
   */
  subscribe(options: SubscribeOptions): Subscription;
  /** Closes every subscription (as `Subscription.close`) and releases resources. Idempotent. */
  close(): Promise<void>;
}
