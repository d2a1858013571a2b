/**
 * Topics, partitions and record batches in the log database: creating topics, staging and writing appends as
 * RecordBatch v2 rows, reading pages of records, time lookups and retention. No consumer-group logic lives here.
 */
import { ErrorCode, TidingsError } from '../core/errors.js';
import type { PublishAck, StartPosition, StoredRecord, TopicConfig } from '../core/transport.js';
import type { Database } from './db.js';
import {
  CorruptBatchError,
  batchTimestamps,
  decodeRecordBatch,
  encodePreparedBatch,
  type DecodedRecord,
  type PreparedRecord,
} from './record-batch.js';

/** Bounds of one stored batch: appends of one partition in one transaction are cut into batches of at most this. */
export const maxBatchRecords = 4096;
export const maxBatchBytes = 1024 * 1024;

/** A topic as the transport caches it; partition counts never change, so the cache never goes stale. */
export interface TopicMeta {
  readonly name: string;
  readonly partitions: number;
  readonly retentionMs: number | undefined;
  readonly retentionBytes: number | undefined;
  /** Row id of each partition in `partitions`, by partition number. */
  readonly pids: readonly number[];
}

/** Records of one partition waiting in a transaction to be written, with the acks to fill in. */
interface Staged {
  readonly records: PreparedRecord[];
  readonly acks: PublishAck[];
}

interface PartitionRow {
  next_offset: number;
  low_offset: number;
  stored_bytes: number;
  max_timestamp: number;
}

/** One partition's offsets. */
export interface PartitionOffsets {
  lowOffset: number;
  highOffset: number;
}

/** The state of the log storage of one transport: prepared statements, the topic cache, staged appends. */
export class LogStorage {
  private readonly db: Database;
  private readonly topics = new Map<string, TopicMeta>();
  /** Topics this transaction created: forgotten from the cache if it rolls back. */
  private createdInTransaction: string[] = [];
  private staged = new Map<number, Staged>();
  /** Partitions (pids) appended to by the current transaction, reported by {@link takeTouched} after commit. */
  private touched = new Set<number>();
  private readonly stmt;

  constructor(db: Database) {
    this.db = db;
    this.stmt = {
      topic: db.prepare<
        [string],
        { partitions: number; retention_ms: number | null; retention_bytes: number | null }
      >('SELECT partitions, retention_ms, retention_bytes FROM topics WHERE name = ?'),
      topicPids: db.prepare<[string], { pid: number; partition: number }>(
        'SELECT pid, partition FROM partitions WHERE topic = ? ORDER BY partition',
      ),
      topicNames: db.prepare<[], string>('SELECT name FROM topics').pluck(),
      insertTopic: db.prepare(
        'INSERT INTO topics (name, partitions, retention_ms, retention_bytes, created_at) VALUES (?, ?, ?, ?, ?)',
      ),
      insertPartition: db.prepare(
        'INSERT INTO partitions (topic, partition, next_offset, low_offset, stored_bytes, max_timestamp) ' +
          'VALUES (?, ?, 0, 0, 0, -9007199254740991)',
      ),
      partition: db.prepare<[number], PartitionRow>(
        'SELECT next_offset, low_offset, stored_bytes, max_timestamp FROM partitions WHERE pid = ?',
      ),
      updateAfterAppend: db.prepare(
        'UPDATE partitions SET next_offset = ?, stored_bytes = ?, max_timestamp = ? WHERE pid = ?',
      ),
      insertBatch: db.prepare(
        'INSERT INTO batches (pid, base_offset, last_offset, max_timestamp, running_max_timestamp, record_bytes, data) ' +
          'VALUES (?, ?, ?, ?, ?, ?, ?)',
      ),
      batchesFrom: db.prepare<[number, number, number], { base_offset: number; data: Buffer }>(
        // Seek to the batch holding the offset (the last one starting at or before it), then read on: an index range
        // scan, never a walk over the partition's older batches.
        'SELECT base_offset, data FROM batches WHERE pid = ? AND base_offset >= coalesce((SELECT base_offset ' +
          'FROM batches WHERE pid = ? AND base_offset <= ? ORDER BY base_offset DESC LIMIT 1), 0) ' +
          'ORDER BY base_offset',
      ),
      batchAt: db.prepare<[number, number], { base_offset: number; last_offset: number; data: Buffer }>(
        'SELECT base_offset, last_offset, data FROM batches WHERE pid = ? AND base_offset <= ? ' +
          'ORDER BY base_offset DESC LIMIT 1',
      ),
      batchMeta: db.prepare<
        [number, number],
        { base_offset: number; last_offset: number; running_max_timestamp: number }
      >(
        'SELECT base_offset, last_offset, running_max_timestamp FROM batches WHERE pid = ? AND base_offset <= ? ' +
          'ORDER BY base_offset DESC LIMIT 1',
      ),
      batchData: db
        .prepare<[number, number], Buffer>('SELECT data FROM batches WHERE pid = ? AND base_offset = ?')
        .pluck(),
      oldestBatch: db.prepare<[number], { base_offset: number; max_timestamp: number; record_bytes: number }>(
        'SELECT base_offset, max_timestamp, record_bytes FROM batches WHERE pid = ? ORDER BY base_offset LIMIT 1',
      ),
      deleteBatch: db.prepare('DELETE FROM batches WHERE pid = ? AND base_offset = ?'),
      updateAfterTrim: db.prepare('UPDATE partitions SET low_offset = ?, stored_bytes = ? WHERE pid = ?'),
      retainedTopics: db.prepare<[], { name: string }>(
        'SELECT name FROM topics WHERE retention_ms IS NOT NULL OR retention_bytes IS NOT NULL',
      ),
    };
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Topics

  /** The topic, from the cache or the database; undefined if it does not exist. */
  getTopic(name: string): TopicMeta | undefined {
    const cached = this.topics.get(name);
    if (cached !== undefined) return cached;
    const row = this.stmt.topic.get(name);
    if (row === undefined) return undefined;
    const pids = this.stmt.topicPids.all(name).map((p) => p.pid);
    const meta: TopicMeta = {
      name,
      partitions: row.partitions,
      retentionMs: row.retention_ms ?? undefined,
      retentionBytes: row.retention_bytes ?? undefined,
      pids,
    };
    if (pids.length === row.partitions) this.topics.set(name, meta);
    return meta;
  }

  /** Inside a write transaction: the topic, created with `config` if it does not exist. */
  ensureTopic(name: string, config: TopicConfig, now: number): { meta: TopicMeta; created: boolean } {
    const existing = this.getTopic(name);
    if (existing !== undefined) return { meta: existing, created: false };
    this.stmt.insertTopic.run(
      name,
      config.partitions,
      config.retentionMs ?? null,
      config.retentionBytes ?? null,
      now,
    );
    for (let partition = 0; partition < config.partitions; partition++)
      this.stmt.insertPartition.run(name, partition);
    this.createdInTransaction.push(name);
    return { meta: this.getTopic(name)!, created: true };
  }

  topicNames(): string[] {
    return this.stmt.topicNames.all();
  }

  /** Names of topics with a retention limit, read from the database (other processes may have created some). */
  retainedTopicNames(): string[] {
    return this.stmt.retainedTopics.all().map((row) => row.name);
  }

  offsets(pid: number): PartitionOffsets {
    const row = this.stmt.partition.get(pid)!;
    return { lowOffset: row.low_offset, highOffset: row.next_offset };
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Appends

  /** Inside a write transaction: queues a record for partition `pid`; its ack's offset is set by {@link writeStaged}. */
  stage(pid: number, record: PreparedRecord, ack: PublishAck): void {
    let staged = this.staged.get(pid);
    if (staged === undefined) this.staged.set(pid, (staged = { records: [], acks: [] }));
    staged.records.push(record);
    staged.acks.push(ack);
  }

  /**
   * Inside a write transaction: writes every staged record as batch rows (at most {@link maxBatchRecords} records and
   * about {@link maxBatchBytes} bytes each), assigning offsets from the partition's `next_offset`.
   */
  writeStaged(): void {
    if (this.staged.size === 0) return;
    const staged = this.staged;
    this.staged = new Map();
    for (const [pid, { records, acks }] of staged) {
      this.touched.add(pid);
      const row = this.stmt.partition.get(pid)!;
      let next = row.next_offset;
      let storedBytes = row.stored_bytes;
      let runningMax = row.max_timestamp;
      for (let start = 0; start < records.length;) {
        let end = start;
        let bytes = 0;
        let batchMax = Number.NEGATIVE_INFINITY;
        while (end < records.length && end - start < maxBatchRecords) {
          const record = records[end]!;
          if (end > start && bytes + record.bytes > maxBatchBytes) break;
          bytes += record.bytes;
          if (record.timestamp > batchMax) batchMax = record.timestamp;
          end++;
        }
        const blob = encodePreparedBatch(records, start, end, next);
        runningMax = Math.max(runningMax, batchMax);
        this.stmt.insertBatch.run(pid, next, next + (end - start) - 1, batchMax, runningMax, bytes, blob);
        for (let i = start; i < end; i++) acks[i]!.offset = next + (i - start);
        next += end - start;
        storedBytes += bytes;
        start = end;
      }
      this.stmt.updateAfterAppend.run(next, storedBytes, runningMax, pid);
    }
  }

  /** The transaction rolled back: drop staged records and topics cached from inside it. */
  rolledBack(): void {
    this.staged = new Map();
    this.touched = new Set();
    for (const name of this.createdInTransaction) this.topics.delete(name);
    this.createdInTransaction = [];
  }

  /** A mark of the topics created so far in this transaction, for {@link rollbackTo}. */
  mark(): number {
    return this.createdInTransaction.length;
  }

  /** A savepoint rolled back: forget the topics created since `mark` from the cache. */
  rollbackTo(mark: number): void {
    for (const name of this.createdInTransaction.splice(mark)) this.topics.delete(name);
  }

  /** The transaction committed: the partitions appended to since the last call. */
  committed(): Set<number> {
    this.createdInTransaction = [];
    const touched = this.touched;
    this.touched = new Set();
    return touched;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Reads

  /**
   * Records of partition `pid` from `fromOffset` on: whole batches are read until at least `maxBytes` of batch data
   * or `maxRecords` records are in hand, so memory stays bounded whatever the backlog. Checks every batch's CRC; a
   * corrupt batch throws `DATA_CORRUPT` naming topic, partition and offset (with `stopBeforeCorrupt`, only
   * once the records before it have been returned).
   */
  readPage(
    meta: TopicMeta,
    partition: number,
    fromOffset: number,
    maxRecords: number,
    maxBytes: number,
    stopBeforeCorrupt = false,
  ): DecodedRecord[] {
    const pid = meta.pids[partition]!;
    const records: DecodedRecord[] = [];
    let bytes = 0;
    for (const row of this.stmt.batchesFrom.iterate(pid, pid, fromOffset)) {
      let decoded: DecodedRecord[];
      try {
        decoded = this.decode(
          meta,
          partition,
          row.base_offset,
          row.data,
          fromOffset,
          maxRecords - records.length,
        );
      } catch (error) {
        // The records before a corrupt batch are fine: a consumer gets them; its next read starts there and throws.
        if (stopBeforeCorrupt && records.length > 0) break;
        throw error;
      }
      for (const record of decoded) records.push(record);
      bytes += row.data.length;
      if (records.length >= maxRecords || bytes >= maxBytes) break;
    }
    return records;
  }

  /** The record at `offset`, or undefined if retention removed it or it was never written. */
  readRecord(meta: TopicMeta, partition: number, offset: number): DecodedRecord | undefined {
    const row = this.stmt.batchAt.get(meta.pids[partition]!, offset);
    if (row === undefined || row.last_offset < offset) return undefined;
    return this.decode(meta, partition, row.base_offset, row.data, offset, 1)[0];
  }

  /**
   * The offset of the first record whose running maximum timestamp reaches `timestamp` (exact when timestamps
   * increase with offsets), or the high offset if none. Uses the per-batch running maximum index, then one batch.
   */
  offsetForTime(meta: TopicMeta, partition: number, timestamp: number): number {
    const pid = meta.pids[partition]!;
    const { lowOffset, highOffset } = this.offsets(pid);
    // Binary search over offsets for the first batch whose running maximum reaches `timestamp`: running maxima
    // never decrease with offsets. O(log n) point lookups on the primary key.
    let lo = lowOffset;
    let hi = highOffset;
    let found: { base_offset: number; last_offset: number } | undefined;
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      const batch = this.stmt.batchMeta.get(pid, mid);
      if (batch === undefined || batch.last_offset < lowOffset) {
        lo = mid + 1; // below the first stored batch
      } else if (batch.running_max_timestamp >= timestamp) {
        found = batch;
        hi = batch.base_offset;
      } else {
        lo = batch.last_offset + 1;
      }
    }
    if (found === undefined) return highOffset;
    const data = this.stmt.batchData.get(pid, found.base_offset)!;
    let timestamps: number[];
    try {
      timestamps = batchTimestamps(data);
    } catch (error) {
      throw this.corrupt(meta, partition, found.base_offset, error);
    }
    // Batches before this one all stayed below `timestamp`, so the running maximum within this batch decides.
    let runningMax = Number.NEGATIVE_INFINITY;
    for (let i = 0; i < timestamps.length; i++) {
      runningMax = Math.max(runningMax, timestamps[i]!);
      if (runningMax >= timestamp) return found.base_offset + i;
    }
    return found.base_offset + timestamps.length;
  }

  /** Resolves a start position to an offset of the partition. */
  resolvePosition(meta: TopicMeta, partition: number, position: StartPosition): number {
    const { lowOffset, highOffset } = this.offsets(meta.pids[partition]!);
    if (position === 'earliest') return lowOffset;
    if (position === 'latest') return highOffset;
    if ('offset' in position) return Math.min(Math.max(position.offset, lowOffset), highOffset);
    return this.offsetForTime(meta, partition, position.timestamp);
  }

  private decode(
    meta: TopicMeta,
    partition: number,
    baseOffset: number,
    data: Buffer,
    fromOffset: number,
    limit: number,
  ): DecodedRecord[] {
    try {
      const { header, records } = decodeRecordBatch(data, fromOffset, limit);
      if (header.baseOffset !== baseOffset) {
        throw new CorruptBatchError(
          `the batch says base offset ${header.baseOffset}, its row says ${baseOffset}`,
        );
      }
      return records;
    } catch (error) {
      throw this.corrupt(meta, partition, baseOffset, error);
    }
  }

  private corrupt(meta: TopicMeta, partition: number, baseOffset: number, error: unknown): TidingsError {
    return new TidingsError(
      ErrorCode.DATA_CORRUPT,
      `The stored record batch at offset ${baseOffset} of topic '${meta.name}' partition ${partition} is corrupt ` +
        `(${(error as Error).message}); it was not returned. The log database was damaged outside Tidings (disk ` +
        `fault, a copy taken while it was written, an edit). Restore the data directory from a backup, or reset ` +
        `the consuming groups past offset ${baseOffset} with resetOffsets.`,
      { topic: meta.name, partition, offset: baseOffset, cause: error, retryable: false },
    );
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Retention

  /**
   * Inside a write transaction: removes at most `maxBatches` of the oldest whole batches of the partition while it
   * holds more than `retentionBytes` of records or its oldest batch's newest record is older than
   * `now - retentionMs`. Returns how many batches were removed.
   */
  trim(meta: TopicMeta, partition: number, now: number, maxBatches: number): number {
    const { retentionMs, retentionBytes } = meta;
    if (retentionMs === undefined && retentionBytes === undefined) return 0;
    const pid = meta.pids[partition]!;
    const row = this.stmt.partition.get(pid)!;
    let storedBytes = row.stored_bytes;
    let lowOffset = row.low_offset;
    const oldestAllowedMs = retentionMs === undefined ? Number.NEGATIVE_INFINITY : now - retentionMs;
    let removed = 0;
    while (removed < maxBatches) {
      const oldest = this.stmt.oldestBatch.get(pid);
      if (oldest === undefined) break;
      const overBytes = retentionBytes !== undefined && storedBytes > retentionBytes;
      const tooOld = oldest.max_timestamp < oldestAllowedMs;
      if (!overBytes && !tooOld) break;
      this.stmt.deleteBatch.run(pid, oldest.base_offset);
      storedBytes -= oldest.record_bytes;
      removed++;
    }
    if (removed === 0) return 0;
    const next = this.stmt.oldestBatch.get(pid);
    lowOffset = next === undefined ? row.next_offset : next.base_offset;
    this.stmt.updateAfterTrim.run(lowOffset, storedBytes, pid);
    return removed;
  }
}

/** A decoded record as the transport hands it out. */
export function toStoredRecord(topic: string, partition: number, record: DecodedRecord): StoredRecord {
  return {
    topic,
    partition,
    offset: record.offset,
    key: record.key,
    headers: record.headers,
    value: record.value,
    timestamp: record.timestamp,
  };
}
