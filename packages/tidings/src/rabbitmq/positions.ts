/**
 * A group's committed position in one partition, as kept in the partition's offset queue. Either a concrete offset
 * (the next record the group will read) or, until the group has seen its first record there, where it starts.
 */
import type { StartPosition } from '../core/transport.js';
import type { StreamStart } from './streams.js';

export type Position = { offset: number } | { timestamp: number } | { earliest: true };

/** The body of an offset-queue message. */
export interface Commit {
  /** Unique per commit, so a member can tell its own latest commit from older ones. */
  id: string;
  position: Position;
  /** Deliveries so far of records at or above the committed offset that were handed out, by offset. */
  counts?: Record<string, number>;
  /** The highest offset handed out when this was committed. */
  delivered?: number;
  /** ms since epoch. */
  at: number;
  /**
   * When the group's position here was last reset by `admin.resetOffsets` (ms since epoch), carried by every later
   * commit of the owners. A reset cannot remove a commit a reader holds at that moment (a purge leaves what is handed
   * out; the reader's channel gives it back later), so commits of an older reset lose to newer ones whatever their
   * offset. Absent: never reset.
   */
  resetAt?: number;
}

/** The position a new group starts from. `latest` is the time of the `subscribe` call: what is published after it. */
export function positionOf(start: StartPosition, subscribedAt: number): Position {
  if (start === 'earliest') return { earliest: true };
  if (start === 'latest') return { timestamp: subscribedAt };
  if ('offset' in start) return { offset: start.offset };
  return { timestamp: start.timestamp };
}

export function streamStartOf(position: Position): StreamStart {
  if ('offset' in position) return position.offset;
  if ('timestamp' in position) return { timestamp: position.timestamp };
  return 'first';
}

/**
 * The commit that stands of two: the one of the later reset; then a concrete offset beats a start position, and
 * the higher offset wins.
 */
export function laterCommit(a: Commit, b: Commit): Commit {
  const ar = a.resetAt ?? 0;
  const br = b.resetAt ?? 0;
  if (ar !== br) return br > ar ? b : a;
  const ao = 'offset' in a.position ? a.position.offset : undefined;
  const bo = 'offset' in b.position ? b.position.offset : undefined;
  if (ao === undefined && bo === undefined) return b.at >= a.at ? b : a;
  if (ao === undefined) return b;
  if (bo === undefined) return a;
  return bo > ao || (bo === ao && b.at >= a.at) ? b : a;
}

export function parseCommit(content: Buffer): Commit | undefined {
  try {
    const value = JSON.parse(content.toString('utf8')) as Partial<Commit>;
    if (typeof value !== 'object' || value === null || typeof value.position !== 'object') return undefined;
    const position = value.position as Partial<Record<string, unknown>>;
    if (
      typeof position.offset === 'number' ||
      typeof position.timestamp === 'number' ||
      position.earliest === true
    ) {
      return {
        id: typeof value.id === 'string' ? value.id : '',
        position: value.position,
        ...(value.counts === undefined ? {} : { counts: value.counts }),
        ...(typeof value.delivered === 'number' ? { delivered: value.delivered } : {}),
        at: typeof value.at === 'number' ? value.at : 0,
        ...(typeof value.resetAt === 'number' ? { resetAt: value.resetAt } : {}),
      };
    }
  } catch {
    // not a commit
  }
  return undefined;
}
