import type { StoredRecord } from '../core/transport.js';

/** One stored record plus what retention and time lookups need about it. */
interface LogEntry {
  readonly record: StoredRecord;
  /** Encoded size as counted against `maxRecordBytes` and `retentionBytes`. */
  readonly bytes: number;
  /**
   * The largest timestamp of this record and every record before it in the partition. Monotonic even when producers
   * supply their own (unordered) timestamps, so a binary search over it finds the first record at or after a time.
   */
  readonly maxTimestamp: number;
}

/** Below this many dead slots the backing array is not compacted; bounds the cost of trimming to O(1) amortized. */
const compactMinDeadSlots = 1024;

/**
 * The records of one topic partition, in offset order: append at the tail, trim at the head (retention).
 *
 * Contract: offsets are dense, start at 0 and are never reused, also after trimming; `lowOffset` is the first offset
 * still stored and `highOffset` the offset the next append gets. Append, trim and lookup by offset are O(1)
 * amortized; lookup by time is O(log n). Not safe for concurrent mutation, which single-threaded JavaScript rules out.
 */
export class PartitionLog {
  readonly topic: string;
  readonly partition: number;
  /** Backing array; `entries[head]` holds `lowOffset`. Slots before `head` are dead and reclaimed in bulk. */
  private entries: LogEntry[] = [];
  private head = 0;
  private low = 0;
  private totalBytes = 0;
  private lastMaxTimestamp = Number.NEGATIVE_INFINITY;

  constructor(topic: string, partition: number) {
    this.topic = topic;
    this.partition = partition;
  }

  /** The first offset still stored (equal to `highOffset` when the partition is empty). */
  get lowOffset(): number {
    return this.low;
  }

  /** The offset the next appended record gets. */
  get highOffset(): number {
    return this.low + (this.entries.length - this.head);
  }

  /** Bytes held by the stored records, as counted against `retentionBytes`. */
  get storedBytes(): number {
    return this.totalBytes;
  }

  /** Appends a record and returns its offset. `bytes` is its encoded size. */
  append(
    key: string,
    headers: Readonly<Record<string, string>>,
    value: Uint8Array,
    timestamp: number,
    bytes: number,
  ): number {
    const offset = this.highOffset;
    const record: StoredRecord = {
      topic: this.topic,
      partition: this.partition,
      offset,
      key,
      headers,
      value,
      timestamp,
    };
    this.lastMaxTimestamp = Math.max(this.lastMaxTimestamp, timestamp);
    this.entries.push({ record, bytes, maxTimestamp: this.lastMaxTimestamp });
    this.totalBytes += bytes;
    return offset;
  }

  /** The stored record at `offset`, or `undefined` if it was trimmed or not written yet. */
  get(offset: number): StoredRecord | undefined {
    if (offset < this.low) return undefined;
    return this.entries[this.head + (offset - this.low)]?.record;
  }

  /**
   * Removes the oldest records while the partition holds more than `retentionBytes` or its oldest record is older
   * than `now - retentionMs`. Either limit may be absent. Returns how many records were removed.
   */
  trim(now: number, retentionMs: number | undefined, retentionBytes: number | undefined): number {
    let removed = 0;
    const oldestAllowedMs = retentionMs === undefined ? Number.NEGATIVE_INFINITY : now - retentionMs;
    for (;;) {
      const first = this.entries[this.head];
      if (first === undefined) break;
      const overBytes = retentionBytes !== undefined && this.totalBytes > retentionBytes;
      const tooOld = first.record.timestamp < oldestAllowedMs;
      if (!overBytes && !tooOld) break;
      this.totalBytes -= first.bytes;
      this.head++;
      this.low++;
      removed++;
    }
    if (this.head >= compactMinDeadSlots && this.head * 2 >= this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
    return removed;
  }

  /**
   * The offset of the first stored record with a timestamp at or after `timestamp`, or `highOffset` if none.
   * Exact when timestamps increase with offsets (the transport's own clock); with producer-supplied timestamps out of
   * order it answers, like Kafka's time index, the first record whose running maximum timestamp reaches `timestamp`.
   */
  offsetForTime(timestamp: number): number {
    let lo = this.head;
    let hi = this.entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.entries[mid]!.maxTimestamp >= timestamp) hi = mid;
      else lo = mid + 1;
    }
    return this.low + (lo - this.head);
  }
}
