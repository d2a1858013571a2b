/**
 * The outbox relay: moves stored events from the outbox table to the transport, lane by lane, oldest first.
 *
 * One step: find lanes with unpublished rows among the oldest `batchSize`; take the locks of those lanes that no
 * other relay holds; read up to `batchSize` unpublished rows of the held lanes in sequence order; publish them
 * (per topic, in order); delete them (or mark them published); repeat while batches come back full (reading the
 * next batch during the publish, for at most 16 batches with connection-bound locks); give the lanes back. A key
 * lives in one lane, so while a relay holds the lane no other relay publishes that key, and the next holder starts
 * where the table says. A relay that dies after publishing and before deleting leaves its rows, which the next
 * holder publishes again with the same event ids: at-least-once, and the consumers' inbox drops the copies.
 */
import { randomUUID } from 'node:crypto';
import type { Clock } from '../core/clock.js';
import { encodeEnvelope } from '../core/codec.js';
import type { Envelope } from '../core/envelope.js';
import { ErrorCode, TidingsError, describeError } from '../core/errors.js';
import { childLogger, type Logger } from '../core/logger.js';
import type { Relay, RelayStats, RelayTarget } from '../core/relay.js';
import type { OutgoingRecord } from '../core/transport.js';
import type { DatabaseSession, OutboxDatabase } from './database.js';
import { laneLocks, type LaneLocks } from './lane-locks.js';
import { outboxLanes, type TableName } from './names.js';
import type { OutboxStatements } from './statements.js';

/** Options of `bus.startRelay(outbox, options)`. */
export interface RelayOptions {
  /** The most rows read and published per step. Default 500 (1 to 10,000). */
  batchSize?: number;
  /** The first wait after an empty step; doubles up to `maxPollIntervalMs`. Default 25 ms. */
  pollIntervalMs?: number;
  /**
   * The longest wait between looks at an idle outbox. Default 1,000 ms; on PostgreSQL, where a NOTIFY at each
   * commit wakes the relay at once, 5,000 ms.
   */
  maxPollIntervalMs?: number;
  /** SQLite only: how long a relay's lease on the outbox lasts without renewal. Default 5,000 ms. */
  leaseMs?: number;
  /** Aborting closes the relay, as `close()` does. */
  signal?: AbortSignal;
}

/** What the outbox hands its relay. */
export interface RelayContext {
  database: OutboxDatabase;
  statements: OutboxStatements;
  table: TableName;
  keepPublishedMs: number | false;
  clock: Clock;
}

interface Row {
  seq: number;
  topic: string;
  key: string;
  envelope: string;
}

/** How often, at most, published rows kept by `keepPublishedMs` are purged. */
const purgeEveryMs = 60_000;
const purgeChunk = 10_000;
const maxBackoffMs = 5_000;
/**
 * Full batches in a row a relay publishes from the lanes it holds before giving them back, so that other relays and
 * lanes get their turn; in between it skips finding and locking lanes.
 */
const maxBatchesPerHold = 16;

function integerOption(value: number | undefined, fallback: number, min: number, max: number, name: string) {
  const n = value ?? fallback;
  if (!Number.isInteger(n) || n < min || n > max)
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `startRelay: "${name}" must be a whole number from ${min} to ${max}, got ${n}`,
    );
  return n;
}

/** Starts a relay loop. Called through `outbox.startRelay` by `bus.startRelay`. */
export function startOutboxRelay(context: RelayContext, target: RelayTarget, options: RelayOptions): Relay {
  const dialect = context.database.dialect;
  const batchSize = integerOption(options.batchSize, 500, 1, 10_000, 'batchSize');
  const minPoll = integerOption(options.pollIntervalMs, 25, 1, 60_000, 'pollIntervalMs');
  const maxPoll = integerOption(
    options.maxPollIntervalMs,
    dialect === 'postgres' ? 5_000 : 1_000,
    minPoll,
    600_000,
    'maxPollIntervalMs',
  );
  const leaseMs = integerOption(options.leaseMs, 5_000, 100, 600_000, 'leaseMs');
  return new OutboxRelay(context, target, { batchSize, minPoll, maxPoll, leaseMs, signal: options.signal });
}

class OutboxRelay implements Relay {
  readonly closed: Promise<Error | undefined>;
  readonly #context: RelayContext;
  readonly #target: RelayTarget;
  readonly #logger: Logger;
  readonly #locks: LaneLocks;
  readonly #batchSize: number;
  readonly #minPoll: number;
  readonly #maxPoll: number;
  readonly #stats: RelayStats = { published: 0, batches: 0, errors: 0 };
  #session: DatabaseSession | undefined;
  /** Lanes held since an earlier step (connection-bound locks only), and for how many batches. */
  #held: number[] = [];
  #heldBatches = 0;
  #stopping = false;
  #woken = false;
  #wakeSleeper: (() => void) | undefined;
  #lastPurge = 0;
  #closing: Promise<void> | undefined;

  constructor(
    context: RelayContext,
    target: RelayTarget,
    options: {
      batchSize: number;
      minPoll: number;
      maxPoll: number;
      leaseMs: number;
      signal: AbortSignal | undefined;
    },
  ) {
    this.#context = context;
    this.#target = target;
    this.#batchSize = options.batchSize;
    this.#minPoll = options.minPoll;
    this.#maxPoll = options.maxPoll;
    this.#logger = childLogger(target.logger, { relay: context.table.text, service: target.service });
    this.#locks = laneLocks(context.database.dialect, context.table, randomUUID(), options.leaseMs, () =>
      context.clock.now(),
    );
    if (options.signal?.aborted) this.#stopping = true;
    else options.signal?.addEventListener('abort', () => void this.close(), { once: true });
    this.closed = this.#run();
  }

  stats(): RelayStats {
    return { ...this.#stats };
  }

  wake(): void {
    this.#woken = true;
    this.#wakeSleeper?.();
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#stopping = true;
      this.wake();
      await this.closed;
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #run(): Promise<Error | undefined> {
    let idle = this.#minPoll;
    let backoff = this.#minPoll;
    while (!this.#stopping) {
      try {
        const session = await this.#openSession();
        const published = await this.#step(session);
        backoff = this.#minPoll;
        if (this.#stats.lastError !== undefined) delete this.#stats.lastError;
        if (published > 0) {
          idle = this.#minPoll;
          continue;
        }
        await this.#sleep(idle);
        idle = Math.min(idle * 2, this.#maxPoll);
      } catch (error) {
        this.#stats.errors++;
        this.#stats.lastError = describeError(error);
        this.#logger.error({ err: error }, 'outbox relay step failed; retrying with backoff');
        await this.#dropSession(true);
        await this.#sleep(backoff);
        backoff = Math.min(backoff * 2, maxBackoffMs);
      }
    }
    const session = this.#session;
    if (session) {
      try {
        const held = this.#held;
        this.#held = [];
        await this.#locks.release(session.run, held);
        await this.#locks.releaseAll(session.run);
        await this.#dropSession(false);
      } catch {
        await this.#dropSession(true);
      }
    }
    return undefined;
  }

  async #openSession(): Promise<DatabaseSession> {
    if (this.#session) return this.#session;
    const session = await this.#context.database.session('the outbox relay');
    this.#session = session;
    if (session.listen) await session.listen(this.#context.statements.channel, () => this.wake());
    return session;
  }

  async #dropSession(broken: boolean): Promise<void> {
    const session = this.#session;
    this.#session = undefined;
    this.#held = []; // a destroyed connection takes its locks with it
    await session?.release(broken).catch(() => undefined);
  }

  /** Waits `ms`, or less when woken (NOTIFY, `wake()`, `close()`). */
  async #sleep(ms: number): Promise<void> {
    if (this.#woken || this.#stopping) {
      this.#woken = false;
      return;
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wakeSleeper = done;
    });
    this.#wakeSleeper = undefined;
    this.#woken = false;
  }

  /**
   * Publishes from the held lanes (finding and locking lanes first if none are held); resolves with how many events
   * were published. While batches come back full, the next batch is read while the current one is published, and a
   * batch is marked while the next one is published: the database and the transport work at the same time. Batches
   * are published strictly one after the other, and marked in the same order (a mark waits for the previous one).
   */
  async #step(session: DatabaseSession): Promise<number> {
    const { statements } = this.#context;
    const run = session.run;
    await this.#purge(run);
    if (this.#held.length === 0) {
      const { rows: laneRows } = await run(statements.pendingLanes, [this.#batchSize]);
      const candidates = laneRows.map((row) => Number(row['lane'])).filter((lane) => lane < outboxLanes);
      if (candidates.length === 0) return 0;
      this.#held = await this.#locks.acquire(run, candidates);
      this.#heldBatches = 0;
      if (this.#held.length === 0) return 0;
    }
    const held = this.#held;
    let keep = false;
    let marking: Promise<unknown> | undefined;
    let total = 0;
    try {
      let batch = await this.#fetch(run, held, 0);
      let full = false;
      while (batch.length > 0) {
        full = batch.length === this.#batchSize;
        const readAhead =
          full &&
          this.#locks.keepAcrossBatches &&
          this.#heldBatches + 1 < maxBatchesPerHold &&
          !this.#stopping;
        const next = readAhead ? this.#fetch(run, held, batch[batch.length - 1]!.seq) : undefined;
        next?.catch(() => undefined); // awaited below, or abandoned on failure
        const seqs = batch.map((row) => row.seq);
        try {
          await this.#publish(batch);
        } catch (error) {
          await next?.catch(() => undefined);
          const params = [describeError(error).slice(0, 2000), ...statements.seqParams(seqs)];
          await run(statements.markFailed(seqs.length), params).catch(() => undefined);
          throw error;
        }
        if (marking) await marking; // marks stay in batch order: a failed one stops the step before the next
        marking = this.#mark(run, seqs);
        marking.catch(() => undefined); // awaited before the next mark or at the end
        this.#stats.published += batch.length;
        this.#stats.batches++;
        this.#heldBatches++;
        total += batch.length;
        batch = next ? await next : [];
      }
      if (marking) await marking;
      keep = this.#locks.keepAcrossBatches && full && this.#heldBatches < maxBatchesPerHold;
      return total;
    } finally {
      if (!keep) {
        this.#held = [];
        await marking?.catch(() => undefined); // no lock is given back while its rows are being marked
        await this.#locks.release(run, held);
      }
    }
  }

  /** Unpublished rows of `lanes` after `afterSeq`, oldest first, at most a batch. */
  async #fetch(run: DatabaseSession['run'], lanes: readonly number[], afterSeq: number): Promise<Row[]> {
    const { rows } = await run(this.#context.statements.fetch(lanes.length), [
      ...lanes,
      afterSeq,
      this.#batchSize,
    ]);
    return rows.map((row) => ({
      seq: Number(row['seq']),
      topic: String(row['topic']),
      key: String(row['event_key']),
      envelope: String(row['envelope']),
    }));
  }

  /** Deletes published rows, or marks them published under `keepPublishedMs`. */
  async #mark(run: DatabaseSession['run'], seqs: readonly number[]): Promise<void> {
    const { statements, keepPublishedMs, clock } = this.#context;
    const params = statements.seqParams(seqs);
    if (keepPublishedMs === false) await run(statements.remove(seqs.length), params);
    else await run(statements.markPublished(seqs.length), [clock.now(), ...params]);
  }

  /** Publishes rows through the transport: per topic one call, in row order; topics in parallel. */
  async #publish(batch: readonly Row[]): Promise<void> {
    const byTopic = new Map<string, OutgoingRecord[]>();
    for (const row of batch) {
      const envelope = JSON.parse(row.envelope) as Envelope;
      const encoded = encodeEnvelope(envelope, this.#target.wireMode);
      const time = envelope.time === undefined ? Number.NaN : Date.parse(envelope.time);
      const record: OutgoingRecord = {
        key: row.key,
        headers: encoded.headers,
        value: encoded.value,
        ...(Number.isFinite(time) ? { timestamp: time } : {}),
      };
      const list = byTopic.get(row.topic);
      if (list) list.push(record);
      else byTopic.set(row.topic, [record]);
    }
    await Promise.all(
      [...byTopic].map(async ([topic, records]) => {
        try {
          await this.#target.transport.publish(topic, records);
        } catch (error) {
          throw new TidingsError(
            ErrorCode.PUBLISH_FAILED,
            `the outbox relay could not publish ${records.length} event(s) to "${topic}": ${describeError(error)}; ` +
              'they stay in the outbox and are published again',
            { topic, cause: error },
          );
        }
      }),
    );
  }

  /** Deletes published rows older than `keepPublishedMs`, at most once per minute. */
  async #purge(run: DatabaseSession['run']): Promise<void> {
    const keep = this.#context.keepPublishedMs;
    const now = this.#context.clock.now();
    if (keep === false || now - this.#lastPurge < purgeEveryMs) return;
    this.#lastPurge = now;
    await run(this.#context.statements.purgePublished(purgeChunk), [now - keep]);
  }
}
