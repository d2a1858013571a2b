import { abortReason, type Clock } from '../core/clock.js';

/** A {@link Clock} that only moves when told to. */
export interface FakeClock extends Clock {
  /** Moves time forward by `durationMs`, resolving every sleep that falls due, in time order. */
  advance(durationMs: number): Promise<void>;
  /** Moves time forward to the next pending sleep and resolves it; false if none is pending. */
  runNext(): Promise<boolean>;
  /** The durations of every sleep requested so far, in request order (for asserting backoff). */
  readonly sleeps: readonly number[];
  /** How many sleeps are waiting. */
  pending(): number;
}

/**
 * A deterministic clock for tests: `now()` starts at `startMs` (default 2026-01-01T00:00:00Z) and sleeps resolve
 * only through `advance` or `runNext`.
 */
export function createFakeClock(startMs = Date.UTC(2026, 0, 1)): FakeClock {
  let now = startMs;
  let sequence = 0;
  const timers: Array<{ dueMs: number; sequence: number; resolve: () => void }> = [];
  const sleeps: number[] = [];
  const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

  const fireDue = async () => {
    timers.sort((a, b) => a.dueMs - b.dueMs || a.sequence - b.sequence);
    while (timers.length > 0 && timers[0]!.dueMs <= now) {
      timers.shift()!.resolve();
      await flush();
    }
  };

  return {
    now: () => now,
    sleep(durationMs, signal) {
      sleeps.push(durationMs);
      return new Promise<void>((resolve, reject) => {
        if (signal?.aborted) {
          reject(abortReason(signal));
          return;
        }
        const timer = {
          dueMs: now + Math.max(0, durationMs),
          sequence: sequence++,
          resolve: () => {
            signal?.removeEventListener('abort', onAbort);
            resolve();
          },
        };
        const onAbort = () => {
          const index = timers.indexOf(timer);
          if (index >= 0) timers.splice(index, 1);
          reject(abortReason(signal));
        };
        signal?.addEventListener('abort', onAbort, { once: true });
        timers.push(timer);
      });
    },
    async advance(durationMs) {
      const target = now + durationMs;
      for (;;) {
        await flush();
        timers.sort((a, b) => a.dueMs - b.dueMs || a.sequence - b.sequence);
        const next = timers[0];
        if (!next || next.dueMs > target) break;
        now = Math.max(now, next.dueMs);
        await fireDue();
      }
      now = target;
      await flush();
    },
    async runNext() {
      await flush();
      timers.sort((a, b) => a.dueMs - b.dueMs || a.sequence - b.sequence);
      const next = timers[0];
      if (!next) return false;
      now = Math.max(now, next.dueMs);
      await fireDue();
      return true;
    },
    get sleeps() {
      return sleeps;
    },
    pending: () => timers.length,
  };
}
