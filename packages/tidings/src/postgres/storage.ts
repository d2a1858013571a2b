/**
 * Topics, partitions and records in PostgreSQL: creating the schema and topics, appending, reading pages, offsets,
 * time lookups and retention. No consumer-group logic lives here.
 */
import type pg from 'pg';
import type { StartPosition, StoredRecord, TopicConfig } from '../core/transport.js';
import { isConnectionError } from './connection.js';
import { quoteSchema, schemaLockKey, schemaStatements, schemaVersion } from './schema.js';
import type { PreparedRecord } from './validation.js';

/** Anything that runs a query: the pool, or a client checked out for a transaction. */
export type Queryable = Pick<pg.Pool, 'query'> | Pick<pg.PoolClient, 'query'>;

/** A topic as the transport caches it; partition counts never change, so the cache never goes stale. */
export interface TopicMeta {
  readonly id: number;
  readonly name: string;
  readonly partitions: number;
  readonly retentionMs: number | undefined;
  readonly retentionBytes: number | undefined;
}

/** A record read back from a partition. */
export interface DecodedRecord {
  readonly offset: number;
  readonly key: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly value: Uint8Array;
  readonly timestamp: number;
}

/** A record placed in a partition, ready for the `append` call. */
export interface AppendRow {
  readonly topicId: number;
  readonly partition: number;
  readonly record: PreparedRecord;
}

export interface PartitionOffsets {
  partition: number;
  lowOffset: number;
  highOffset: number;
}

interface TopicRow {
  id: number;
  partitions: number;
  retention_ms: number | null;
  retention_bytes: number | null;
}

interface RecordRow {
  o: number;
  t: number;
  k: string;
  /** The headers as the text of a JSON object. */
  h: string;
  v: Buffer;
}

/** Bytes of values one `append` statement carries at most when a publish call is larger (see `appendLarge`). */
export const appendChunkBytes = 64 * 1024 * 1024;

/** Records one retention statement removes at most from a partition, so publishers are never held up for long. */
const retentionRecordsPerStatement = 10_000;

/** The storage of one transport: the pool, the schema name, the SQL texts and the topic cache. */
export class PostgresStorage {
  private readonly pool: pg.Pool;
  private readonly schema: string;
  private readonly topics = new Map<string, TopicMeta>();
  private readonly topicsById = new Map<number, TopicMeta>();
  private schemaReady: Promise<void> | undefined;
  private readonly sql;

  constructor(pool: pg.Pool, schema: string) {
    this.pool = pool;
    this.schema = schema;
    const s = quoteSchema(schema);
    this.sql = {
      insertTopic:
        `WITH ins AS (INSERT INTO ${s}.topics (name, partitions, retention_ms, retention_bytes, created_at) ` +
        `VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING ` +
        `RETURNING id, partitions, retention_ms, retention_bytes), ` +
        `parts AS (INSERT INTO ${s}.partitions (topic_id, partition) ` +
        `SELECT id, generate_series(0, partitions - 1) FROM ins) ` +
        `SELECT id, partitions, retention_ms, retention_bytes FROM ins`,
      topic: `SELECT id, partitions, retention_ms, retention_bytes FROM ${s}.topics WHERE name = $1`,
      topicNames: `SELECT name FROM ${s}.topics`,
      retainedTopics:
        `SELECT id, name, partitions, retention_ms, retention_bytes FROM ${s}.topics ` +
        `WHERE retention_ms IS NOT NULL OR retention_bytes IS NOT NULL`,
      append: `SELECT append FROM ${s}.append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
      // Offsets are dense from the low offset on (retention only removes a prefix), so a page is an offset range
      // (an index range scan that stops at its end), cut short once it holds $5 bytes after its first record.
      page:
        `SELECT r."offset" AS o, r."timestamp" AS t, r.key AS k, r.headers AS h, r.value AS v ` +
        `FROM ${s}.partitions p JOIN ${s}.records r ON r.topic_id = p.topic_id AND r.partition = p.partition ` +
        `WHERE p.topic_id = $1 AND p.partition = $2 AND r."offset" >= greatest($3, p.low_offset) ` +
        `AND r."offset" < greatest($3, p.low_offset) + $4 AND r.start_bytes < (SELECT f.start_bytes ` +
        `FROM ${s}.records f WHERE f.topic_id = $1 AND f.partition = $2 AND f."offset" >= $3 ORDER BY f."offset" ` +
        `LIMIT 1) + $5 ORDER BY r."offset"`,
      records:
        `SELECT "offset" AS o, "timestamp" AS t, key AS k, headers AS h, value AS v FROM ${s}.records ` +
        `WHERE topic_id = $1 AND partition = $2 AND "offset" = ANY($3::bigint[]) ORDER BY "offset"`,
      offsets: `SELECT partition, low_offset, next_offset FROM ${s}.partitions WHERE topic_id = $1 ORDER BY partition`,
      offsetForTime:
        `SELECT coalesce((SELECT r."offset" FROM ${s}.records r WHERE r.topic_id = p.topic_id ` +
        `AND r.partition = p.partition AND r."offset" >= p.low_offset AND r."timestamp" >= $3 ` +
        `ORDER BY r."offset" LIMIT 1), p.next_offset) AS o ` +
        `FROM ${s}.partitions p WHERE p.topic_id = $1 AND p.partition = $2`,
      trimState:
        `SELECT p.low_offset, p.next_offset, ` +
        `CASE WHEN $3::bigint IS NULL THEN p.low_offset ELSE coalesce((SELECT r."offset" FROM ${s}.records r ` +
        `WHERE r.topic_id = p.topic_id AND r.partition = p.partition AND r."timestamp" >= $3::bigint ` +
        `ORDER BY r."offset" LIMIT 1), p.next_offset) END AS by_time, ` +
        `CASE WHEN $4::bigint IS NULL THEN p.low_offset ELSE coalesce((SELECT r."offset" FROM ${s}.records r ` +
        `WHERE r.topic_id = p.topic_id AND r.partition = p.partition ` +
        `AND r.start_bytes >= p.total_bytes - $4::bigint ORDER BY r."offset" LIMIT 1), p.next_offset) END AS by_size ` +
        `FROM ${s}.partitions p WHERE p.topic_id = $1 AND p.partition = $2`,
      trim:
        `WITH d AS (DELETE FROM ${s}.records WHERE topic_id = $1 AND partition = $2 AND "offset" < $3 RETURNING 1) ` +
        `UPDATE ${s}.partitions SET low_offset = greatest(low_offset, $3) WHERE topic_id = $1 AND partition = $2 ` +
        `RETURNING (SELECT count(*) FROM d) AS removed`,
    };
  }

  /** Creates the schema's tables on first use (once per transport; concurrent creators wait on an advisory lock). */
  ensureSchema(): Promise<void> {
    this.schemaReady ??= this.createSchema().catch((error: unknown) => {
      this.schemaReady = undefined;
      throw error;
    });
    return this.schemaReady;
  }

  private async createSchema(): Promise<void> {
    const s = quoteSchema(this.schema);
    const client = await this.pool.connect();
    let broken = false;
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [schemaLockKey(this.schema)]);
      const exists = await client.query<{ t: string | null }>('SELECT to_regclass($1) AS t', [
        `${s}.schema_version`,
      ]);
      let current: number | undefined;
      if (exists.rows[0]?.t != null) {
        const version = await client.query<{ version: number }>(`SELECT version FROM ${s}.schema_version`);
        current = version.rows[0]?.version;
      }
      if (current !== schemaVersion) {
        for (const statement of schemaStatements(this.schema)) await client.query(statement);
      }
      await client.query('COMMIT');
    } catch (error) {
      broken = true;
      await client.query('ROLLBACK').catch(() => {});
      throw error;
    } finally {
      client.release(broken);
    }
  }

  /** The cached topic, if this transport has seen it. */
  cached(name: string): TopicMeta | undefined {
    return this.topics.get(name);
  }

  cachedById(id: number): TopicMeta | undefined {
    return this.topicsById.get(id);
  }

  /** Creates the topic if it does not exist; returns it and whether this call created it. */
  async ensureTopic(
    name: string,
    config: TopicConfig,
    now: number,
  ): Promise<{ meta: TopicMeta; created: boolean }> {
    const cached = this.topics.get(name);
    if (cached !== undefined) return { meta: cached, created: false };
    await this.ensureSchema();
    const inserted = await this.pool.query<TopicRow>({
      text: this.sql.insertTopic,
      values: [name, config.partitions, config.retentionMs ?? null, config.retentionBytes ?? null, now],
    });
    const row = inserted.rows[0];
    if (row !== undefined) return { meta: this.remember(name, row), created: true };
    const meta = await this.getTopic(name);
    if (meta === undefined) throw new Error(`topic '${name}' was neither created nor found`);
    return { meta, created: false };
  }

  /** The topic, from the cache or the database; undefined if it does not exist. */
  async getTopic(name: string, client: Queryable = this.pool): Promise<TopicMeta | undefined> {
    const cached = this.topics.get(name);
    if (cached !== undefined) return cached;
    await this.ensureSchema();
    const result = await client.query<TopicRow>({
      name: `${this.schema}:topic`,
      text: this.sql.topic,
      values: [name],
    });
    const row = result.rows[0];
    return row === undefined ? undefined : this.remember(name, row);
  }

  private remember(name: string, row: TopicRow): TopicMeta {
    const meta: TopicMeta = {
      id: row.id,
      name,
      partitions: row.partitions,
      retentionMs: row.retention_ms ?? undefined,
      retentionBytes: row.retention_bytes ?? undefined,
    };
    this.topics.set(name, meta);
    this.topicsById.set(meta.id, meta);
    return meta;
  }

  async topicNames(): Promise<string[]> {
    await this.ensureSchema();
    const result = await this.pool.query<{ name: string }>(this.sql.topicNames);
    return result.rows.map((row) => row.name);
  }

  /**
   * Appends rows with one `append` call: one statement, so one transaction unless `client` is inside one. Returns
   * each row's offset, in input order. The rows' values must add up to less than 1 GiB (PostgreSQL's limit on one
   * parameter); see {@link appendLarge} for more.
   */
  async append(client: Queryable, rows: readonly AppendRow[]): Promise<number[]> {
    const n = rows.length;
    // Slots: the distinct partitions, sorted by topic and partition (the order the function locks them in).
    const slotOf = new Map<number, number>(); // topicId * 2^20 + partition -> slot, filled below
    const slotKeys: number[] = [];
    for (const row of rows) {
      const key = row.topicId * 1_048_576 + row.partition;
      if (!slotOf.has(key)) {
        slotOf.set(key, 0);
        slotKeys.push(key);
      }
    }
    slotKeys.sort((a, b) => a - b);
    const slots = slotKeys.length;
    const topicIds = new Array<number>(slots);
    const partitions = new Array<number>(slots);
    const counts = new Array<number>(slots).fill(0);
    const slotBytes = new Array<number>(slots).fill(0);
    slotKeys.forEach((key, index) => {
      slotOf.set(key, index);
      topicIds[index] = Math.floor(key / 1_048_576);
      partitions[index] = key % 1_048_576;
    });
    const recordSlots = new Array<number>(n);
    const ranks = new Array<number>(n);
    const before = new Array<number>(n);
    const keys = new Array<string>(n);
    const headers = new Array<string>(n);
    const values = new Array<Buffer>(n);
    const starts = new Array<number>(n);
    const lengths = new Array<number>(n);
    const timestamps = new Array<number>(n);
    let total = 0;
    for (let i = 0; i < n; i++) {
      const row = rows[i]!;
      const slot = slotOf.get(row.topicId * 1_048_576 + row.partition)!;
      recordSlots[i] = slot + 1; // SQL arrays count from 1
      ranks[i] = counts[slot]!;
      before[i] = slotBytes[slot]!;
      counts[slot]!++;
      slotBytes[slot] = slotBytes[slot]! + row.record.bytes;
      keys[i] = row.record.key;
      headers[i] = row.record.headersJson;
      values[i] = row.record.value;
      starts[i] = total + 1;
      lengths[i] = row.record.value.byteLength;
      total += row.record.value.byteLength;
      timestamps[i] = row.record.timestamp;
    }
    const result = await client.query<{ append: number }>({
      name: `${this.schema}:append`,
      text: this.sql.append,
      values: [
        topicIds,
        partitions,
        counts,
        slotBytes,
        recordSlots,
        ranks,
        before,
        keys,
        headers,
        Buffer.concat(values, total),
        starts,
        lengths,
        timestamps,
      ],
    });
    if (result.rows.length !== slots) {
      throw new Error(`append returned ${result.rows.length} base offsets for ${slots} partitions`);
    }
    const offsets = new Array<number>(n);
    for (let i = 0; i < n; i++) offsets[i] = result.rows[recordSlots[i]! - 1]!.append + ranks[i]!;
    return offsets;
  }

  /**
   * Appends more rows than one parameter can carry: in statements of at most {@link appendChunkBytes} of values,
   * inside one transaction (all or nothing). Rows are written in (topic, partition) order, so every statement locks
   * counter rows after those the previous ones locked and concurrent appends still cannot deadlock; per partition
   * the input order is kept. Returns each row's offset, in input order.
   */
  async appendLarge(rows: readonly AppendRow[]): Promise<number[]> {
    const order = rows
      .map((_, index) => index)
      .sort(
        (a, b) => rows[a]!.topicId - rows[b]!.topicId || rows[a]!.partition - rows[b]!.partition || a - b,
      );
    const offsets = new Array<number>(rows.length);
    const client = await this.pool.connect();
    let broken = false;
    try {
      await client.query('BEGIN');
      for (let start = 0; start < order.length;) {
        let end = start;
        let bytes = 0;
        while (end < order.length) {
          const size = rows[order[end]!]!.record.value.byteLength;
          if (end > start && bytes + size > appendChunkBytes) break;
          bytes += size;
          end++;
        }
        const chunk = order.slice(start, end);
        const written = await this.append(
          client,
          chunk.map((index) => rows[index]!),
        );
        chunk.forEach((index, i) => (offsets[index] = written[i]!));
        start = end;
      }
      await client.query('COMMIT');
      return offsets;
    } catch (error) {
      broken = isConnectionError(error);
      if (!broken) await client.query('ROLLBACK').catch(() => (broken = true));
      throw error;
    } finally {
      client.release(broken);
    }
  }

  /** Up to `maxRecords` records from `fromOffset` on (gaps left by retention skipped), about `maxBytes` at most. */
  async readPage(
    topicId: number,
    partition: number,
    fromOffset: number,
    maxRecords: number,
    maxBytes: number,
  ): Promise<DecodedRecord[]> {
    const result = await this.pool.query<RecordRow>({
      name: `${this.schema}:page`,
      text: this.sql.page,
      values: [topicId, partition, fromOffset, maxRecords, maxBytes],
    });
    return result.rows.map(toDecoded);
  }

  /** The records at `offsets` that still exist, in offset order. */
  async readRecords(
    topicId: number,
    partition: number,
    offsets: readonly number[],
  ): Promise<DecodedRecord[]> {
    const result = await this.pool.query<RecordRow>({
      name: `${this.schema}:records`,
      text: this.sql.records,
      values: [topicId, partition, offsets],
    });
    return result.rows.map(toDecoded);
  }

  async offsets(topicId: number, client: Queryable = this.pool): Promise<PartitionOffsets[]> {
    const result = await client.query<{ partition: number; low_offset: number; next_offset: number }>({
      name: `${this.schema}:offsets`,
      text: this.sql.offsets,
      values: [topicId],
    });
    return result.rows.map((row) => ({
      partition: row.partition,
      lowOffset: row.low_offset,
      highOffset: row.next_offset,
    }));
  }

  /** The first offset whose record is stored at or after `timestamp`, or the high offset if none. */
  async offsetForTime(
    topicId: number,
    partition: number,
    timestamp: number,
    client: Queryable = this.pool,
  ): Promise<number> {
    const result = await client.query<{ o: number }>({
      name: `${this.schema}:offsetForTime`,
      text: this.sql.offsetForTime,
      values: [topicId, partition, Math.ceil(Math.max(Number.MIN_SAFE_INTEGER, timestamp))],
    });
    return result.rows[0]?.o ?? 0;
  }

  /** Where `position` points in one partition, clamped to the stored range. */
  async resolvePosition(
    meta: TopicMeta,
    partition: number,
    position: StartPosition,
    client: Queryable = this.pool,
  ): Promise<number> {
    if (typeof position === 'object' && 'timestamp' in position) {
      return this.offsetForTime(meta.id, partition, position.timestamp, client);
    }
    const offsets = (await this.offsets(meta.id, client)).find((row) => row.partition === partition);
    if (offsets === undefined) return 0;
    if (position === 'earliest') return offsets.lowOffset;
    if (position === 'latest') return offsets.highOffset;
    return Math.min(Math.max(position.offset, offsets.lowOffset), offsets.highOffset);
  }

  /** Topics with a retention limit. */
  async retainedTopics(): Promise<TopicMeta[]> {
    await this.ensureSchema();
    const result = await this.pool.query<TopicRow & { name: string }>(this.sql.retainedTopics);
    return result.rows.map((row) => this.remember(row.name, row));
  }

  /**
   * Removes the oldest records of a partition that retention no longer keeps (at most 10,000 per call): those stored
   * before `now - retentionMs`, and the oldest while the partition holds more than `retentionBytes`. Returns how many
   * were removed.
   */
  async trim(meta: TopicMeta, partition: number, now: number): Promise<number> {
    const cutoff = meta.retentionMs === undefined ? null : now - meta.retentionMs;
    const state = await this.pool.query<{
      low_offset: number;
      next_offset: number;
      by_time: number;
      by_size: number;
    }>({
      name: `${this.schema}:trimState`,
      text: this.sql.trimState,
      values: [meta.id, partition, cutoff, meta.retentionBytes ?? null],
    });
    const row = state.rows[0];
    if (row === undefined) return 0;
    const cut = Math.min(Math.max(row.by_time, row.by_size), row.low_offset + retentionRecordsPerStatement);
    if (cut <= row.low_offset) return 0;
    const result = await this.pool.query<{ removed: number }>({
      name: `${this.schema}:trim`,
      text: this.sql.trim,
      values: [meta.id, partition, cut],
    });
    return result.rows[0]?.removed ?? 0;
  }
}

function toDecoded(row: RecordRow): DecodedRecord {
  const headers = JSON.parse(row.h) as Record<string, string>;
  return { offset: row.o, key: row.k, headers: Object.freeze(headers), value: row.v, timestamp: row.t };
}

/** A decoded record as the admin API returns it. */
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
