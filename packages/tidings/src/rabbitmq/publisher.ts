/**
 * Publishing. The publisher computes each record's partition (`partitionForKey`) and publishes it to the topic's
 * direct exchange with the partition number as routing key; the exchange routes it to the partition's stream.
 * `publish` resolves once (1) the broker confirmed every record (publisher confirms: the stream wrote it) and
 * (2) the transport learnt each record's offset. AMQP confirms carry no offset, so the publisher reads its own
 * records back: it keeps a consumer at the tail (`x-stream-offset: next`) of each partition it writes to and matches
 * records by the publish id it gave them.
 */
import type { Channel, ConfirmChannel, ConsumeMessage } from 'amqplib';
import { randomUUID } from 'node:crypto';
import { describeError, ErrorCode, TidingsError } from '../core/errors.js';
import { partitionForKey } from '../core/partitioner.js';
import type { OutgoingRecord, PublishAck } from '../core/transport.js';
import { encodeProperties, publishIdOf, streamOffsetOf } from './codec.js';
import { unavailable, withTimeout, type Connector } from './connection.js';
import type { Names } from './names.js';
import type { ResolvedOptions } from './options.js';
import type { Registry } from './registry.js';
import { checkName, checkRecord, describeValue, limits } from './validation.js';

/** The records of one `publish` call still waiting for their confirmation and offset. */
class PendingBatch {
  readonly offsets: number[];
  readonly done: Promise<number[]>;
  private unconfirmed: number;
  private unknown: number;
  private resolve!: (offsets: number[]) => void;
  private reject!: (error: Error) => void;
  private settled = false;

  constructor(size: number) {
    this.offsets = new Array<number>(size).fill(-1);
    this.unconfirmed = size;
    this.unknown = size;
    this.done = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.done.catch(() => undefined);
  }

  confirmed(): void {
    this.unconfirmed--;

    this.check();
  }

  located(index: number, offset: number): void {
    if (this.offsets[index] !== -1) return;
    this.offsets[index] = offset;
    this.unknown--;

    this.check();
  }

  fail(error: Error): void {
    if (this.settled) return;
    this.settled = true;
    this.reject(error);
  }

  private check(): void {
    if (this.settled || this.unconfirmed > 0 || this.unknown > 0) return;
    this.settled = true;
    this.resolve(this.offsets);
  }
}

interface Waiter {
  batch: PendingBatch;
  index: number;
}

interface TailChannel {
  epoch: number;
  channel: Promise<Channel>;
  /** Streams with a tail consumer on this channel, and the promise of its registration. */
  tails: Map<string, Promise<void>>;
  /**
   * The newest delivery not acknowledged yet. Deliveries of every tail consumer of the channel share one sequence of
   * tags, so they are acknowledged together (`multiple`), from one place, newest last.
   */
  pendingAck: ConsumeMessage | undefined;
  ackScheduled: boolean;
}

export class Publisher {
  private readonly id = randomUUID().replaceAll('-', '').slice(0, 12);
  private seq = 0;
  private readonly waiters = new Map<string, Waiter>();
  private tailChannel: TailChannel | undefined;
  private closed = false;

  constructor(
    private readonly connector: Connector,
    private readonly names: Names,
    private readonly registry: Registry,
    private readonly options: ResolvedOptions,
  ) {
    connector.onDown(() => this.failAll(unavailable(connector.url, new Error('the connection was lost'))));
  }

  async publish(
    topic: string,
    records: readonly OutgoingRecord[],
    signal?: AbortSignal,
  ): Promise<PublishAck[]> {
    if (this.closed) {
      throw new TidingsError(
        ErrorCode.CLOSED,
        `Cannot publish to topic '${String(topic)}': the RabbitMQ transport is closed. Create a new transport.`,
        { topic },
      );
    }
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
    checkName(topic, 'topic', limits.topicNameLength);
    if (!isArray(records)) {
      throw new TidingsError(
        ErrorCode.VALIDATION_FAILED,
        `publish to topic '${topic}' needs an array of records, got ${describeValue(records)}; nothing was written.`,
        { topic },
      );
    }
    records.forEach((record, index) => checkRecord(topic, record, index, this.options.maxRecordBytes));
    if (records.length === 0) return [];

    const entry = await this.registry.ensureTopic(topic, { partitions: this.options.defaultPartitions });
    const partitions = records.map((record) => partitionForKey(record.key, entry.partitions));
    const tails = Promise.all(
      [...new Set(partitions)].map((partition) => this.tail(this.names.partitionStream(topic, partition))),
    );
    if (
      (await withTimeout(
        tails.then(() => true),
        this.options.publishTimeoutMs,
      )) !== true
    ) {
      throw new TidingsError(
        ErrorCode.TRANSPORT_UNAVAILABLE,
        `Could not start reading topic '${topic}' on RabbitMQ at ${this.connector.url} within publishTimeoutMs ` +
          `(${this.options.publishTimeoutMs} ms); nothing was written. Try again.`,
        { topic },
      );
    }
    if (signal?.aborted) {
      throw new TidingsError(
        ErrorCode.ABORTED,
        `Publish to topic '${topic}' was aborted before anything was written.`,
        {
          topic,
          cause: signal.reason,
        },
      );
    }

    const channel = await this.connector.confirmChannel();
    const exchange = this.names.topicExchange(topic);
    const now = Date.now();
    // One promise per call, not per record: it resolves once every record is confirmed and its offset read back.
    const batch = new PendingBatch(records.length);
    const publishIds: string[] = [];
    const timer = setTimeout(
      () =>
        batch.fail(
          new Error(`no confirmation within publishTimeoutMs (${this.options.publishTimeoutMs} ms)`),
        ),
      this.options.publishTimeoutMs,
    );
    try {
      for (let index = 0; index < records.length; index++) {
        const record = records[index]!;
        const publishId = `${this.id}.${++this.seq}`;
        publishIds.push(publishId);
        this.waiters.set(publishId, { batch, index });
        const properties = encodeProperties(record.key, record.headers, record.timestamp ?? now, publishId);
        const content = Buffer.from(record.value.buffer, record.value.byteOffset, record.value.byteLength);
        const writable = channel.publish(
          exchange,
          String(partitions[index]),
          content,
          properties,
          (error: unknown) => {
            if (error === null || error === undefined) batch.confirmed();
            else batch.fail(error instanceof Error ? error : new Error(describeError(error)));
          },
        );
        if (!writable) await drained(channel, batch);
      }
    } catch (error) {
      batch.fail(error instanceof Error ? error : new Error(describeError(error)));
    }
    try {
      const offsets = await batch.done;
      return offsets.map((offset, index) => ({ topic, partition: partitions[index]!, offset }));
    } catch (error) {
      if (error instanceof TidingsError) throw error;
      throw new TidingsError(
        ErrorCode.PUBLISH_FAILED,
        `RabbitMQ at ${this.connector.url} did not confirm the publish of ${records.length} record(s) to topic ` +
          `'${topic}': ${describeError(error)}. Some may have been written; publishing again may duplicate them.`,
        { topic, cause: error },
      );
    } finally {
      clearTimeout(timer);
      for (const publishId of publishIds) this.waiters.delete(publishId);
    }
  }

  /** Makes sure this transport reads the tail of `stream` (to learn the offsets of what it publishes there). */
  private tail(stream: string): Promise<void> {
    const epoch = this.connector.epoch;
    let current = this.tailChannel;
    if (current === undefined || current.epoch !== epoch) {
      const channel = this.connector.channel().then(async (created) => {
        await created.prefetch(2_000, false);
        created.on('close', () => {
          if (this.tailChannel === current) this.tailChannel = undefined;
        });
        return created;
      });
      current = { epoch, channel, tails: new Map(), pendingAck: undefined, ackScheduled: false };
      this.tailChannel = current;
      channel.catch(() => {
        if (this.tailChannel === current) this.tailChannel = undefined;
      });
    }
    const tailChannel = current;
    const tails = current.tails;
    let registered = tails.get(stream);
    if (registered === undefined) {
      const channelPromise = current.channel;
      registered = (async () => {
        const channel = await channelPromise;
        await channel.consume(
          stream,
          (message) => {
            if (message === null) {
              tails.delete(stream);
              return;
            }
            tailChannel.pendingAck = message;
            if (!tailChannel.ackScheduled) {
              tailChannel.ackScheduled = true;
              setImmediate(() => {
                tailChannel.ackScheduled = false;
                const newest = tailChannel.pendingAck;
                tailChannel.pendingAck = undefined;
                if (newest === undefined) return;
                try {
                  channel.ack(newest, true);
                } catch {
                  // channel closed: nothing to acknowledge any more
                }
              });
            }
            const publishId = publishIdOf(message);
            if (publishId === undefined) return;
            const waiter = this.waiters.get(publishId);
            if (waiter === undefined) return;
            this.waiters.delete(publishId);
            const offset = streamOffsetOf(message);
            if (offset === undefined)
              waiter.batch.fail(new Error(`record ${publishId} came back without a stream offset`));
            else waiter.batch.located(waiter.index, offset);
          },
          { noAck: false, arguments: { 'x-stream-offset': 'next' } },
        );
      })();
      tails.set(stream, registered);
      registered.catch(() => tails.delete(stream));
    }
    return registered;
  }

  private failAll(error: Error): void {
    const waiters = [...this.waiters.values()];
    this.waiters.clear();
    for (const waiter of waiters) waiter.batch.fail(error);
  }

  close(): void {
    this.closed = true;
    this.failAll(
      new TidingsError(ErrorCode.CLOSED, 'The RabbitMQ transport closed before the publish was confirmed.'),
    );
  }
}

function isArray(value: unknown): boolean {
  return Array.isArray(value);
}

/** Resolves when the channel can take more, or when the batch failed (the channel closed, the publish timed out). */
function drained(channel: ConfirmChannel, batch: PendingBatch): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      channel.off('drain', done);
      channel.off('close', done);
      resolve();
    };
    channel.once('drain', done);
    channel.once('close', done);
    batch.done.then(done, done);
  });
}
