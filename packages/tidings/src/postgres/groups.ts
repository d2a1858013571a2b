/**
 * Consumer-group state in PostgreSQL, shared by every transport on the schema: groups, members with leases, and per
 * group partition the committed offset, the owner and the ownership epoch.
 *
 * Protocol (each rebalance step one transaction holding the group row's lock, `SELECT ... FOR UPDATE`, so steps of
 * different members and processes are serialized per group):
 * - A member row carries a lease (`lease_until`, ms by the server's clock) renewed every heartbeat. A member is live
 *   while its lease has not passed. The group's partitions are assigned round-robin over the live members
 *   subscribed to each topic, in join order (`seq`): every member computes the same assignment from the same rows.
 * - A member starts a partition only by claiming it: `owner = member, epoch = epoch + 1`, allowed when the row has no
 *   owner or its owner is not live. A member that is no longer assigned a partition it owns releases it
 *   (`owner = NULL`, with its final committed offset) once its deliveries of it are settled or its rebalance timeout
 *   passed. Every commit is `UPDATE ... WHERE owner = member AND epoch = E`: a stale owner's commit updates nothing,
 *   and the stale member drops the partition when it sees that.
 * - A member hands out records only while its own lease (as it last renewed it, measured from before the renewal
 *   was sent, less a margin) has not passed, so a paused or cut-off process stops before any other member may claim
 *   its partitions.
 * - Joins, leaves, claims and releases bump the group's `version` and send a `g:<group>` notification, on which
 *   the other members rebalance at once (and every heartbeat anyway).
 */
import * as os from 'node:os';
import { quoteSchema } from './schema.js';
import type { Queryable } from './storage.js';

export interface MemberRow {
  readonly seq: number;
  readonly memberId: string;
  readonly topics: readonly string[];
  readonly host: string;
  readonly processId: number;
  readonly leaseUntil: number;
}

export interface GroupPartitionRow {
  readonly topicId: number;
  readonly topic: string;
  readonly partition: number;
  readonly committed: number | null;
  readonly owner: string | null;
  readonly epoch: number;
  readonly deliveredHigh: number | null;
  readonly carry: string | null;
}

/** What a commit or release writes for a partition. */
export interface CommitState {
  committed: number;
  deliveredHigh: number;
  carry: string | null;
}

/** One fenced commit of a batch. */
export interface CommitEntry extends CommitState {
  group: string;
  topicId: number;
  partition: number;
  memberId: string;
  epoch: number;
}

/** Keys a group partition: `topicId:partition`. */
export function partitionKey(topicId: number, partition: number): string {
  return `${topicId}:${partition}`;
}

/**
 * The round-robin assignment: per topic (of `partitionCounts`), partition `p` goes to the `p mod n`-th live member
 * subscribed to it, in join order. Returns member id → partitions assigned.
 */
export function assign(
  live: readonly MemberRow[],
  partitionCounts: ReadonlyMap<string, number>,
): Map<string, Array<{ topic: string; partition: number }>> {
  const result = new Map<string, Array<{ topic: string; partition: number }>>();
  for (const member of live) result.set(member.memberId, []);
  const topics = [...partitionCounts.keys()].sort(compareStrings);
  for (const topic of topics) {
    const subscribers = live.filter((member) => member.topics.includes(topic));
    if (subscribers.length === 0) continue;
    const count = partitionCounts.get(topic)!;
    for (let partition = 0; partition < count; partition++) {
      result.get(subscribers[partition % subscribers.length]!.memberId)!.push({ topic, partition });
    }
  }
  return result;
}

export function partitionCounts(rows: readonly GroupPartitionRow[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const row of rows) counts.set(row.topic, Math.max(counts.get(row.topic) ?? 0, row.partition + 1));
  return counts;
}

export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** How long after its lease passed a member row is deleted (it stays harmless, not live, until then). */
const memberRowRetentionMs = 10 * 60_000;

/** The server's clock in ms since the epoch, as SQL. */
const serverNowMs = `(extract(epoch FROM clock_timestamp()) * 1000)::bigint`;

export const hostName = os.hostname();

interface MemberSqlRow {
  seq: number;
  member_id: string;
  topics: string[];
  host: string;
  process_id: number;
  lease_until: number;
}

interface PartitionSqlRow {
  topic_id: number;
  topic: string;
  partition: number;
  committed: number | null;
  owner: string | null;
  epoch: number;
  delivered_high: number | null;
  carry: string | null;
}

/** Statements over the group tables. Methods taking a `client` are meant to run inside its transaction. */
export class GroupTables {
  private readonly schema: string;
  private readonly sql;

  constructor(schema: string) {
    this.schema = schema;
    const s = quoteSchema(schema);
    this.sql = {
      lockGroup: `SELECT version, ${serverNowMs} AS now_ms FROM ${s}.consumer_groups WHERE name = $1 FOR UPDATE`,
      insertGroup: `INSERT INTO ${s}.consumer_groups (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`,
      groupVersion: `SELECT version FROM ${s}.consumer_groups WHERE name = $1`,
      groupNames: `SELECT name FROM ${s}.consumer_groups`,
      bump: `UPDATE ${s}.consumer_groups SET version = version + 1 WHERE name = $1`,
      upsertMember:
        `INSERT INTO ${s}.members (member_id, group_name, topics, host, process_id, joined_at, lease_until) ` +
        `VALUES ($1, $2, $3, $4, $5, $6, $6 + $7::bigint) ` +
        `ON CONFLICT (member_id) DO UPDATE SET lease_until = EXCLUDED.lease_until RETURNING (xmax = 0) AS inserted`,
      members:
        `SELECT seq, member_id, topics, host, process_id, lease_until FROM ${s}.members WHERE group_name = $1 ` +
        `ORDER BY seq`,
      membersNow:
        `SELECT seq, member_id, topics, host, process_id, lease_until, ${serverNowMs} AS now_ms ` +
        `FROM ${s}.members WHERE group_name = $1 ORDER BY seq`,
      deleteMember: `DELETE FROM ${s}.members WHERE member_id = $1`,
      deleteStaleMembers: `DELETE FROM ${s}.members WHERE group_name = $1 AND lease_until < $2`,
      ensurePartitions:
        `INSERT INTO ${s}.group_partitions (group_name, topic_id, partition) ` +
        `SELECT $1, t.id, generate_series(0, t.partitions - 1) FROM ${s}.topics t WHERE t.id = ANY($2::int[]) ` +
        `ON CONFLICT DO NOTHING`,
      rows:
        `SELECT g.topic_id, t.name AS topic, g.partition, g.committed, g.owner, g.epoch, g.delivered_high, g.carry ` +
        `FROM ${s}.group_partitions g JOIN ${s}.topics t ON t.id = g.topic_id WHERE g.group_name = $1`,
      claim:
        `UPDATE ${s}.group_partitions SET owner = $1, epoch = epoch + 1, committed = $2 ` +
        `WHERE group_name = $3 AND topic_id = $4 AND partition = $5 AND epoch = $6`,
      release:
        `UPDATE ${s}.group_partitions SET owner = NULL, committed = $1, delivered_high = $2, carry = $3 ` +
        `WHERE group_name = $4 AND topic_id = $5 AND partition = $6 AND owner = $7 AND epoch = $8`,
      releaseAll: `UPDATE ${s}.group_partitions SET owner = NULL WHERE group_name = $1 AND owner = $2`,
      // Offset commits do not wait for their WAL flush (`synchronous_commit = off` for this statement's transaction
      // only): a crash of the server may forget the last few hundred milliseconds of them, which only means those
      // records are delivered again. Claims, releases and resets stay synchronous, and flush these with them.
      commitMany:
        `UPDATE ${s}.group_partitions g SET committed = u.committed, delivered_high = u.delivered_high, ` +
        `carry = u.carry FROM unnest($1::text[], $2::int[], $3::int[], $4::text[], $5::bigint[], $6::bigint[], ` +
        `$7::bigint[], $8::text[]) AS u (group_name, topic_id, partition, owner, epoch, committed, delivered_high, ` +
        `carry), (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit ` +
        `WHERE g.group_name = u.group_name AND g.topic_id = u.topic_id AND g.partition = u.partition ` +
        `AND g.owner = u.owner AND g.epoch = u.epoch RETURNING g.group_name, g.topic_id, g.partition`,
      reset:
        `UPDATE ${s}.group_partitions SET committed = $1, owner = NULL, epoch = epoch + 1, delivered_high = NULL, ` +
        `carry = NULL WHERE group_name = $2 AND topic_id = $3 AND partition = $4`,
    };
  }

  private name(statement: string): string {
    return `${this.schema}:groups:${statement}`;
  }

  /**
   * Creates the group if needed and locks its row for the transaction. Returns its version and the server's time.
   */
  async lockGroup(
    client: Queryable,
    group: string,
    createdAt: number,
  ): Promise<{ version: number; nowMs: number }> {
    for (let attempt = 0; ; attempt++) {
      const result = await client.query<{ version: number; now_ms: number }>({
        name: this.name('lockGroup'),
        text: this.sql.lockGroup,
        values: [group],
      });
      const row = result.rows[0];
      if (row !== undefined) return { version: row.version, nowMs: row.now_ms };
      if (attempt > 0) throw new Error(`group '${group}' was neither created nor found`);
      await client.query({
        name: this.name('insertGroup'),
        text: this.sql.insertGroup,
        values: [group, createdAt],
      });
    }
  }

  /** The group's version, or undefined if the group does not exist. */
  async version(client: Queryable, group: string): Promise<number | undefined> {
    const result = await client.query<{ version: number }>({
      name: this.name('groupVersion'),
      text: this.sql.groupVersion,
      values: [group],
    });
    return result.rows[0]?.version;
  }

  async groupNames(client: Queryable): Promise<string[]> {
    const result = await client.query<{ name: string }>(this.sql.groupNames);
    return result.rows.map((row) => row.name);
  }

  async bump(client: Queryable, group: string): Promise<void> {
    await client.query({ name: this.name('bump'), text: this.sql.bump, values: [group] });
  }

  /** Inserts the member row, or renews its lease; true if it was inserted (a join). */
  async upsertMember(
    client: Queryable,
    group: string,
    memberId: string,
    topics: readonly string[],
    nowMs: number,
    leaseMs: number,
  ): Promise<boolean> {
    const result = await client.query<{ inserted: boolean }>({
      name: this.name('upsertMember'),
      text: this.sql.upsertMember,
      values: [memberId, group, topics, hostName, process.pid, nowMs, leaseMs],
    });
    return result.rows[0]?.inserted === true;
  }

  /** Every member row of the group in join order, live or not. */
  async members(client: Queryable, group: string): Promise<MemberRow[]> {
    const result = await client.query<MemberSqlRow>({
      name: this.name('members'),
      text: this.sql.members,
      values: [group],
    });
    return result.rows.map(toMember);
  }

  /** The live members in join order, by the server's clock now (outside a rebalance step). */
  async liveMembersNow(client: Queryable, group: string): Promise<MemberRow[]> {
    const result = await client.query<MemberSqlRow & { now_ms: number }>({
      name: this.name('membersNow'),
      text: this.sql.membersNow,
      values: [group],
    });
    return result.rows.filter((row) => row.lease_until > row.now_ms).map(toMember);
  }

  async deleteMember(client: Queryable, memberId: string): Promise<void> {
    await client.query({ name: this.name('deleteMember'), text: this.sql.deleteMember, values: [memberId] });
  }

  /** Deletes member rows whose lease passed long ago. */
  async deleteStaleMembers(client: Queryable, group: string, nowMs: number): Promise<void> {
    await client.query({
      name: this.name('deleteStaleMembers'),
      text: this.sql.deleteStaleMembers,
      values: [group, nowMs - memberRowRetentionMs],
    });
  }

  async ensurePartitions(client: Queryable, group: string, topicIds: readonly number[]): Promise<void> {
    await client.query({
      name: this.name('ensurePartitions'),
      text: this.sql.ensurePartitions,
      values: [group, topicIds],
    });
  }

  /** The group's partition rows, sorted by topic name and partition. */
  async rows(client: Queryable, group: string): Promise<GroupPartitionRow[]> {
    const result = await client.query<PartitionSqlRow>({
      name: this.name('rows'),
      text: this.sql.rows,
      values: [group],
    });
    return result.rows
      .map((row) => ({
        topicId: row.topic_id,
        topic: row.topic,
        partition: row.partition,
        committed: row.committed,
        owner: row.owner,
        epoch: row.epoch,
        deliveredHigh: row.delivered_high,
        carry: row.carry,
      }))
      .sort((a, b) => compareStrings(a.topic, b.topic) || a.partition - b.partition);
  }

  /** Takes ownership if the epoch is still `epoch`; the new epoch is `epoch + 1`. */
  async claim(
    client: Queryable,
    group: string,
    row: GroupPartitionRow,
    memberId: string,
    committed: number,
  ): Promise<boolean> {
    const result = await client.query({
      name: this.name('claim'),
      text: this.sql.claim,
      values: [memberId, committed, group, row.topicId, row.partition, row.epoch],
    });
    return (result.rowCount ?? 0) > 0;
  }

  /** Fenced release with the final committed state: false if `memberId` no longer owns it at `epoch`. */
  async release(
    client: Queryable,
    group: string,
    topicId: number,
    partition: number,
    memberId: string,
    epoch: number,
    state: CommitState,
  ): Promise<boolean> {
    const result = await client.query({
      name: this.name('release'),
      text: this.sql.release,
      values: [state.committed, state.deliveredHigh, state.carry, group, topicId, partition, memberId, epoch],
    });
    return (result.rowCount ?? 0) > 0;
  }

  /** Releases whatever `memberId` still owns in the group, keeping the committed offsets. */
  async releaseAll(client: Queryable, group: string, memberId: string): Promise<void> {
    await client.query({
      name: this.name('releaseAll'),
      text: this.sql.releaseAll,
      values: [group, memberId],
    });
  }

  /** Fenced commits in one statement; returns the keys (`group` NUL `topicId:partition`) that were written. */
  async commitMany(client: Queryable, entries: readonly CommitEntry[]): Promise<Set<string>> {
    const result = await client.query<{ group_name: string; topic_id: number; partition: number }>({
      name: this.name('commitMany'),
      text: this.sql.commitMany,
      values: [
        entries.map((e) => e.group),
        entries.map((e) => e.topicId),
        entries.map((e) => e.partition),
        entries.map((e) => e.memberId),
        entries.map((e) => e.epoch),
        entries.map((e) => e.committed),
        entries.map((e) => e.deliveredHigh),
        entries.map((e) => e.carry),
      ],
    });
    return new Set(result.rows.map((row) => commitKey(row.group_name, row.topic_id, row.partition)));
  }

  async reset(
    client: Queryable,
    group: string,
    topicId: number,
    partition: number,
    committed: number,
  ): Promise<void> {
    await client.query({
      name: this.name('reset'),
      text: this.sql.reset,
      values: [committed, group, topicId, partition],
    });
  }
}

export function commitKey(group: string, topicId: number, partition: number): string {
  return `${group}\u0000${partitionKey(topicId, partition)}`;
}

function toMember(row: MemberSqlRow): MemberRow {
  return {
    seq: row.seq,
    memberId: row.member_id,
    topics: row.topics,
    host: row.host,
    processId: row.process_id,
    leaseUntil: row.lease_until,
  };
}
