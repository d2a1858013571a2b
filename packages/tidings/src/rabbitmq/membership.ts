/**
 * Group membership. Each member announces itself on its group's stream (a heartbeat every `heartbeatMs`, and at
 * once when its holdings change; a `leave` record when it closes) and reads everyone else's announcements. A member
 * not heard from for `memberLeaseMs` is presumed gone. Every member computes the same assignment from the same view:
 * per topic, the live members subscribed to it ordered by join time, partition `p` going to member `p mod n`. The
 * assignment only decides which offset queues a member waits on; who actually owns a partition is decided by the
 * broker (single active consumer, see partition-owner.ts), so two members with briefly different views never both
 * consume one partition.
 */
import type { Position } from './positions.js';

export interface Announcement {
  type: 'hb' | 'leave';
  member: string;
  topics?: string[];
  joinedAt?: number;
  /** ms since epoch, by the announcer's clock. */
  at: number;
  /**
   * The partitions the member owns now, with its committed offset there (null, with the start position, while the
   * member has not seen a record of the partition yet).
   */
  owned?: OwnedPartition[];
  /** Partitions it is assigned (owned or waiting for). */
  assigned?: Array<{ topic: string; partition: number }>;
}

export interface OwnedPartition {
  topic: string;
  partition: number;
  committed: number | null;
  start?: Position;
}

export interface MemberState {
  member: string;
  topics: string[];
  joinedAt: number;
  lastSeen: number;
  owned: OwnedPartition[];
  assigned: Array<{ topic: string; partition: number }>;
}

export class MembershipView {
  private readonly members = new Map<string, MemberState>();
  private readonly left = new Set<string>();

  constructor(private readonly leaseMs: number) {}

  /** Applies an announcement; returns true if the set of live members or their topics changed. */
  apply(announcement: Announcement): boolean {
    if (
      typeof announcement !== 'object' ||
      announcement === null ||
      typeof announcement.member !== 'string'
    ) {
      return false;
    }
    if (announcement.type === 'leave') {
      this.left.add(announcement.member);
      return this.members.delete(announcement.member);
    }
    if (announcement.type !== 'hb' || this.left.has(announcement.member)) return false;
    const known = this.members.get(announcement.member);
    const state: MemberState = {
      member: announcement.member,
      topics: Array.isArray(announcement.topics) ? announcement.topics : [],
      joinedAt: typeof announcement.joinedAt === 'number' ? announcement.joinedAt : announcement.at,
      lastSeen: Math.max(known?.lastSeen ?? 0, announcement.at),
      owned: Array.isArray(announcement.owned) ? announcement.owned : [],
      assigned: Array.isArray(announcement.assigned) ? announcement.assigned : [],
    };
    const wasLive = known !== undefined && this.isLive(known, Date.now());
    this.members.set(announcement.member, state);
    return !wasLive || known.topics.join('\u0000') !== state.topics.join('\u0000');
  }

  private isLive(state: MemberState, now: number): boolean {
    return now - state.lastSeen <= this.leaseMs;
  }

  /** Live members, ordered by join time then id. Drops those whose lease ran out. */
  live(now = Date.now()): MemberState[] {
    const live: MemberState[] = [];
    for (const [id, state] of this.members) {
      if (this.isLive(state, now)) live.push(state);
      else if (now - state.lastSeen > this.leaseMs * 10) this.members.delete(id);
    }
    return live.sort(
      (a, b) => a.joinedAt - b.joinedAt || (a.member < b.member ? -1 : a.member > b.member ? 1 : 0),
    );
  }
}

/** The partitions of `topic` (with `partitions` partitions) that `member` is assigned among `live` members. */
export function assignedPartitions(
  live: readonly MemberState[],
  member: string,
  topic: string,
  partitions: number,
): number[] {
  const subscribers = live.filter((state) => state.topics.includes(topic));
  const index = subscribers.findIndex((state) => state.member === member);
  if (index < 0) return [];
  const mine: number[] = [];
  for (let partition = 0; partition < partitions; partition++) {
    if (partition % subscribers.length === index) mine.push(partition);
  }
  return mine;
}
