/**
 * The publish path: calls queue here and are written in batches, each batch one `append` statement (so one
 * transaction, committed with `synchronous_commit` as the server has it) on a pooled connection. Concurrent calls
 * share a statement, and a few statements run at once, so the server's group commit lets publishers share WAL
 * flushes.
 */
import type pg from 'pg';
import type { Clock } from '../core/clock.js';
import { ErrorCode, TidingsError, isTidingsError } from '../core/errors.js';
import { partitionForKey } from '../core/partitioner.js';
import type { PublishAck } from '../core/transport.js';
import { describeCause, isConnectionError, unavailable } from './connection.js';
import { appendChunkBytes, type AppendRow, type PostgresStorage, type TopicMeta } from './storage.js';
import type { PreparedRecord } from './validation.js';

/** Records and bytes one statement carries at most (one call is never split, so a larger call goes alone). */
const maxBatchRecords = 4096;
const maxBatchBytes = 8 * 1024 * 1024;

export interface PublisherOptions {
  readonly pool: pg.Pool;
  readonly storage: PostgresStorage;
  readonly clock: Clock;
  readonly displayUrl: string;
  readonly defaultPartitions: number;
  /** Statements in flight at once. */
  readonly concurrency: number;
  /** Awaited before each batch is written (joins of this transport's members come first). */
  readonly beforeWrite: () => Promise<void>;
  /** After each batch committed: the partitions it appended to, per topic id. */
  readonly afterWrite: (touched: ReadonlyMap<number, ReadonlySet<number>>) => void;
}

interface PublishCall {
  readonly topic: string;
  readonly records: readonly PreparedRecord[];
  readonly bytes: number;
  readonly resolve: (acks: PublishAck[]) => void;
  readonly reject: (error: Error) => void;
  detach: () => void;
}

export class Publisher {
  private readonly options: PublisherOptions;
  private readonly queue: PublishCall[] = [];
  private active = 0;
  private idleWaiters: Array<() => void> = [];

  constructor(options: PublisherOptions) {
    this.options = options;
  }

  /** Queues a validated call; resolves with one ack per record once its statement committed. */
  publish(
    topic: string,
    records: readonly PreparedRecord[],
    signal: AbortSignal | undefined,
  ): Promise<PublishAck[]> {
    return new Promise<PublishAck[]>((resolve, reject) => {
      let bytes = 0;
      for (const record of records) bytes += record.bytes;
      const call: PublishCall = { topic, records, bytes, resolve, reject, detach: noop };
      if (signal !== undefined) {
        const onAbort = () => {
          const index = this.queue.indexOf(call);
          if (index < 0) return; // already being written: it completes or fails as a whole
          this.queue.splice(index, 1);
          reject(
            new TidingsError(
              ErrorCode.ABORTED,
              `Publish to topic '${topic}' was aborted before anything was written.`,
              {
                topic,
                cause: signal.reason,
              },
            ),
          );
        };
        signal.addEventListener('abort', onAbort, { once: true });
        call.detach = () => signal.removeEventListener('abort', onAbort);
      }
      this.queue.push(call);
      this.pump();
    });
  }

  /** Resolves once nothing is queued or being written. */
  idle(): Promise<void> {
    if (this.active === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private pump(): void {
    while (this.active < this.options.concurrency && this.queue.length > 0) {
      const batch: PublishCall[] = [];
      let records = 0;
      let bytes = 0;
      while (this.queue.length > 0) {
        const next = this.queue[0]!;
        if (
          batch.length > 0 &&
          (records + next.records.length > maxBatchRecords || bytes + next.bytes > maxBatchBytes)
        ) {
          break;
        }
        this.queue.shift();
        batch.push(next);
        records += next.records.length;
        bytes += next.bytes;
      }
      this.active++;
      void this.write(batch).finally(() => {
        this.active--;
        this.pump();
        if (this.active === 0 && this.queue.length === 0) {
          const waiters = this.idleWaiters;
          this.idleWaiters = [];
          for (const resolve of waiters) resolve();
        }
      });
    }
  }

  private async write(batch: PublishCall[]): Promise<void> {
    const { storage, clock, defaultPartitions } = this.options;
    try {
      await this.options.beforeWrite();
    } catch {
      // A failed join does not hold publishes back.
    }
    // Topics first: a call whose topic cannot be created fails alone.
    const metas = new Map<string, TopicMeta>();
    const ready: PublishCall[] = [];
    for (const call of batch) {
      let meta = metas.get(call.topic) ?? storage.cached(call.topic);
      if (meta === undefined) {
        try {
          meta = (await storage.ensureTopic(call.topic, { partitions: defaultPartitions }, clock.now())).meta;
        } catch (error) {
          this.fail(call, error, false);
          continue;
        }
      }
      metas.set(call.topic, meta);
      ready.push(call);
    }
    if (ready.length === 0) return;
    const rows: AppendRow[] = [];
    const partitionsOf: number[][] = [];
    for (const call of ready) {
      const meta = metas.get(call.topic)!;
      const partitions: number[] = [];
      for (const record of call.records) {
        const partition = partitionForKey(record.key, meta.partitions);
        partitions.push(partition);
        rows.push({ topicId: meta.id, partition, record });
      }
      partitionsOf.push(partitions);
    }
    let offsets: number[];
    try {
      let valueBytes = 0;
      for (const row of rows) valueBytes += row.record.value.byteLength;
      offsets =
        valueBytes > appendChunkBytes
          ? await storage.appendLarge(rows)
          : await storage.append(this.options.pool, rows);
    } catch (error) {
      for (const call of ready) this.fail(call, error, true);
      return;
    }
    const touched = new Map<number, Set<number>>();
    let index = 0;
    ready.forEach((call, callIndex) => {
      const meta = metas.get(call.topic)!;
      const partitions = partitionsOf[callIndex]!;
      let set = touched.get(meta.id);
      if (set === undefined) touched.set(meta.id, (set = new Set()));
      const acks = new Array<PublishAck>(partitions.length);
      for (let i = 0; i < partitions.length; i++) {
        const partition = partitions[i]!;
        set.add(partition);
        acks[i] = { topic: call.topic, partition, offset: offsets[index++]! };
      }
      call.detach();
      call.resolve(acks);
    });
    this.options.afterWrite(touched);
  }

  /** Rejects a call: `TRANSPORT_UNAVAILABLE` for connection failures, else `PUBLISH_FAILED` (or the TidingsError). */
  private fail(call: PublishCall, error: unknown, sent: boolean): void {
    call.detach();
    const count = call.records.length;
    const what = `publish ${count} record${count === 1 ? '' : 's'} to topic '${call.topic}'`;
    if (isConnectionError(error)) {
      const cause = unavailable(this.options.displayUrl, what, error);
      call.reject(
        sent
          ? new TidingsError(
              ErrorCode.TRANSPORT_UNAVAILABLE,
              `${cause.message} The records may or may not have been written; publish again (consumers dedupe by ` +
                `event id).`,
              { cause: error, url: this.options.displayUrl, topic: call.topic },
            )
          : cause,
      );
      return;
    }
    if (isTidingsError(error)) {
      call.reject(error);
      return;
    }
    call.reject(
      new TidingsError(
        ErrorCode.PUBLISH_FAILED,
        `Could not ${what} on the PostgreSQL server at ${this.options.displayUrl}: ${describeCause(error)}. ` +
          (sent
            ? 'The statement failed, so its transaction rolled back and nothing was written; fix the cause and ' +
              'publish again.'
            : 'Nothing was written.'),
        { cause: error, topic: call.topic },
      ),
    );
  }
}

function noop(): void {}
