/** What the parts of one NATS transport share: connection, names, bucket, topics, options. */
import type { Clock } from '../core/clock.js';
import type { GroupBucket } from './bucket.js';
import type { NatsConnector } from './connection.js';
import type { NatsNames } from './names.js';
import type { ResolvedNatsOptions } from './options.js';
import type { Topics } from './topics.js';

export interface NatsContext {
  readonly connector: NatsConnector;
  readonly names: NatsNames;
  readonly bucket: GroupBucket;
  readonly topics: Topics;
  readonly options: ResolvedNatsOptions;
  readonly clock: Clock;
}

/** Resolves after `ms`, or at once when `signal` aborts. Never rejects. */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Exponential backoff with a cap: 50 ms, 100 ms, ... up to `capMs`. */
export function backoffMs(failures: number, capMs = 2_000): number {
  return Math.min(capMs, 50 * 2 ** Math.min(failures, 8));
}
