import { ErrorCode, TidingsError } from './errors.js';

/** Identifies one parked key: the events of `key` on `topic` that `group` holds back. */
export interface ParkedKeyRef {
  group: string;
  topic: string;
  key: string;
}

/** One event held in a parked key, with everything needed to process it later. */
export interface ParkedEvent {
  /** Where it was read from. */
  partition: number;
  offset: number;
  headers: Readonly<Record<string, string>>;
  value: Uint8Array;
  timestamp: number;
  /** When it was parked (ms since epoch). */
  parkedAt: number;
}

/** A parked key: the failing event first, then the events of the same key that arrived behind it. */
export interface ParkedKey extends ParkedKeyRef {
  /** Why the first event failed, the last time it was tried. */
  error: string;
  /** How many times the first event has been tried in all. */
  attempts: number;
  /** The events in the order they must be processed, the failing one first. */
  events: readonly ParkedEvent[];
}

/**
 * Where parked keys live. While a key is parked, every later event of that key is appended behind it instead of
 * being handled, so the key's order is kept; other keys keep flowing.
 *
 * Methods may return a value or a promise: the in-memory store answers synchronously, which keeps `isParked` (asked
 * for every delivery) off the microtask queue.
 */
export interface ParkingStore {
  /** True while the key holds at least one event. */
  isParked(ref: ParkedKeyRef): boolean | Promise<boolean>;
  /**
   * Appends `event` to the key, parking it if it was not. `failure` is given for the event that failed (it becomes
   * or updates the key's error); events queued behind a parked key are appended without one.
   */
  append(
    ref: ParkedKeyRef,
    event: ParkedEvent,
    failure?: { error: string; attempts: number },
  ): void | Promise<void>;
  /** Records a further failed try of the key's first event. */
  recordFailure(ref: ParkedKeyRef, failure: { error: string; attempts: number }): void | Promise<void>;
  /** The key, or undefined if it is not parked. */
  get(ref: ParkedKeyRef): ParkedKey | undefined | Promise<ParkedKey | undefined>;
  /** Every parked key of `group` (every group if absent), oldest first. */
  list(group?: string): ParkedKey[] | Promise<ParkedKey[]>;
  /** Removes the key's first event; the key is released when it holds no more events. */
  shift(ref: ParkedKeyRef): void | Promise<void>;
}

export interface MemoryParkingOptions {
  /** The most events one parked key may hold; past it, parking fails (and the delivery is retried later). Default 10,000. */
  maxEventsPerKey?: number;
}

const refId = (ref: ParkedKeyRef) => `${ref.group}\u0000${ref.topic}\u0000${ref.key}`;

/** An in-memory {@link ParkingStore}. Parked keys live as long as the process. */
export function createMemoryParking(options: MemoryParkingOptions = {}): ParkingStore {
  const maxEvents = options.maxEventsPerKey ?? 10_000;
  if (!Number.isInteger(maxEvents) || maxEvents < 1) {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `createMemoryParking: maxEventsPerKey must be a positive integer, got ${maxEvents}`,
    );
  }
  const keys = new Map<
    string,
    { ref: ParkedKeyRef; error: string; attempts: number; events: ParkedEvent[] }
  >();
  const snapshot = (entry: {
    ref: ParkedKeyRef;
    error: string;
    attempts: number;
    events: ParkedEvent[];
  }): ParkedKey => ({
    ...entry.ref,
    error: entry.error,
    attempts: entry.attempts,
    events: [...entry.events],
  });
  return {
    isParked: (ref) => keys.has(refId(ref)),
    append: (ref, event, failure) => {
      const id = refId(ref);
      let entry = keys.get(id);
      if (!entry) {
        entry = {
          ref: { group: ref.group, topic: ref.topic, key: ref.key },
          error: '',
          attempts: 0,
          events: [],
        };
        keys.set(id, entry);
      }
      if (entry.events.length >= maxEvents) {
        throw new TidingsError(
          ErrorCode.CONFLICT,
          `parked key "${ref.key}" of group "${ref.group}" on topic "${ref.topic}" already holds ${maxEvents} events; ` +
            `retry or skip it (bus.parked.retry / skip) before more can queue behind it`,
          { group: ref.group, topic: ref.topic, retryable: true },
        );
      }
      entry.events.push(event);
      if (failure) {
        entry.error = failure.error;
        entry.attempts = failure.attempts;
      }
    },
    recordFailure: (ref, failure) => {
      const entry = keys.get(refId(ref));
      if (!entry) return;
      entry.error = failure.error;
      entry.attempts = failure.attempts;
    },
    get: (ref) => {
      const entry = keys.get(refId(ref));
      return entry && snapshot(entry);
    },
    list: (group) =>
      [...keys.values()].filter((entry) => group === undefined || entry.ref.group === group).map(snapshot),
    shift: (ref) => {
      const id = refId(ref);
      const entry = keys.get(id);
      if (!entry) return;
      entry.events.shift();
      if (entry.events.length === 0) keys.delete(id);
    },
  };
}
