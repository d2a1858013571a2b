/**
 * Consumer-group state in the log database, shared by every process on the data directory: groups, members with
 * leases, and per group partition the committed offset, the owner and the ownership epoch.
 *
 * Protocol (each step one write transaction, so steps of different processes are serialized by SQLite's lock):
 * - A member row carries a lease (`lease_until`, ms since epoch) renewed every heartbeat. A member is live while its
 *   lease has not passed and, when it runs on this host, its process exists. The group's partitions are assigned
 *   round-robin over the live members subscribed to each topic, in join order (`seq`): every process computes the
 *   same assignment from the same rows.
 * - A member starts a partition only by claiming it: `owner = member, epoch = epoch + 1`, allowed when the row has no
 *   owner or its owner is not live. A member that is no longer assigned a partition it owns releases it
 *   (`owner = NULL`, with its final committed offset) once its deliveries of it are settled or its rebalance timeout
 *   passed. Every commit is conditional on `owner = member AND epoch = E`: a stale owner's commit updates nothing,
 *   and the stale member drops the partition when it sees that.
 * - A member hands out records only while its own lease (as it last renewed it, less a margin) has not passed, so a
 *   paused process stops before any other member may claim its partitions.
 * - Joins, leaves, claims and releases bump the group's `version`, which members poll to rebalance promptly.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import type { Database } from './db.js';

export interface MemberRow {
  readonly seq: number;
  readonly memberId: string;
  readonly topics: readonly string[];
  readonly host: string;
  readonly processId: number;
  readonly leaseUntil: number;
}

export interface GroupPartitionRow {
  readonly topic: string;
  readonly partition: number;
  readonly committed: number | null;
  readonly owner: string | null;
  readonly epoch: number;
  readonly deliveredHigh: number | null;
  readonly carry: string | null;
}

/** Identifies this host and pid namespace: process liveness can be checked for members with the same host id. */
export const hostId: string = (() => {
  let namespace = '';
  try {
    namespace = fs.readlinkSync('/proc/self/ns/pid');
  } catch {
    // Not Linux (or no /proc): the host name alone.
  }
  return `${os.hostname()}|${namespace}`;
})();

/** True unless the process is known not to exist. */
export function processExists(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** Keys a group partition: `topic` NUL `partition`. */
export function partitionKey(topic: string, partition: number): string {
  return `${topic}\u0000${partition}`;
}

/**
 * The round-robin assignment: per topic (of `partitionCounts`), partition `p` goes to the `p mod n`-th live member
 * subscribed to it, in join order. Returns member id → keys assigned.
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

export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** How long after its lease passed a member row is deleted (it stays harmless, not live, until then). */
const memberRowRetentionMs = 10 * 60_000;

/** Statements over the group tables. Every write method is meant to run inside a write transaction. */
export class GroupTables {
  private readonly stmt;

  constructor(db: Database) {
    this.stmt = {
      groupNames: db.prepare<[], string>('SELECT name FROM consumer_groups').pluck(),
      groupVersion: db
        .prepare<[string], number>('SELECT version FROM consumer_groups WHERE name = ?')
        .pluck(),
      insertGroup: db.prepare(
        'INSERT INTO consumer_groups (name, version, created_at) VALUES (?, 0, ?) ON CONFLICT (name) DO NOTHING',
      ),
      bumpGroup: db.prepare('UPDATE consumer_groups SET version = version + 1 WHERE name = ?'),
      insertMember: db.prepare(
        'INSERT INTO members (group_name, member_id, topics, host, process_id, joined_at, lease_until) ' +
          'VALUES (?, ?, ?, ?, ?, ?, ?)',
      ),
      renewMember: db.prepare('UPDATE members SET lease_until = ? WHERE member_id = ?'),
      deleteMember: db.prepare('DELETE FROM members WHERE member_id = ?'),
      members: db.prepare<
        [string],
        {
          seq: number;
          member_id: string;
          topics: string;
          host: string;
          process_id: number;
          lease_until: number;
        }
      >(
        'SELECT seq, member_id, topics, host, process_id, lease_until FROM members WHERE group_name = ? ORDER BY seq',
      ),
      deleteStaleMembers: db.prepare('DELETE FROM members WHERE group_name = ? AND lease_until < ?'),
      ensurePartition: db.prepare(
        'INSERT INTO group_partitions (group_name, topic, partition) VALUES (?, ?, ?) ' +
          'ON CONFLICT (group_name, topic, partition) DO NOTHING',
      ),
      rows: db.prepare<
        [string],
        {
          topic: string;
          partition: number;
          committed: number | null;
          owner: string | null;
          epoch: number;
          delivered_high: number | null;
          carry: string | null;
        }
      >(
        'SELECT topic, partition, committed, owner, epoch, delivered_high, carry FROM group_partitions ' +
          'WHERE group_name = ? ORDER BY topic, partition',
      ),
      claim: db.prepare(
        'UPDATE group_partitions SET owner = ?, epoch = epoch + 1, committed = ? ' +
          'WHERE group_name = ? AND topic = ? AND partition = ? AND epoch = ?',
      ),
      commit: db.prepare(
        'UPDATE group_partitions SET committed = ?, delivered_high = ?, carry = ? ' +
          'WHERE group_name = ? AND topic = ? AND partition = ? AND owner = ? AND epoch = ?',
      ),
      release: db.prepare(
        'UPDATE group_partitions SET owner = NULL, committed = ?, delivered_high = ?, carry = ? ' +
          'WHERE group_name = ? AND topic = ? AND partition = ? AND owner = ? AND epoch = ?',
      ),
      persistDeliveredHigh: db.prepare(
        'UPDATE group_partitions SET delivered_high = MAX(COALESCE(delivered_high, 0), ?) ' +
          'WHERE group_name = ? AND topic = ? AND partition = ? AND owner = ? AND epoch = ?',
      ),
      releaseAll: db.prepare('UPDATE group_partitions SET owner = NULL WHERE group_name = ? AND owner = ?'),
      reset: db.prepare(
        'UPDATE group_partitions SET committed = ?, owner = NULL, epoch = epoch + 1, delivered_high = NULL, ' +
          'carry = NULL WHERE group_name = ? AND topic = ? AND partition = ?',
      ),
    };
  }

  groupNames(): string[] {
    return this.stmt.groupNames.all();
  }

  /** The group's version, or undefined if the group does not exist. */
  version(group: string): number | undefined {
    return this.stmt.groupVersion.get(group);
  }

  ensureGroup(group: string, now: number): void {
    this.stmt.insertGroup.run(group, now);
  }

  bump(group: string): void {
    this.stmt.bumpGroup.run(group);
  }

  insertMember(
    group: string,
    memberId: string,
    topics: readonly string[],
    now: number,
    leaseUntil: number,
  ): void {
    this.stmt.insertMember.run(group, memberId, JSON.stringify(topics), hostId, process.pid, now, leaseUntil);
  }

  /** Renews a lease; false if the member row is gone. */
  renewMember(memberId: string, leaseUntil: number): boolean {
    return this.stmt.renewMember.run(leaseUntil, memberId).changes > 0;
  }

  deleteMember(memberId: string): void {
    this.stmt.deleteMember.run(memberId);
  }

  /** Every member row of the group in join order, live or not. */
  members(group: string): MemberRow[] {
    return this.stmt.members.all(group).map((row) => ({
      seq: row.seq,
      memberId: row.member_id,
      topics: JSON.parse(row.topics) as string[],
      host: row.host,
      processId: row.process_id,
      leaseUntil: row.lease_until,
    }));
  }

  /** The live members in join order: lease not passed and, on this host, the process still exists. */
  liveMembers(group: string, now: number): MemberRow[] {
    return this.members(group).filter((member) => isLive(member, now));
  }

  /** Deletes member rows whose lease passed long ago. */
  deleteStaleMembers(group: string, now: number): void {
    this.stmt.deleteStaleMembers.run(group, now - memberRowRetentionMs);
  }

  ensurePartitions(group: string, topic: string, partitions: number): void {
    for (let partition = 0; partition < partitions; partition++)
      this.stmt.ensurePartition.run(group, topic, partition);
  }

  rows(group: string): GroupPartitionRow[] {
    return this.stmt.rows.all(group).map((row) => ({
      topic: row.topic,
      partition: row.partition,
      committed: row.committed,
      owner: row.owner,
      epoch: row.epoch,
      deliveredHigh: row.delivered_high,
      carry: row.carry,
    }));
  }

  /** Takes ownership if the epoch is still `epoch`; the new epoch is `epoch + 1`. */
  claim(
    group: string,
    topic: string,
    partition: number,
    memberId: string,
    epoch: number,
    committed: number,
  ): boolean {
    return this.stmt.claim.run(memberId, committed, group, topic, partition, epoch).changes > 0;
  }

  /** Fenced commit: false if `memberId` no longer owns the partition at `epoch`. */
  commit(
    group: string,
    topic: string,
    partition: number,
    memberId: string,
    epoch: number,
    state: { committed: number; deliveredHigh: number; carry: string | null },
  ): boolean {
    return (
      this.stmt.commit.run(
        state.committed,
        state.deliveredHigh,
        state.carry,
        group,
        topic,
        partition,
        memberId,
        epoch,
      ).changes > 0
    );
  }

  /** Fenced release with the final committed state: false if `memberId` no longer owns it at `epoch`. */
  release(
    group: string,
    topic: string,
    partition: number,
    memberId: string,
    epoch: number,
    state: { committed: number; deliveredHigh: number; carry: string | null },
  ): boolean {
    return (
      this.stmt.release.run(
        state.committed,
        state.deliveredHigh,
        state.carry,
        group,
        topic,
        partition,
        memberId,
        epoch,
      ).changes > 0
    );
  }

  /** Fenced: raises `delivered_high` to at least `high`; false if `memberId` no longer owns it at `epoch`. */
  persistDeliveredHigh(
    group: string,
    topic: string,
    partition: number,
    memberId: string,
    epoch: number,
    high: number,
  ): boolean {
    return this.stmt.persistDeliveredHigh.run(high, group, topic, partition, memberId, epoch).changes > 0;
  }

  /** Releases whatever `memberId` still owns in the group, keeping the committed offsets. */
  releaseAll(group: string, memberId: string): number {
    return this.stmt.releaseAll.run(group, memberId).changes;
  }

  reset(group: string, topic: string, partition: number, committed: number): void {
    this.stmt.reset.run(committed, group, topic, partition);
  }
}

export function isLive(member: MemberRow, now: number): boolean {
  if (member.leaseUntil <= now) return false;
  return member.host !== hostId || processExists(member.processId);
}
