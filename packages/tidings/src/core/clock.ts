/**
 * Time as an injectable dependency, so retries, timeouts and leases can run under a fake clock in tests
 * (see `tidings/testing`'s `createFakeClock`).
 */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  /**
   * Resolves after `durationMs`; rejects with the signal's reason if `signal` aborts first.
   * A duration of zero or less resolves on the next macrotask.
   */
  sleep(durationMs: number, signal?: AbortSignal): Promise<void>;
}

/** The real clock: `Date.now()` and `setTimeout`. */
export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (durationMs, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(abortReason(signal));
        return;
      }
      const onAbort = () => {
        clearTimeout(timer);
        reject(abortReason(signal));
      };
      const timer = setTimeout(
        () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        Math.max(0, durationMs),
      );
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

/** The reason a signal aborted, always as an Error. */
export function abortReason(signal: AbortSignal | undefined): Error {
  const reason: unknown = signal?.reason;
  if (reason instanceof Error) return reason;
  return new Error(typeof reason === 'string' ? reason : 'aborted');
}
