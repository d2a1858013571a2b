/**
 * One transport's view of one consumer group: a watch on the group's member and ownership entries, shared by every
 * member of the group in this transport, which it wakes on each change. The view may lag the bucket; decisions
 * taken from it are made safe by the compare-and-set writes of the claim and release steps.
 */
import type { BucketEntry, GroupBucket } from './bucket.js';
import { liveMembers, type MemberValue, type OwnershipValue } from './groups.js';
import type { NatsNames } from './names.js';

/** What a group session notifies: the members of the group in this transport. */
export interface GroupListener {
  onGroupChange(): void;
}

export class GroupSession {
  readonly group: string;
  private readonly bucket: GroupBucket;
  private readonly names: NatsNames;
  private readonly entries = new Map<string, BucketEntry>();
  /** Delete markers of member entries, until someone purges them. */
  private readonly tombstones = new Map<string, BucketEntry>();
  private readonly listeners = new Set<GroupListener>();
  private watch: { stop(): void } | undefined;
  private ready = false;
  /** The latest server time seen in a write, and when (local monotonic ms) it was seen: see `serverNowMs`. */
  private serverTimeMs = 0;
  private serverTimeSeenAt = 0;
  private readonly onError: (error: unknown) => void;

  constructor(group: string, bucket: GroupBucket, names: NatsNames, onError: (error: unknown) => void) {
    this.group = group;
    this.bucket = bucket;
    this.names = names;
    this.onError = onError;
  }

  /** True once the watch has caught up with the bucket (and again after each restart of the watch). */
  get isReady(): boolean {
    return this.ready;
  }

  attach(listener: GroupListener): void {
    this.listeners.add(listener);
    this.watch ??= this.bucket.watch(
      this.names.groupFilter(this.group),
      (snapshot) => {
        this.entries.clear();
        this.tombstones.clear();
        for (const [key, entry] of snapshot) {
          this.observe(entry);
          if (!entry.deleted) this.entries.set(key, entry);
          else if (key.startsWith('m.')) this.tombstones.set(key, entry);
        }
        this.ready = true;
        this.notify();
      },
      (entry) => {
        this.observe(entry);
        if (entry.deleted) {
          this.entries.delete(entry.key);
          if (entry.key.startsWith('m.')) this.tombstones.set(entry.key, entry);
        } else {
          this.entries.set(entry.key, entry);
          this.tombstones.delete(entry.key);
        }
        this.notify();
      },
      (error) => {
        this.ready = false;
        this.onError(error);
      },
    );
  }

  /** Removes a listener; the watch stops with the last one. Returns true if none is left. */
  detach(listener: GroupListener): boolean {
    this.listeners.delete(listener);
    if (this.listeners.size > 0) return false;
    this.watch?.stop();
    this.watch = undefined;
    this.ready = false;
    this.entries.clear();
    this.tombstones.clear();
    return true;
  }

  private observe(entry: BucketEntry): void {
    if (entry.writtenAtMs > this.serverTimeMs) {
      this.serverTimeMs = entry.writtenAtMs;
      this.serverTimeSeenAt = performance.now();
    }
  }

  /**
   * The server's clock now, estimated from the latest write the watch delivered (members renew every heartbeat, so
   * one is always recent) plus the local monotonic time since: leases written by the server's clock are judged by
   * it too, whatever this host's clock says. Slightly behind the server (by the delivery delay), which errs on the
   * side of waiting longer for a lease to pass. The local clock before anything was seen.
   */
  serverNowMs(fallbackMs: number): number {
    if (this.serverTimeMs === 0) return fallbackMs;
    return this.serverTimeMs + (performance.now() - this.serverTimeSeenAt);
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener.onGroupChange();
  }

  /** The member entries of the group, as last seen. */
  memberEntries(): Array<BucketEntry<MemberValue>> {
    const prefix = `m.`;
    const out: Array<BucketEntry<MemberValue>> = [];
    for (const entry of this.entries.values()) {
      if (entry.key.startsWith(prefix)) out.push(entry as BucketEntry<MemberValue>);
    }
    return out;
  }

  /** Delete markers of member entries seen by the watch, with when they were written. */
  memberTombstones(): BucketEntry[] {
    return [...this.tombstones.values()];
  }

  /** Forgets a tombstone once purged. */
  forgetTombstone(key: string): void {
    this.tombstones.delete(key);
  }

  /** The ownership entries of the group, as last seen. */
  ownershipEntries(): Array<BucketEntry<OwnershipValue>> {
    const out: Array<BucketEntry<OwnershipValue>> = [];
    for (const entry of this.entries.values()) {
      if (entry.key.startsWith('o.')) out.push(entry as BucketEntry<OwnershipValue>);
    }
    return out;
  }

  member(memberId: string): BucketEntry<MemberValue> | undefined {
    return this.entries.get(this.names.memberKey(this.group, memberId)) as
      BucketEntry<MemberValue> | undefined;
  }

  live(nowMs: number): MemberValue[] {
    return liveMembers(this.memberEntries(), nowMs);
  }

  ownership(topic: string, partition: number): BucketEntry<OwnershipValue> | undefined {
    return this.entries.get(this.names.ownershipKey(this.group, topic, partition)) as
      BucketEntry<OwnershipValue> | undefined;
  }
}
