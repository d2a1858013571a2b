/**
 * Topics as JetStream streams: one stream per partition (`<prefix>_<topic>_<partition>`, one subject
 * `<prefix>.<topic>.<partition>`), so a partition's offsets are its stream's sequence numbers less one: dense,
 * increasing, never reused, trimmed only from the front by retention (`max_age`, `max_bytes`). The topic's name and
 * partition count live in each stream's description; the partition-0 stream is the topic's anchor (created first,
 * read to learn the partition count).
 */
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
  type StreamInfo,
} from '@nats-io/jetstream';
import { ErrorCode, TidingsError } from '../core/errors.js';
import {
  readLimitMax,
  type StoredRecord,
  type TopicConfig,
  type TopicDescription,
} from '../core/transport.js';
import type { NatsConnector, NatsSession } from './connection.js';
import { isStreamExists, isStreamNotFound } from './failures.js';
import type { NatsNames } from './names.js';
import { checkInteger, describeValue, invalid, natsLimits } from './options.js';
import { consumedRecord, toStoredRecord } from './records.js';
import { checkName, checkNumber } from './validation.js';

/** What the stream descriptions record about a topic. */
export interface TopicMeta {
  readonly name: string;
  readonly partitions: number;
  readonly retentionMs?: number;
  readonly retentionBytes?: number;
}

interface StreamDescription {
  tidings: 'topic';
  topic: string;
  partitions: number;
  partition: number;
}

/** Where a partition's records are: the first offset still stored and the offset the next record gets. */
export interface PartitionBounds {
  lowOffset: number;
  highOffset: number;
}

const nanosPerMs = 1_000_000;
/** JetStream's default duplicate window; kept no longer than the retention (the server requires it). */
const duplicateWindowMs = 120_000;
/** How long a read waits for records the stream said it had (they may be trimmed meanwhile). */
const readExpiresMs = 2_000;

export function boundsOf(info: StreamInfo): PartitionBounds {
  const highOffset = info.state.last_seq;
  const lowOffset = Math.min(Math.max(info.state.first_seq - 1, 0), highOffset);
  return { lowOffset, highOffset };
}

export class Topics {
  private readonly connector: NatsConnector;
  private readonly names: NatsNames;
  private readonly replicas: number;
  private readonly defaultPartitions: number;
  /** Topics known to exist with every partition stream, by name. */
  private readonly known = new Map<string, Promise<TopicMeta>>();

  constructor(connector: NatsConnector, names: NatsNames, replicas: number, defaultPartitions: number) {
    this.connector = connector;
    this.names = names;
    this.replicas = replicas;
    this.defaultPartitions = defaultPartitions;
  }

  /** The topic, created with the default partition count if it does not exist. */
  ensure(name: string): Promise<TopicMeta> {
    let known = this.known.get(name);
    if (known === undefined) {
      known = this.load(name, { partitions: this.defaultPartitions }, false);
      this.known.set(name, known);
      known.catch(() => this.known.delete(name));
    }
    return known;
  }

  /** Creates a topic (see `TransportAdmin.createTopic`): `CONFLICT` if it exists with another partition count. */
  async create(name: string, config: TopicConfig): Promise<void> {
    checkName(name, 'topic');
    if (typeof config !== 'object' || config === null) {
      throw invalid(
        `createTopic('${name}') needs a config object with partitions, got ${describeValue(config)}.`,
        {
          topic: name,
        },
      );
    }
    const partitions = checkInteger(
      config.partitions,
      `partitions of topic '${name}'`,
      1,
      natsLimits.partitions,
    );
    const checked: { partitions: number; retentionMs?: number; retentionBytes?: number } = { partitions };
    if (config.retentionMs !== undefined) {
      checked.retentionMs = Math.ceil(checkNumber(config.retentionMs, `retentionMs of topic '${name}'`, 1));
    }
    if (config.retentionBytes !== undefined) {
      checked.retentionBytes = checkInteger(
        config.retentionBytes,
        `retentionBytes of topic '${name}'`,
        1,
        Number.MAX_SAFE_INTEGER,
      );
    }
    const meta = await this.load(name, checked, true);
    this.known.set(name, Promise.resolve(meta));
  }

  /** The topic's metadata; `NOT_FOUND` if it does not exist. */
  async get(name: string): Promise<TopicMeta> {
    checkName(name, 'topic');
    const known = this.known.get(name);
    if (known !== undefined) return known;
    const session = await this.connector.get();
    const info = await this.streamInfo(session, this.names.stream(name, 0));
    if (info === undefined) throw this.notFound(name);
    return metaOf(name, info);
  }

  /**
   * Loads (creating when missing) every partition stream of a topic. With `strict`, an existing topic with another
   * partition count is a `CONFLICT`; otherwise its own count wins.
   */
  private async load(name: string, config: TopicConfig, strict: boolean): Promise<TopicMeta> {
    const session = await this.connector.get();
    const first = this.names.stream(name, 0);
    let anchor = await this.streamInfo(session, first);
    if (anchor === undefined) {
      try {
        anchor = await session.jsm.streams.add(this.streamConfig(name, 0, config));
      } catch (error) {
        if (!isStreamExists(error)) throw error;
        anchor = await this.streamInfo(session, first);
        if (anchor === undefined) throw error;
      }
    }
    const meta = metaOf(name, anchor);
    if (strict && meta.partitions !== config.partitions) {
      throw new TidingsError(
        ErrorCode.CONFLICT,
        `Topic '${name}' already exists with ${meta.partitions} partitions, not ${config.partitions}; the ` +
          `partition count is fixed at creation. Use ${meta.partitions} partitions or another topic name.`,
        { topic: name, partitions: meta.partitions, requestedPartitions: config.partitions },
      );
    }
    // The other partitions, created if a creator stopped half-way (each add is idempotent for the same config).
    await Promise.all(
      Array.from({ length: meta.partitions - 1 }, async (_, index) => {
        const partition = index + 1;
        const stream = this.names.stream(name, partition);
        if ((await this.streamInfo(session, stream)) !== undefined) return;
        try {
          await session.jsm.streams.add(this.streamConfig(name, partition, meta));
        } catch (error) {
          if (!isStreamExists(error)) throw error;
        }
      }),
    );
    return meta;
  }

  private streamConfig(
    name: string,
    partition: number,
    config: TopicConfig,
  ): Partial<StreamConfig> & { name: string } {
    const description: StreamDescription = {
      tidings: 'topic',
      topic: name,
      partitions: config.partitions,
      partition,
    };
    const maxAgeMs = config.retentionMs ?? 0;
    return {
      name: this.names.stream(name, partition),
      subjects: [this.names.subject(name, partition)],
      description: JSON.stringify(description),
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      num_replicas: this.replicas,
      discard: DiscardPolicy.Old,
      max_age: maxAgeMs * nanosPerMs,
      max_bytes: config.retentionBytes ?? -1,
      duplicate_window:
        (maxAgeMs > 0 ? Math.min(maxAgeMs, duplicateWindowMs) : duplicateWindowMs) * nanosPerMs,
      allow_direct: true,
    };
  }

  /** Stream info, or undefined if the stream does not exist. */
  async streamInfo(session: NatsSession, stream: string): Promise<StreamInfo | undefined> {
    try {
      return await session.jsm.streams.info(stream);
    } catch (error) {
      if (isStreamNotFound(error)) return undefined;
      throw error;
    }
  }

  notFound(name: string): TidingsError {
    return new TidingsError(
      ErrorCode.NOT_FOUND,
      `Topic '${name}' does not exist on the NATS server at ${this.connector.url} (no stream ` +
        `${this.names.stream(name, 0)}). Create it with admin.createTopic, or publish to it, first.`,
      { topic: name },
    );
  }

  /** The partition's bounds; `NOT_FOUND` for an unknown topic or partition. */
  async bounds(topic: string, partition: number): Promise<PartitionBounds> {
    const meta = await this.get(topic);
    this.checkPartition(meta, partition);
    const session = await this.connector.get();
    const info = await this.streamInfo(session, this.names.stream(topic, partition));
    if (info === undefined) throw this.notFound(topic);
    return boundsOf(info);
  }

  checkPartition(meta: TopicMeta, partition: number): void {
    if (!Number.isInteger(partition) || partition < 0) {
      throw invalid(`Partition ${describeValue(partition)} of topic '${meta.name}' is not an integer >= 0.`, {
        topic: meta.name,
      });
    }
    if (partition >= meta.partitions) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `Topic '${meta.name}' has no partition ${partition}; it has partitions 0 to ${meta.partitions - 1}.`,
        { topic: meta.name, partition },
      );
    }
  }

  async describe(name: string): Promise<TopicDescription> {
    const meta = await this.get(name);
    const session = await this.connector.get();
    const partitionOffsets = await Promise.all(
      Array.from({ length: meta.partitions }, async (_, partition) => {
        const info = await this.streamInfo(session, this.names.stream(name, partition));
        const bounds = info === undefined ? { lowOffset: 0, highOffset: 0 } : boundsOf(info);
        return { partition, ...bounds };
      }),
    );
    return { ...meta, partitionOffsets };
  }

  async list(): Promise<string[]> {
    const session = await this.connector.get();
    const names: string[] = [];
    for await (const info of session.jsm.streams.list(`${this.names.prefix}.*.0`)) {
      if (!this.names.isFirstPartitionStream(info.config.name)) continue;
      const description = parseDescription(info);
      if (description !== undefined && description.partition === 0) names.push(description.topic);
    }
    return names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** Reads stored records of a partition by offset; see `TransportAdmin.read`. */
  async read(topic: string, partition: number, fromOffset: number, limit: number): Promise<StoredRecord[]> {
    const meta = await this.get(topic);
    this.checkPartition(meta, partition);
    checkInteger(fromOffset, `fromOffset for read of topic '${topic}'`, 0, Number.MAX_SAFE_INTEGER);
    checkInteger(limit, `limit for read of topic '${topic}'`, 1, readLimitMax);
    const session = await this.connector.get();
    const stream = this.names.stream(topic, partition);
    const info = await this.streamInfo(session, stream);
    if (info === undefined) throw this.notFound(topic);
    const startSeq = Math.max(fromOffset + 1, info.state.first_seq, 1);
    const lastSeq = Math.min(info.state.last_seq, startSeq + limit - 1);
    if (startSeq > lastSeq) return [];
    const consumerInfo = await session.jsm.consumers.add(stream, {
      ack_policy: AckPolicy.None,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: startSeq,
      mem_storage: true,
      inactive_threshold: 10_000 * nanosPerMs,
      num_replicas: 1,
    });
    const records: StoredRecord[] = [];
    try {
      const consumer = session.js.consumers.getConsumerFromInfo(consumerInfo);
      const messages = await consumer.fetch({ max_messages: lastSeq - startSeq + 1, expires: readExpiresMs });
      for await (const message of messages) {
        if (message.seq <= lastSeq) {
          records.push(consumedRecord(topic, partition, message));
        }
        if (message.seq >= lastSeq) {
          messages.stop();
          break;
        }
      }
    } finally {
      void session.jsm.consumers.delete(stream, consumerInfo.name).catch(() => undefined);
    }
    return records;
  }

  /** See `TransportAdmin.offsetForTime`: a binary search over the partition's record timestamps. */
  async offsetForTime(topic: string, partition: number, timestamp: number): Promise<number> {
    const meta = await this.get(topic);
    this.checkPartition(meta, partition);
    if (typeof timestamp !== 'number' || Number.isNaN(timestamp)) {
      throw invalid(
        `offsetForTime on topic '${topic}' needs a timestamp in ms, got ${describeValue(timestamp)}.`,
        {
          topic,
        },
      );
    }
    const session = await this.connector.get();
    const stream = this.names.stream(topic, partition);
    const info = await this.streamInfo(session, stream);
    if (info === undefined) throw this.notFound(topic);
    let lo = Math.max(info.state.first_seq, 1);
    let hi = info.state.last_seq + 1;
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      const message = await session.jsm.streams.getMessage(stream, { seq: mid });
      if (message === null) {
        lo = mid + 1; // removed by retention meanwhile: older than anything still stored
        continue;
      }
      const record = toStoredRecord(
        topic,
        partition,
        message.seq,
        message.time.getTime(),
        message.header,
        message.data,
      );
      if (record.timestamp >= timestamp) hi = mid;
      else lo = mid + 1;
    }
    return Math.min(lo, info.state.last_seq + 1) - 1;
  }
}

function parseDescription(info: StreamInfo): StreamDescription | undefined {
  try {
    const parsed = JSON.parse(info.config.description ?? '') as Partial<StreamDescription>;
    if (
      parsed.tidings === 'topic' &&
      typeof parsed.topic === 'string' &&
      typeof parsed.partitions === 'number' &&
      typeof parsed.partition === 'number'
    ) {
      return parsed as StreamDescription;
    }
  } catch {
    // Not a Tidings stream.
  }
  return undefined;
}

function metaOf(name: string, info: StreamInfo): TopicMeta {
  const description = parseDescription(info);
  if (description === undefined || description.topic !== name) {
    throw new TidingsError(
      ErrorCode.CONFLICT,
      `Stream ${info.config.name} exists but was not created by Tidings for topic '${name}' (its description is ` +
        `${describeValue(info.config.description)}). Use another topic name or another transport prefix.`,
      { topic: name },
    );
  }
  const meta: { name: string; partitions: number; retentionMs?: number; retentionBytes?: number } = {
    name,
    partitions: description.partitions,
  };
  if (info.config.max_age > 0) meta.retentionMs = info.config.max_age / nanosPerMs;
  if (info.config.max_bytes > 0) meta.retentionBytes = info.config.max_bytes;
  return meta;
}
