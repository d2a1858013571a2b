import { abortReason, systemClock, type Clock } from './clock.js';
import { ErrorCode, TidingsError, isRetryable } from './errors.js';
import type { HandlerContext, Middleware } from './handler.js';
import type { InboxStore } from './inbox.js';

/** How failed attempts are retried before the failure policy (park or dead-letter) applies. */
export interface RetryOptions {
  /** Attempts in all, the first included. Default 5. `1` means no retry. */
  maxAttempts?: number;
  /** Delay before the second attempt. Default 100 ms. */
  initialDelayMs?: number;
  /** Upper bound of any delay. Default 10,000 ms. */
  maxDelayMs?: number;
  /** Growth of the delay per attempt. Default 2. */
  multiplier?: number;
  /**
   * Random reduction of each delay, as a fraction of it (0 to 1): a delay `d` becomes a value in
   * `[d × (1 − jitter), d]`. Spreads retries of many consumers apart. Default 0.2.
   */
  jitter?: number;
  /** Whether an error is worth retrying. Default: `TidingsError.retryable`, and true for any other error. */
  retryable?: (error: unknown) => boolean;
}

export type ResolvedRetryOptions = Required<RetryOptions>;

/** Validates and defaults retry options; throws `INVALID_CONFIG` naming the bad value. */
export function resolveRetryOptions(options: RetryOptions = {}): ResolvedRetryOptions {
  const resolved: ResolvedRetryOptions = {
    maxAttempts: options.maxAttempts ?? 5,
    initialDelayMs: options.initialDelayMs ?? 100,
    maxDelayMs: options.maxDelayMs ?? 10_000,
    multiplier: options.multiplier ?? 2,
    jitter: options.jitter ?? 0.2,
    retryable: options.retryable ?? isRetryable,
  };
  const check = (ok: boolean, what: string) => {
    if (!ok) throw new TidingsError(ErrorCode.INVALID_CONFIG, `retry: ${what}`);
  };
  check(
    Number.isInteger(resolved.maxAttempts) && resolved.maxAttempts >= 1 && resolved.maxAttempts <= 1000,
    `maxAttempts must be an integer from 1 to 1000, got ${resolved.maxAttempts}`,
  );
  check(resolved.initialDelayMs >= 0, `initialDelayMs must be >= 0, got ${resolved.initialDelayMs}`);
  check(
    resolved.maxDelayMs >= resolved.initialDelayMs,
    `maxDelayMs (${resolved.maxDelayMs}) must be >= initialDelayMs (${resolved.initialDelayMs})`,
  );
  check(resolved.multiplier >= 1, `multiplier must be >= 1, got ${resolved.multiplier}`);
  check(
    resolved.jitter >= 0 && resolved.jitter <= 1,
    `jitter must be between 0 and 1, got ${resolved.jitter}`,
  );
  return resolved;
}

/**
 * The delay before attempt `attempt + 1`, after `attempt` failed: `initialDelayMs × multiplier^(attempt−1)`, capped at
 * `maxDelayMs`, then reduced by up to `jitter` of itself using `random()` (a number in [0, 1)).
 */
export function backoffDelayMs(options: ResolvedRetryOptions, attempt: number, random: () => number): number {
  const base = Math.min(options.maxDelayMs, options.initialDelayMs * options.multiplier ** (attempt - 1));
  return base * (1 - options.jitter * random());
}

/**
 * Retries the rest of the chain with exponential backoff and jitter. Each try sees `ctx.attempt` counting from 1.
 * Stops early for an error its `retryable` predicate rejects, and when `ctx.signal` aborts (the consumer is closing
 * past its deadline); then rejects with the last error.
 */
export function retry(
  options: RetryOptions = {},
  deps: { clock?: Clock; random?: () => number } = {},
): Middleware {
  const resolved = resolveRetryOptions(options);
  const clock = deps.clock ?? systemClock;
  const random = deps.random ?? Math.random;
  return (next) => async (message, ctx) => {
    for (let attempt = 1; ; attempt++) {
      try {
        await next(message, { ...ctx, attempt } satisfies HandlerContext);
        return;
      } catch (error) {
        if (attempt >= resolved.maxAttempts || !resolved.retryable(error) || ctx.signal.aborted) throw error;
        const delayMs = backoffDelayMs(resolved, attempt, random);
        ctx.logger.warn({ attempt, delayMs, err: error }, 'handler failed; retrying');
        try {
          await clock.sleep(delayMs, ctx.signal);
        } catch {
          throw error; // closing: report the handler's failure, not the interrupted wait
        }
      }
    }
  };
}

/**
 * Fails an attempt that runs longer than `timeoutMs` with a retryable `HANDLER_TIMEOUT`, and aborts the signal the
 * handler sees so it can stop its work. A handler that ignores its signal keeps running in the background.
 */
export function timeout(timeoutMs: number, deps: { clock?: Clock } = {}): Middleware {
  if (!(timeoutMs > 0))
    throw new TidingsError(ErrorCode.INVALID_CONFIG, `timeout: timeoutMs must be > 0, got ${timeoutMs}`);
  const clock = deps.clock ?? systemClock;
  return (next) => async (message, ctx) => {
    const attemptController = new AbortController();
    const stopTimer = new AbortController();
    const onOuterAbort = () => attemptController.abort(abortReason(ctx.signal));
    ctx.signal.addEventListener('abort', onOuterAbort, { once: true });
    const timedOut = clock.sleep(timeoutMs, stopTimer.signal).then(
      () => {
        const error = new TidingsError(
          ErrorCode.HANDLER_TIMEOUT,
          `handler of group "${ctx.group}" did not finish ${message.type} ${ctx.envelope.id} within ${timeoutMs} ms; ` +
            `make it faster, raise timeoutMs, or make it honour ctx.signal`,
          {
            group: ctx.group,
            topic: ctx.topic,
            eventId: ctx.envelope.id,
            eventType: message.type,
            timeoutMs,
          },
        );
        attemptController.abort(error);
        throw error;
      },
      () => undefined,
    );
    try {
      await Promise.race([next(message, { ...ctx, signal: attemptController.signal }), timedOut]);
    } finally {
      stopTimer.abort();
      ctx.signal.removeEventListener('abort', onOuterAbort);
    }
  };
}

/**
 * Skips events the group has already handled, by (group, event id) in `store`, and records each one handled.
 * `onDuplicate` is told of each skip. The record is written after the handler succeeded, not in the same
 * transaction: a crash in between lets one duplicate through. For effects that must apply exactly once, use the
 * transactional inbox in the consumer's own database.
 */
export function idempotent(store: InboxStore, onDuplicate?: (ctx: HandlerContext) => void): Middleware {
  return (next) => async (message, ctx) => {
    if (await store.has(ctx.group, ctx.envelope.id)) {
      onDuplicate?.(ctx);
      ctx.logger.debug({}, 'duplicate event skipped by the inbox');
      return;
    }
    await next(message, ctx);
    await store.add(ctx.group, ctx.envelope.id);
  };
}
