import { ErrorCode, TidingsError } from './errors.js';

/**
 * Where an idempotent consumer remembers which events a group has already handled, keyed by (group, event id).
 *
 * The in-memory store here dedupes within one process's lifetime. Durable stores (the embedded log's data
 * directory, and the transactional inbox that commits with the consumer's own database writes) implement the same
 * interface.
 */
export interface InboxStore {
  /** True if `eventId` was recorded for `group` and has not expired. */
  has(group: string, eventId: string): boolean | Promise<boolean>;
  /** Records `eventId` as handled by `group`. Recording twice is harmless. */
  add(group: string, eventId: string): void | Promise<void>;
}

export interface MemoryInboxOptions {
  /** The most ids kept per group; the oldest are forgotten first. Default 100,000. */
  maxEntriesPerGroup?: number;
}

/**
 * An in-memory {@link InboxStore}: a bounded, insertion-ordered set of ids per group. Duplicates older than the
 * newest `maxEntriesPerGroup` ids are no longer recognised, so size it above the redelivery window you expect.
 */
export function createMemoryInbox(options: MemoryInboxOptions = {}): InboxStore {
  const max = options.maxEntriesPerGroup ?? 100_000;
  if (!Number.isInteger(max) || max < 1) {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `createMemoryInbox: maxEntriesPerGroup must be a positive integer, got ${max}`,
    );
  }
  const groups = new Map<string, Set<string>>();
  return {
    has: (group, eventId) => groups.get(group)?.has(eventId) ?? false,
    add: (group, eventId) => {
      let ids = groups.get(group);
      if (!ids) groups.set(group, (ids = new Set()));
      if (ids.has(eventId)) return;
      ids.add(eventId);
      if (ids.size > max) {
        const oldest = ids.values().next().value;
        if (oldest !== undefined) ids.delete(oldest);
      }
    },
  };
}
