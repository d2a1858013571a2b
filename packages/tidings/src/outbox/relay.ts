/**
 * The outbox relay: moves stored events from the outbox table to the transport, lane by lane, oldest first.
 *
 * One step: find lanes with unpublished rows among the oldest `batchSize` (skipping lanes this relay backs off);
 * take the locks of those lanes that no other relay holds; read up to `batchSize` unpublished rows of the held lanes
 * in sequence order; publish them (per topic, in order); delete them (or mark them published); repeat while batches
 * come back full (reading the next batch during the publish, for at most 16 batches with connection-bound locks);
 * give the lanes back. A key lives in one lane, so while a relay holds the lane no other relay publishes that key,
 * and the next holder starts where the table says. A relay that dies after publishing and before deleting leaves its
 * rows, which the next holder publishes again with the same event ids: at-least-once, and the consumers' inbox drops
 * the copies.
 *
 * A row the transport refuses holds back its own lane only: the rows of its lane before it are marked, it and the
 * rows after it stay (with `attempts` and `last_error`), the lane is given back and skipped by this relay for a
 * backoff (100 ms doubling to 5 s), and every other lane goes on.
 *
 * Observation: with the bus's instrumentation (`RelayTarget.instrumentation`), each event sent is reported as a
 * `publish` with `relayed: true` and the stored trace context, and its scope ends when the transport acknowledged
 * or refused it (or it was held back behind a refused event of its lane). The stored envelope is never rewritten:
 * consumers stay children of the enqueue's `create` span, and a re-publish carries the same trace context. With the
 * bus's topology (`RelayTarget.topology`), each type published is recorded once as produced by the bus's service.
 */
import { randomUUID } from 'node:crypto';
import type { Clock } from '../core/clock.js';
import { encodeEnvelope } from '../core/codec.js';
import type { Envelope } from '../core/envelope.js';
import { ErrorCode, TidingsError, describeError, isTidingsError } from '../core/errors.js';
import { childLogger, type Logger } from '../core/logger.js';
import type { Instrumentation, PublishScope } from '../core/instrumentation.js';
import { endPublishScope, openPublishScope, publishInfoOf } from '../core/publish-scope.js';
import type { Relay, RelayStats, RelayTarget } from '../core/relay.js';
import type { OutgoingRecord, PublishAck } from '../core/transport.js';
import type { DatabaseSession, OutboxDatabase } from './database.js';
import { laneLocks, type LaneLocks } from './lane-locks.js';
import { outboxLanes, type TableName } from './names.js';
import { purgeInChunks } from './sql.js';
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
  lane: number;
  topic: string;
  key: string;
  envelope: string;
}

/** How often published rows kept by `keepPublishedMs` are purged (by the relay's clock). */
const purgeEveryMs = 60_000;
/** Rows deleted per purge statement. */
const purgeChunk = 10_000;
/**
 * The real time one purge may spend deleting chunks; a purge that runs out of it (rows remain) runs again this long
 * later instead of a minute later, so the relay deletes at most half the time and the purge keeps up with any rate.
 */
const purgeBudgetMs = 1_000;
const maxBackoffMs = 5_000;
/** The first backoff of a lane whose row the transport refused; it doubles up to `maxBackoffMs`. */
const laneBackoffMs = 100;
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
  /** The bus's instrumentation when it observes publishes, else undefined (no call per event). */
  readonly #instrumentation: Instrumentation | undefined;
  /** Whether sent events are observed at all (instrumentation or topology): else nothing is tracked per event. */
  readonly #observed: boolean;
  #session: DatabaseSession | undefined;
  /** Lanes held since an earlier step (connection-bound locks only), and for how many batches. */
  #held: number[] = [];
  #heldBatches = 0;
  #stopping = false;
  #woken = false;
  #wakeSleeper: (() => void) | undefined;
  /** When (relay clock) the next purge of kept rows is due. */
  #nextPurge = 0;
  /** Lanes whose row the transport refused: skipped until `until` (performance.now()), with the current delay. */
  readonly #laneBackoff = new Map<number, { until: number; delayMs: number }>();
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
    this.#instrumentation =
      target.instrumentation?.publish === undefined ? undefined : target.instrumentation;
    this.#observed = this.#instrumentation !== undefined || target.topology !== undefined;
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
    let stoppedBy: Error | undefined;
    while (!this.#stopping) {
      try {
        const session = await this.#openSession();
        const { published, failedLanes } = await this.#step(session);
        backoff = this.#minPoll;
        if (failedLanes === 0 && this.#laneBackoff.size === 0) delete this.#stats.lastError;
        if (published > 0) {
          idle = this.#minPoll;
          continue;
        }
        await this.#sleep(idle);
        idle = Math.min(idle * 2, this.#maxPoll);
      } catch (error) {
        this.#stats.errors++;
        this.#stats.lastError = describeError(error);
        const fatal = unrecoverable(error, this.#context.table.text);
        if (fatal) {
          this.#logger.error({ err: error }, fatal.message);
          await this.#dropSession(true);
          stoppedBy = fatal;
          break;
        }
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
    return stoppedBy;
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
   * were published and marked, and how many lanes failed. While batches come back full, the next batch is read while
   * the current one is published, and a batch is marked while the next one is published: the database and the
   * transport work at the same time. Batches are published strictly one after the other, and marked in the same
   * order (a mark waits for the previous one).
   *
   * A lane with a refused row is dropped from the step at once: its later rows are neither published nor marked
   * (those read ahead are filtered out), its lock is given back at the end of the step, and it is backed off.
   */
  async #step(session: DatabaseSession): Promise<{ published: number; failedLanes: number }> {
    const { statements } = this.#context;
    const run = session.run;
    await this.#purge(run);
    if (this.#held.length === 0) {
      const now = performance.now();
      const excluded = [...this.#laneBackoff].filter(([, b]) => b.until > now).map(([lane]) => lane);
      const { rows: laneRows } = await run(statements.pendingLanes(excluded.length), [
        ...excluded,
        this.#batchSize,
      ]);
      const candidates = laneRows
        .map((row) => Number(row['lane']))
        .filter((lane) => lane < outboxLanes && !excluded.includes(lane));
      if (candidates.length === 0) return { published: 0, failedLanes: 0 };
      this.#held = await this.#locks.acquire(run, candidates);
      this.#heldBatches = 0;
      if (this.#held.length === 0) return { published: 0, failedLanes: 0 };
    }
    const held = this.#held;
    /** The lanes still published in this step: held minus those that failed. */
    let lanes = [...held];
    const dropped = new Set<number>();
    let keep = false;
    let marking: Promise<unknown> | undefined;
    let total = 0;
    try {
      let fetched = await this.#fetch(run, lanes, 0);
      let full = false;
      while (fetched.length > 0 && lanes.length > 0) {
        full = fetched.length === this.#batchSize;
        const readAhead =
          full &&
          this.#locks.keepAcrossBatches &&
          this.#heldBatches + 1 < maxBatchesPerHold &&
          !this.#stopping;
        const next = readAhead ? this.#fetch(run, lanes, fetched[fetched.length - 1]!.seq) : undefined;
        next?.catch(() => undefined); // awaited below, or abandoned on failure
        const batch = fetched.filter((row) => !dropped.has(row.lane));
        if (batch.length > 0) {
          const { done, failures } = await this.#publish(batch);
          for (const [lane, failure] of failures) {
            dropped.add(lane);
            this.#failLane(lane, failure.row, failure.error);
            await run(statements.markFailed(1), [
              describeError(failure.error).slice(0, 2000),
              ...statements.seqParams([failure.row.seq]),
            ]);
          }
          if (failures.size > 0) lanes = lanes.filter((lane) => !dropped.has(lane));
          for (const row of done) if (!failures.has(row.lane)) this.#laneBackoff.delete(row.lane);
          if (marking) await marking; // marks stay in batch order: a failed one stops the step before the next
          if (done.length > 0) {
            marking = this.#mark(
              run,
              done.map((row) => row.seq),
            );
            marking.catch(() => undefined); // awaited before the next mark or at the end
          }
          this.#stats.batches++;
          total += done.length;
        }
        this.#heldBatches++;
        fetched = next ? await next : [];
      }
      if (marking) await marking;
      keep =
        this.#locks.keepAcrossBatches && full && lanes.length > 0 && this.#heldBatches < maxBatchesPerHold;
      return { published: total, failedLanes: dropped.size };
    } finally {
      const release = keep ? [...dropped] : held;
      this.#held = keep ? lanes : [];
      if (release.length > 0) {
        await marking?.catch(() => undefined); // no lock is given back while its rows are being marked
        await this.#locks.release(run, release);
      }
    }
  }

  /** Records a refused row: counts and logs it, and backs its lane off (doubling from 100 ms up to 5 s). */
  #failLane(lane: number, row: Row, error: unknown): void {
    const previous = this.#laneBackoff.get(lane);
    const delayMs = previous ? Math.min(previous.delayMs * 2, maxBackoffMs) : laneBackoffMs;
    this.#laneBackoff.set(lane, { until: performance.now() + delayMs, delayMs });
    this.#stats.errors++;
    this.#stats.lastError = describeError(error);
    this.#logger.error(
      { err: error, lane, seq: row.seq, topic: row.topic, key: row.key },
      `the outbox relay could not publish event seq ${row.seq} to "${row.topic}" (key "${row.key}"); it stays ` +
        `in the outbox with later events of its lane ${lane}, retried in ${delayMs} ms; other lanes go on`,
    );
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
      lane: Number(row['lane']),
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

  /**
   * Publishes a batch through the transport: per topic one call, in row order, topics in parallel. When a topic's
   * call fails, its rows are published again lane by lane, and a lane whose call fails row by row up to the first
   * row that fails, so a refused row is found without failing its neighbours. A lane that failed before and has not
   * published since is _probed_: its rows go one by one, in order, stopping at the first failure, so a row that keeps
   * failing never gets later rows of its lane published (only in the step that first meets it can a later row of
   * its lane on another topic, sent in parallel, get out; it is not marked, and is published again after the failed
   * one). Resolves with the rows to mark (per lane, the published rows before the lane's first failure) and, per
   * failed lane, its first failing row. Rows of a lane after a row that could not even be encoded are not published.
   */
  async #publish(batch: readonly Row[]): Promise<{ done: Row[]; failures: Map<number, Failure> }> {
    const failures = new Map<number, Failure>();
    const byTopic = new Map<string, Entry[]>();
    const probes = new Map<number, Entry[]>();
    const observed: Entry[] | undefined = this.#observed ? [] : undefined;
    for (const row of batch) {
      if (failures.has(row.lane)) continue;
      let entry: Entry;
      try {
        entry = this.#entry(row);
      } catch (error) {
        failures.set(row.lane, { row, error });
        continue;
      }
      observed?.push(entry);
      if (this.#laneBackoff.has(row.lane)) append(probes, row.lane, entry);
      else append(byTopic, row.topic, entry);
    }
    const published = new Set<Row>();
    const fail = (row: Row, error: unknown) => {
      const known = failures.get(row.lane);
      if (!known || row.seq < known.row.seq) failures.set(row.lane, { row, error });
    };
    await Promise.allSettled([
      ...[...probes.values()].map(async (entries) => {
        for (const entry of entries) {
          const error = await this.#send(entry.row.topic, [entry]);
          if (error !== undefined) return fail(entry.row, error);
          published.add(entry.row);
        }
      }),
      ...[...byTopic].map(async ([topic, entries]) => {
        const all = entries.filter((entry) => !failures.has(entry.row.lane));
        if (all.length === 0) return;
        const first = await this.#send(topic, all);
        if (first === undefined) {
          for (const entry of all) published.add(entry.row);
          return;
        }
        const lanes = new Map<number, Entry[]>();
        for (const entry of all) append(lanes, entry.row.lane, entry);
        await Promise.allSettled(
          [...lanes.values()].map(async (laneEntries) => {
            const laneError = lanes.size > 1 ? await this.#send(topic, laneEntries) : first;
            if (laneError === undefined) {
              for (const entry of laneEntries) published.add(entry.row);
              return;
            }
            if (laneEntries.length === 1) return fail(laneEntries[0]!.row, laneError);
            for (const entry of laneEntries) {
              const error = await this.#send(topic, [entry]);
              if (error !== undefined) return fail(entry.row, error);
              published.add(entry.row);
            }
          }),
        );
      }),
    ]);
    const done = batch.filter((row) => {
      const failure = failures.get(row.lane);
      return published.has(row) && (failure === undefined || row.seq < failure.row.seq);
    });
    this.#stats.published += published.size;
    if (observed !== undefined) this.#settle(observed, published, failures);
    return { done, failures };
  }

  /**
   * Ends the instrumentation scope of each sent entry (ok with its ack when the transport took it; else with its
   * lane's failure) and records the type of each published one in topology.
   */
  #settle(
    entries: readonly Entry[],
    published: ReadonlySet<Row>,
    failures: ReadonlyMap<number, Failure>,
  ): void {
    const topology = this.#target.topology;
    for (const entry of entries) {
      const { row } = entry;
      if (published.has(row)) {
        endPublishScope(entry.scope, { ok: true, ack: entry.ack }, this.#logger, this.#target.service);
        topology?.relayed({
          type: entry.envelope.type,
          topic: row.topic,
          version: entry.envelope.schemaversion ?? 1,
        });
        continue;
      }
      if (entry.scope === undefined) continue;
      const failure = failures.get(row.lane);
      const error =
        failure?.row === row
          ? failure.error
          : new TidingsError(
              ErrorCode.PUBLISH_FAILED,
              `the outbox relay held back event seq ${row.seq} on "${row.topic}": an earlier event of its lane was ` +
                'refused; it stays in the outbox and is published after that one',
              { topic: row.topic, eventId: entry.envelope.id },
            );
      endPublishScope(entry.scope, { ok: false, error }, this.#logger, this.#target.service);
    }
  }

  /**
   * The transport record of a stored row, with its envelope, and (with an instrumentation) the scope of this
   * publish of it, opened with the stored trace context; the envelope is encoded before, and never rewritten.
   */
  #entry(row: Row): Entry {
    const envelope = JSON.parse(row.envelope) as Envelope;
    const encoded = encodeEnvelope(envelope, this.#target.wireMode);
    const time = envelope.time === undefined ? Number.NaN : Date.parse(envelope.time);
    const record: OutgoingRecord = {
      key: row.key,
      headers: encoded.headers,
      value: encoded.value,
      ...(Number.isFinite(time) ? { timestamp: time } : {}),
    };
    const entry: Entry = { row, record, envelope };
    if (this.#instrumentation !== undefined)
      entry.scope = openPublishScope(
        this.#instrumentation,
        publishInfoOf(envelope, {
          service: this.#target.service,
          operation: 'publish',
          system: this.#target.transport.name,
          topic: row.topic,
          key: row.key,
          relayed: true,
        }),
        this.#logger,
      );
    return entry;
  }

  /** One transport call; resolves with its error (as `PUBLISH_FAILED`) or `undefined` on success. */
  async #send(topic: string, entries: readonly Entry[]): Promise<TidingsError | undefined> {
    try {
      const acks = await this.#target.transport.publish(
        topic,
        entries.map((entry) => entry.record),
      );
      if (this.#instrumentation !== undefined) entries.forEach((entry, i) => (entry.ack = acks[i]));
      return undefined;
    } catch (error) {
      return new TidingsError(
        ErrorCode.PUBLISH_FAILED,
        `the outbox relay could not publish ${entries.length} event(s) to "${topic}": ${describeError(error)}; ` +
          'they stay in the outbox and are published again',
        { topic, cause: error },
      );
    }
  }

  /**
   * Deletes published rows older than `keepPublishedMs` when a purge is due (once a minute by the relay's clock):
   * chunks of 10,000 while they come back full, for up to a second of real time, yielding between chunks; a purge
   * that ran out of time is due again a second later.
   */
  async #purge(run: DatabaseSession['run']): Promise<void> {
    const keep = this.#context.keepPublishedMs;
    const now = this.#context.clock.now();
    if (keep === false || now < this.#nextPurge) return;
    const { more } = await purgeInChunks(
      (chunk) => run(this.#context.statements.purgePublished(chunk), [now - keep]),
      purgeChunk,
      purgeBudgetMs,
    );
    this.#nextPurge = now + (more ? purgeBudgetMs : purgeEveryMs);
  }
}

interface Entry {
  row: Row;
  record: OutgoingRecord;
  /** The stored envelope, as published. */
  envelope: Envelope;
  /** The instrumentation's scope of this publish, with an instrumentation. */
  scope?: PublishScope | undefined;
  /** Where the transport put it, recorded with an instrumentation. */
  ack?: PublishAck | undefined;
}

function append<K>(map: Map<K, Entry[]>, key: K, entry: Entry): void {
  const list = map.get(key);
  if (list) list.push(entry);
  else map.set(key, [entry]);
}

interface Failure {
  row: Row;
  error: unknown;
}

/** What a driver error says does not exist (see {@link missingObject}). */
export type MissingObject = 'table' | 'schema' | 'database';

/** Driver error codes of a missing table, schema or database (PostgreSQL SQLSTATEs, MariaDB/MySQL codes). */
const missingObjectCodes: ReadonlyMap<string, MissingObject> = new Map([
  ['42P01', 'table'],
  ['3F000', 'schema'],
  ['3D000', 'database'],
  ['ER_NO_SUCH_TABLE', 'table'],
  ['ER_BAD_DB_ERROR', 'database'],
]);

/**
 * What a `pg`, `mysql2` or `better-sqlite3` error says is missing: a table (PostgreSQL 42P01, MariaDB/MySQL
 * ER_NO_SUCH_TABLE, SQLite "no such table"), a schema (PostgreSQL 3F000) or a database (PostgreSQL 3D000,
 * MariaDB/MySQL ER_BAD_DB_ERROR); `undefined` for any other error. Retrying such an error cannot fix it.
 */
export function missingObject(error: unknown): MissingObject | undefined {
  const rawCode = (error as { code?: unknown } | null)?.code;
  if (typeof rawCode !== 'string') return undefined;
  const kind = missingObjectCodes.get(rawCode);
  if (kind !== undefined) return kind;
  const message = error instanceof Error ? error.message : String(error);
  return rawCode.startsWith('SQLITE') && /no such table/i.test(message) ? 'table' : undefined;
}

/** Driver error codes that retrying cannot fix besides a missing object: bad credentials, no grant. */
const refusedCodes = new Set([
  '28P01',
  '28000',
  '42501',
  'ER_ACCESS_DENIED_ERROR',
  'ER_DBACCESS_DENIED_ERROR',
  'ER_TABLEACCESS_DENIED_ERROR',
  'SQLITE_NOTADB',
  'SQLITE_CANTOPEN',
]);

/**
 * The error that stops a relay, when `error` is one retrying cannot fix (a missing object, the refused codes above,
 * and `INVALID_CONFIG`); `undefined` for anything else, which the relay retries with backoff.
 */
function unrecoverable(error: unknown, table: string): TidingsError | undefined {
  if (isTidingsError(error, ErrorCode.INVALID_CONFIG))
    return new TidingsError(ErrorCode.INVALID_CONFIG, `the outbox relay stopped: ${error.message}`, {
      cause: error,
    });
  const rawCode = (error as { code?: unknown } | null)?.code;
  const code = typeof rawCode === 'string' ? rawCode : '';
  const message = error instanceof Error ? error.message : String(error);
  if (missingObject(error) !== undefined)
    return new TidingsError(
      ErrorCode.NOT_FOUND,
      `the outbox relay stopped: ${oneLine(message)}; create the outbox table ${table} (and its companions) with ` +
        'outbox.setup() or the statements of outbox.schemaSql(), and check the database URL',
      { cause: error, retryable: false },
    );
  if (refusedCodes.has(code))
    return new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `the outbox relay stopped: the database refused it: ${oneLine(message)}; check the user, password and ` +
        `database of the URL and the grants on ${table}`,
      { cause: error, retryable: false },
    );
  return undefined;
}

const oneLine = (text: string) => text.replace(/\s+/g, ' ').trim();
