/**
 * The consumer-group protocol's shared state, kept in the group bucket (see `bucket.ts`), and the pure rules every
 * member applies to it.
 *
 * - `g.<group>`: the group's registration, written once (so `listGroups` lists groups without live members).
 * - `m.<group>.<member>`: a member's lease, rewritten every heartbeat. A member is live while the server time of
 *   its last write plus its `leaseMs` has not passed.
 * - `o.<group>.<topic>.<partition>`: the partition's ownership: `owner` (a member id, or null once released),
 *   `epoch` (bumped by every claim and reset), `consumer` (the durable JetStream consumer of that epoch, whose ack
 *   floor is the committed position while the owner runs), `committed` (the position as of the last claim, release
 *   or reset) and `carry` (delivery counts and delayed nacks handed to the next owner).
 *
 * Assignment is round-robin per topic over the live members subscribed to it, ordered by join time then id: every
 * member computes the same answer from the same entries. A member starts a partition only by claiming it with a
 * compare-and-set on the ownership entry, allowed when the entry has no owner, its owner is not live, or it is
 * the member itself. The claim creates the epoch's consumer at the committed position and deletes the previous
 * epoch's consumer, so acknowledgements of a fenced owner can no longer move the group's position.
 */
import type { BucketEntry } from './bucket.js';

export interface GroupValue {
  group: string;
  createdAtMs: number;
}

export interface MemberValue {
  group: string;
  memberId: string;
  topics: string[];
  leaseMs: number;
  joinedAtMs: number;
}

/** What an owner hands to the next one so the group's view of a partition continues. */
export interface Carry {
  /** The highest offset handed out by earlier owners: offsets up to it were delivered at least once. */
  deliveredHigh: number;
  /** Delivery counts above the committed offset, where higher than "1 if at most deliveredHigh". */
  counts: Record<string, number>;
  /** Nacked offsets still waiting out their delay: offset → due time, ms since the epoch. */
  delays: Record<string, number>;
}

export interface OwnershipValue {
  group: string;
  topic: string;
  partition: number;
  owner: string | null;
  epoch: number;
  consumer: string | null;
  committed: number | null;
  carry?: Carry;
}

/** Carry entries kept at most per partition (delivery counts beyond it fall back to the deliveredHigh rule). */
export const carryEntriesMax = 2_000;

export function isLive(entry: BucketEntry<MemberValue> | undefined, nowMs: number): boolean {
  if (entry === undefined || entry.deleted || entry.value === undefined) return false;
  return entry.writtenAtMs + entry.value.leaseMs > nowMs;
}

/** Live members, in assignment order (join time, then id). */
export function liveMembers(entries: Iterable<BucketEntry<MemberValue>>, nowMs: number): MemberValue[] {
  const live: MemberValue[] = [];
  for (const entry of entries) if (isLive(entry, nowMs)) live.push(entry.value!);
  return live.sort((a, b) => a.joinedAtMs - b.joinedAtMs || compareStrings(a.memberId, b.memberId));
}

/**
 * The round-robin assignment: per topic, partition `p` goes to the `p mod n`-th live member subscribed to it.
 * Returns member id → its partitions, sorted by topic then partition.
 */
export function assign(
  live: readonly MemberValue[],
  partitionCounts: ReadonlyMap<string, number>,
): Map<string, Array<{ topic: string; partition: number }>> {
  const result = new Map<string, Array<{ topic: string; partition: number }>>();
  for (const member of live) result.set(member.memberId, []);
  for (const topic of [...partitionCounts.keys()].sort(compareStrings)) {
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
