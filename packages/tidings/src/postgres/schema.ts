/**
 * The tables the PostgreSQL transport keeps in its schema, and the one function it calls to append records.
 *
 * - `topics`: name, partition count, retention. `partitions`: one row per topic partition holding the next offset
 *   (the per-partition counter), the low offset (moved by retention) and the running byte count.
 * - `records`: every record of every topic, keyed by (topic, partition, offset); headers as the text of a JSON
 *   object (`headers::jsonb ->> 'ce-type'` reads one; `text` because `jsonb` input costs more than the rest of the
 *   insert), value in `bytea`, `start_bytes` the partition's byte count before the record (for size retention).
 * - `consumer_groups`, `members` (with leases) and `group_partitions` (committed offset, owner, ownership epoch):
 *   see `groups.ts` for the protocol.
 *
 * Everything is created with `IF NOT EXISTS` inside one transaction under an advisory lock, so many transports may
 * start at once against an empty schema.
 */

/** Bumped when the tables change; stored in `schema_version`. */
export const schemaVersion = 1;

/** Quotes a validated schema name (see `options.ts`: lower-case identifier) for SQL text. */
export function quoteSchema(schema: string): string {
  return `"${schema}"`;
}

/** The statements creating the schema, in order. */
export function schemaStatements(schema: string): string[] {
  const s = quoteSchema(schema);
  return [
    `CREATE SCHEMA IF NOT EXISTS ${s}`,
    `CREATE TABLE IF NOT EXISTS ${s}.schema_version (version int NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS ${s}.topics (
      id serial PRIMARY KEY,
      name text NOT NULL UNIQUE,
      partitions int NOT NULL,
      retention_ms bigint,
      retention_bytes bigint,
      created_at bigint NOT NULL
    )`,
    `CREATE TABLE IF NOT EXISTS ${s}.partitions (
      topic_id int NOT NULL REFERENCES ${s}.topics (id) ON DELETE CASCADE,
      partition int NOT NULL,
      next_offset bigint NOT NULL DEFAULT 0,
      low_offset bigint NOT NULL DEFAULT 0,
      total_bytes bigint NOT NULL DEFAULT 0,
      PRIMARY KEY (topic_id, partition)
    )`,
    `CREATE TABLE IF NOT EXISTS ${s}.records (
      topic_id int NOT NULL,
      partition int NOT NULL,
      "offset" bigint NOT NULL,
      "timestamp" bigint NOT NULL,
      start_bytes bigint NOT NULL,
      key text NOT NULL,
      headers text NOT NULL,
      value bytea NOT NULL,
      PRIMARY KEY (topic_id, partition, "offset")
    )`,
    // Timestamps grow with insertion order, so a BRIN index (a few pages, nearly free to maintain) lets a time lookup
    // skip the old part of the table.
    `CREATE INDEX IF NOT EXISTS records_timestamp_brin ON ${s}.records USING brin ("timestamp")`,
    `CREATE TABLE IF NOT EXISTS ${s}.consumer_groups (
      name text PRIMARY KEY,
      version bigint NOT NULL DEFAULT 0,
      created_at bigint NOT NULL
    )`,
    `CREATE TABLE IF NOT EXISTS ${s}.members (
      member_id text PRIMARY KEY,
      group_name text NOT NULL,
      seq bigserial NOT NULL,
      topics text[] NOT NULL,
      host text NOT NULL,
      process_id int NOT NULL,
      joined_at bigint NOT NULL,
      lease_until bigint NOT NULL
    )`,
    `CREATE INDEX IF NOT EXISTS members_group ON ${s}.members (group_name, seq)`,
    `CREATE TABLE IF NOT EXISTS ${s}.group_partitions (
      group_name text NOT NULL,
      topic_id int NOT NULL,
      partition int NOT NULL,
      committed bigint,
      owner text,
      epoch bigint NOT NULL DEFAULT 0,
      delivered_high bigint,
      carry text,
      PRIMARY KEY (group_name, topic_id, partition)
    )`,
    // One call appends a batch of records to any partitions of any topics. The caller groups the records by
    // partition: per partition (its "slot", sorted by topic and partition) the count and bytes; per record its slot,
    // its rank among the slot's records and the bytes before it in the slot. The function takes a dense run of offsets
    // from each partition's counter row, one UPDATE at a time in slot order (so concurrent appends lock counter rows
    // in the same order and never deadlock), then inserts every record with one INSERT, and returns each slot's first
    // offset. Values arrive as one binary parameter cut by start and length (no hex-encoded array to build and
    // parse). It runs as one statement, hence in one transaction: all or nothing.
    `CREATE OR REPLACE FUNCTION ${s}.append(
      p_topic int[], p_partition int[], p_count bigint[], p_bytes bigint[],
      r_slot int[], r_rank bigint[], r_before bigint[], r_key text[], r_headers text[], r_values bytea,
      r_start int[], r_length int[], r_timestamp bigint[]
    ) RETURNS SETOF bigint LANGUAGE plpgsql AS $fn$
    DECLARE
      bases bigint[] := '{}';
      base_bytes bigint[] := '{}';
      b bigint;
      bb bigint;
    BEGIN
      FOR i IN 1 .. coalesce(array_length(p_topic, 1), 0) LOOP
        UPDATE ${s}.partitions
        SET next_offset = next_offset + p_count[i], total_bytes = total_bytes + p_bytes[i]
        WHERE topic_id = p_topic[i] AND partition = p_partition[i]
        RETURNING next_offset - p_count[i], total_bytes - p_bytes[i] INTO b, bb;
        IF NOT FOUND THEN
          RAISE EXCEPTION 'partition % of topic id % does not exist', p_partition[i], p_topic[i];
        END IF;
        bases := bases || b;
        base_bytes := base_bytes || bb;
      END LOOP;
      INSERT INTO ${s}.records (topic_id, partition, "offset", "timestamp", start_bytes, key, headers, value)
      SELECT p_topic[u.slot], p_partition[u.slot], bases[u.slot] + u.rank, u.ts, base_bytes[u.slot] + u.before, u.k,
        u.h, substring(r_values FROM u.st FOR u.ln)
      FROM unnest(r_slot, r_rank, r_before, r_key, r_headers, r_start, r_length, r_timestamp)
        AS u (slot, rank, before, k, h, st, ln, ts);
      RETURN QUERY SELECT unnest(bases);
    END
    $fn$`,
    `DELETE FROM ${s}.schema_version`,
    `INSERT INTO ${s}.schema_version (version) VALUES (${schemaVersion})`,
  ];
}

/** A stable advisory-lock key for creating `schema`, so concurrent creators wait for each other. */
export function schemaLockKey(schema: string): string {
  return `tidings.schema.${schema}`;
}
