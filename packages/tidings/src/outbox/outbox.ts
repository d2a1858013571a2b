/**
 * The transactional outbox: `enqueue` stores a fully built event in the caller's own transaction, so the business
 * change and the event commit or roll back together; a relay (`bus.startRelay(outbox)` or `tidings relay`) publishes
 * the stored events afterwards.
 */
import { systemClock, type Clock } from '../core/clock.js';
import { encodeEnvelope, encodedSize } from '../core/codec.js';
import { isDefinition, type InputOf, type MessageDefinition } from '../core/define.js';
import { buildEnvelope } from '../core/envelope-builder.js';
import { ErrorCode, TidingsError } from '../core/errors.js';
import type { PublishOptions } from '../core/handler.js';
import { uuidv7, type IdGenerator } from '../core/ids.js';
import type { Instrumentation, PublishOutcome, PublishScope } from '../core/instrumentation.js';
import { createConsoleLogger, type Logger } from '../core/logger.js';
import {
  applyTraceContext,
  endPublishScope,
  openPublishScope,
  publishInfoOf,
} from '../core/publish-scope.js';
import type { Relay, RelaySource, RelayTarget } from '../core/relay.js';
import { formatIssues, validateWithSchema } from '../core/schema.js';
import type { OutboxDatabase } from './database.js';
import { hash32, hashInt32, keyLockSlots, laneOf, parseTableName, type TableName } from './names.js';
import { startOutboxRelay, type RelayOptions } from './relay.js';
import { requireSqliteTransaction, runSqliteSync, runnerFor, type SqliteDatabaseLike } from './sql.js';
import { outboxStatements, type OutboxRowInput, type OutboxStatements } from './statements.js';

/** Options of {@link createOutbox}. */
export interface OutboxOptions {
  /** Where the outbox table lives: `postgres(pool)`, `mysql(pool)` or `sqlite(db)`. */
  database: OutboxDatabase;
  /** The outbox table, `name` or `schema.name`. Default `tidings_outbox`. */
  table?: string;
  /** The service named in each event's `source` (`tidings://<service>`). Default `TIDINGS_SERVICE`, else `app`. */
  service?: string;
  /** The CloudEvents `source`. Default `tidings://<service>`. */
  source?: string;
  /** The largest encoded event `enqueue` accepts. Default 1 MiB (1,048,576 bytes). */
  maxEventBytes?: number;
  /**
   * The clean-up policy. `false` (default): a relay deletes rows as soon as they are published. A number of ms:
   * published rows are kept (marked with `published_at`) for that long, for audit, then deleted by every running
   * relay once a minute (by `clock`), busy or idle: chunks of 10,000 while they come back full, for up to a second,
   * and again a second later while rows remain, so the clean-up keeps up with any publish rate.
   */
  keepPublishedMs?: number | false;
  /** Time, for tests. Default: the system clock. */
  clock?: Clock;
  /** Event ids. Default: UUIDv7. */
  idGenerator?: IdGenerator;
  /**
   * A schema registry (`createSchemaRegistry` from `tidings/registry`), as `createBus({ registry })` takes: before a
   * definition version is first enqueued its JSON Schema is registered (once per definition), and when the
   * registered history forbids it `enqueue` rejects with `SCHEMA_INCOMPATIBLE` before anything is written, so an
   * incompatible event fails your transaction instead of reaching the topic through the relay. `enqueueSync` cannot
   * wait for the registry: it refuses a definition this outbox has not registered yet (enqueue it once with
   * `await enqueue`, or call `await outbox.registerSchemas([...])` at start-up). Default: none.
   */
  registry?: { ensureRegistered(definition: MessageDefinition): Promise<void> };
  /**
   * Observes each enqueue, as `createBus({ instrumentation })` observes a publish; pass the same
   * `createOtelInstrumentation()`. For each event, after validation and before the row is built, `publish` is called
   * with operation `create` (system `tidings`: the transport is chosen later, by the relay), and the returned trace
   * context is stored in the envelope: with `tidings/otel`, a PRODUCER span `create <topic>` that is a child of the
   * active span (else of the `traceparent` given in the enqueue options), so the consumers of the relayed event join
   * the caller's trace. The scope ends when the row is inserted (not at commit) or the insert failed. Anything the
   * instrumentation throws is logged on `logger` and ignored: it never fails an enqueue. Default: none (nothing is
   * called or allocated per event).
   */
  instrumentation?: Instrumentation;
  /**
   * Where the outbox reports what it ignores (an instrumentation that threw). Default: JSON lines on stderr at level
   * `warn` (or `TIDINGS_LOG_LEVEL`).
   */
  logger?: Logger;
}

/** Per-event options of `enqueue`: those of `publish`, without the signal. */
export type EnqueueOptions = Omit<PublishOptions, 'signal'>;

/** What `enqueue` stored. */
export interface Enqueued {
  /** The event id, fixed now: every publish of this event, re-publishes included, carries it. */
  id: string;
  topic: string;
  key: string;
}

/** The backlog of an outbox, as `tidings outbox status` shows it and metrics export it. */
export interface OutboxStatus {
  /** Rows not yet published. */
  backlog: number;
  /** Age in ms of the oldest unpublished row, `null` when there is none. */
  oldestAgeMs: number | null;
  /** The most failed publish attempts of any unpublished row (a row that keeps failing holds its lane). */
  maxAttempts: number;
}

/**
 * An outbox: enqueue events in your transactions, start relays for it on a bus. See {@link createOutbox}.
 */
export interface Outbox extends RelaySource<RelayOptions> {
  readonly dialect: OutboxDatabase['dialect'];
  readonly table: string;
  /**
   * Validates `data`, builds the event's envelope (id, time, correlation and trace fixed now) and inserts it into
   * the outbox table through `tx`, your open transaction: a `pg` client inside BEGIN, a `mysql2/promise`
   * connection inside a transaction, a `better-sqlite3` database inside BEGIN (see `enqueueSync` for
   * `db.transaction()`), a Kysely transaction, or `fromDrizzle(tx, sql, dialect)`. Nothing is published until your
   * transaction commits; if it rolls back, the event never existed.
   *
   * Trace context: the envelope keeps `options.traceparent` / `tracestate`, unless the outbox has an
   * `instrumentation`, whose `create` scope's trace context is stored instead (with `tidings/otel`: a child of the
   * active span, else of `options.traceparent`). The relay publishes it unchanged.
   *
   * Rejects before writing with `VALIDATION_FAILED` (bad data, empty or over-long key), `EVENT_TOO_LARGE` or
   * `INVALID_CONFIG` (not a definition, not a transaction handle, or no transaction open on a better-sqlite3
   * `Database` or a pg client — MariaDB/MySQL connections cannot be checked: begin the transaction first); a failed
   * insert rejects with the driver's error. Either way, roll your transaction back.
   */
  enqueue<D extends MessageDefinition>(
    tx: unknown,
    event: D,
    data: InputOf<D>,
    options?: EnqueueOptions,
  ): Promise<Enqueued>;
  /**
   * Enqueues several events in order, validating every one before inserting any (on PostgreSQL in one statement
   * per 1,000 events, on MariaDB/MySQL in multi-row inserts). The keys' locks are all taken first, in ascending
   * order, so concurrent `enqueueMany` calls over the same keys in different orders do not deadlock. Rejects as
   * `enqueue` does.
   */
  enqueueMany(
    tx: unknown,
    items: ReadonlyArray<{ event: MessageDefinition; data: unknown; options?: EnqueueOptions }>,
  ): Promise<Enqueued[]>;
  /**
   * Registers the JSON Schemas of `definitions` with the outbox's `registry` (a no-op without one), so that
   * `enqueueSync` accepts them. Rejects with `SCHEMA_INCOMPATIBLE` for a definition the registered history forbids.
   */
  registerSchemas(definitions: readonly MessageDefinition[]): Promise<void>;
  /**
   * `enqueue` for SQLite inside better-sqlite3's synchronous `db.transaction(() => ...)` (or BEGIN ... COMMIT).
   * Needs a schema that validates synchronously (zod, valibot and most do); throws `INVALID_CONFIG` otherwise, for
   * other dialects, and when no transaction is open on `db`.
   */
  enqueueSync<D extends MessageDefinition>(
    db: SqliteDatabaseLike,
    event: D,
    data: InputOf<D>,
    options?: EnqueueOptions,
  ): Enqueued;
  /** The statements that create the outbox's tables and indexes, for your migrations. */
  schemaSql(): string[];
  /** Creates the outbox's tables and indexes if they do not exist (idempotent). Needs the database's pool. */
  setup(): Promise<void>;
  /** The backlog and the age of its oldest row. Needs the database's pool. */
  status(): Promise<OutboxStatus>;
}

const defaultMaxEventBytes = 1024 * 1024;
/** The longest key and event id an outbox row takes (the column widths on MariaDB). */
const maxKeyLength = 1024;
const maxIdLength = 255;

/**
 * Creates an outbox over a database. Validates the options at once (`INVALID_CONFIG`); touches the database only
 * when used.
 *
 * Ordering: each key's events are published in the order their transactions committed. Enqueue takes a per-key
 * transaction lock (PostgreSQL advisory lock, a lock row on MariaDB/MySQL, SQLite's single writer), so two
 * transactions enqueueing the same key serialise and the row sequence follows commit order.
 */
export function createOutbox(options: OutboxOptions): Outbox {
  const where = 'createOutbox';
  const invalid = (message: string) => new TidingsError(ErrorCode.INVALID_CONFIG, `${where}: ${message}`);
  if (typeof options !== 'object' || options === null)
    throw invalid('pass { database: postgres(pool) | mysql(pool) | sqlite(db) }');
  const database = options.database;
  if (typeof database?.session !== 'function')
    throw invalid('"database" must come from postgres(pool), mysql(pool) or sqlite(db) of tidings/outbox');
  const dialect = database.dialect;
  const table: TableName = parseTableName(options.table ?? 'tidings_outbox', where);
  const service = options.service ?? process.env['TIDINGS_SERVICE'] ?? 'app';
  const source = options.source ?? `tidings://${service}`;
  const maxEventBytes = options.maxEventBytes ?? defaultMaxEventBytes;
  if (!Number.isInteger(maxEventBytes) || maxEventBytes < 1)
    throw invalid(`"maxEventBytes" must be a positive integer, got ${maxEventBytes}`);
  const keepPublishedMs = options.keepPublishedMs ?? false;
  if (keepPublishedMs !== false && !(Number.isInteger(keepPublishedMs) && keepPublishedMs >= 0))
    throw invalid(`"keepPublishedMs" must be false or a whole number of ms >= 0, got ${keepPublishedMs}`);
  const clock = options.clock ?? systemClock;
  const ids = options.idGenerator ?? uuidv7;
  const statements: OutboxStatements = outboxStatements(dialect, table);
  const instrumentation =
    options.instrumentation?.publish === undefined ? undefined : options.instrumentation;
  let logger = options.logger;
  const log = (): Logger => (logger ??= createConsoleLogger());

  function checkDefinition(event: unknown): asserts event is MessageDefinition {
    if (!isDefinition(event))
      throw new TidingsError(
        ErrorCode.INVALID_CONFIG,
        'enqueue: the event must come from defineEvent or defineCommand',
      );
  }

  /** Builds the row of a validated value; throws before anything is written. */
  function rowOf(definition: MessageDefinition, id: string, value: unknown, opts: EnqueueOptions) {
    const { envelope, key } = buildEnvelope(definition, id, value, opts, {
      source,
      now: clock.now(),
      action: 'enqueued',
    });
    const details = { eventType: definition.type, topic: definition.topic, eventId: id, retryable: false };
    if (key.length > maxKeyLength)
      throw new TidingsError(
        ErrorCode.VALIDATION_FAILED,
        `${definition.type} was not enqueued: its key is ${key.length} characters, over ${maxKeyLength}; use a shorter aggregate key`,
        details,
      );
    if (id.length > maxIdLength)
      throw new TidingsError(
        ErrorCode.VALIDATION_FAILED,
        `${definition.type} was not enqueued: its id is over ${maxIdLength} characters; use a shorter id`,
        details,
      );
    const scope =
      instrumentation === undefined
        ? undefined
        : openPublishScope(
            instrumentation,
            publishInfoOf(envelope, {
              service,
              operation: 'create',
              system: 'tidings',
              topic: definition.topic,
              key,
            }),
            log(),
          );
    try {
      applyTraceContext(envelope, scope);
      const size =
        Math.max(
          encodedSize(encodeEnvelope(envelope, 'binary')),
          encodedSize(encodeEnvelope(envelope, 'structured')),
        ) + Buffer.byteLength(key);
      if (size > maxEventBytes) {
        throw new TidingsError(
          ErrorCode.EVENT_TOO_LARGE,
          `${definition.type} was not enqueued: it is ${size} bytes encoded, over the limit of ${maxEventBytes} bytes; ` +
            'store large content elsewhere and publish a reference to it, or raise maxEventBytes',
          { ...details, size, limit: maxEventBytes },
        );
      }
      const row: OutboxRowInput = {
        eventId: id,
        topic: definition.topic,
        key,
        lane: laneOf(key),
        envelope: JSON.stringify(envelope),
        createdAt: clock.now(),
        keyLock: dialect === 'postgres' ? hashInt32(key) : hash32(key) % keyLockSlots,
      };
      return { row, result: { id, topic: definition.topic, key }, scope };
    } catch (error) {
      endScope(scope, { ok: false, error }); // the scope ends however the row failed to be built
      throw error;
    }
  }

  const endScope = (scope: PublishScope | undefined, outcome: PublishOutcome) =>
    endPublishScope(scope, outcome, log(), service);

  /** Runs the inserts of prepared rows, ending their scopes (if any) with the outcome. */
  async function insert(
    statementsToRun: ReadonlyArray<readonly [string, unknown[]]>,
    run: (sql: string, params: unknown[]) => Promise<unknown>,
    scopes: ReadonlyArray<PublishScope | undefined>,
  ): Promise<void> {
    try {
      for (const [sql, params] of statementsToRun) await run(sql, params);
    } catch (error) {
      for (const scope of scopes) endScope(scope, { ok: false, error });
      throw error;
    }
    for (const scope of scopes) endScope(scope, { ok: true });
  }

  /** Definitions whose schema the registry accepted (what `enqueueSync` may enqueue when there is a registry). */
  const registered = new WeakSet<MessageDefinition>();
  async function ensureRegistered(definition: MessageDefinition): Promise<void> {
    if (options.registry === undefined || registered.has(definition)) return;
    await options.registry.ensureRegistered(definition);
    registered.add(definition);
  }

  async function prepare(event: MessageDefinition, data: unknown, opts: EnqueueOptions = {}) {
    checkDefinition(event);
    await ensureRegistered(event);
    const id = opts.id ?? ids();
    const value = await validateWithSchema(
      event.schema,
      data,
      ErrorCode.VALIDATION_FAILED,
      `${event.type} was not enqueued, its data is invalid`,
      { eventType: event.type, topic: event.topic, eventId: id },
    );
    return rowOf(event, id, value, opts);
  }

  const outbox: Outbox = {
    dialect,
    table: table.text,
    async enqueue(tx, event, data, opts) {
      const run = runnerFor(tx, dialect, 'outbox.enqueue');
      const { row, result, scope } = await prepare(event, data, opts);
      if (scope === undefined) {
        for (const [sql, params] of statements.enqueue(row)) await run(sql, params);
      } else await insert(statements.enqueue(row), run, [scope]);
      return result;
    },
    async enqueueMany(tx, items) {
      const run = runnerFor(tx, dialect, 'outbox.enqueueMany');
      const prepared: Array<Awaited<ReturnType<typeof prepare>>> = [];
      try {
        for (const item of items) prepared.push(await prepare(item.event, item.data, item.options));
      } catch (error) {
        // Every scope that opened ends, also when a later item was refused.
        for (const p of prepared) endScope(p.scope, { ok: false, error });
        throw error;
      }
      let rows: ReturnType<OutboxStatements['enqueueMany']>;
      try {
        rows = statements.enqueueMany(prepared.map((p) => p.row));
      } catch (error) {
        for (const p of prepared) endScope(p.scope, { ok: false, error });
        throw error;
      }
      if (instrumentation === undefined) {
        for (const [sql, params] of rows) await run(sql, params);
      } else
        await insert(
          rows,
          run,
          prepared.map((p) => p.scope),
        );
      return prepared.map((p) => p.result);
    },
    enqueueSync(db, event, data, opts = {}) {
      if (dialect !== 'sqlite')
        throw new TidingsError(
          ErrorCode.INVALID_CONFIG,
          `outbox.enqueueSync works on SQLite only; this outbox uses ${dialect}, use await outbox.enqueue(tx, ...)`,
        );
      if (typeof (db as { prepare?: unknown } | null)?.prepare !== 'function')
        throw new TidingsError(
          ErrorCode.INVALID_CONFIG,
          'outbox.enqueueSync: pass the better-sqlite3 Database',
        );
      checkDefinition(event);
      if (options.registry !== undefined && !registered.has(event))
        throw new TidingsError(
          ErrorCode.INVALID_CONFIG,
          `outbox.enqueueSync: ${event.type} version ${event.version} is not registered with the outbox's schema ` +
            'registry yet, and enqueueSync cannot wait for it; call await outbox.registerSchemas([...]) at start-up',
          { eventType: event.type },
        );
      const id = opts.id ?? ids();
      const outcome = event.schema['~standard'].validate(data);
      if (outcome instanceof Promise)
        throw new TidingsError(
          ErrorCode.INVALID_CONFIG,
          `outbox.enqueueSync: the schema of ${event.type} validates asynchronously; use await outbox.enqueue(db, ...) inside BEGIN/COMMIT`,
        );
      if (outcome.issues)
        throw new TidingsError(
          ErrorCode.VALIDATION_FAILED,
          `${event.type} was not enqueued, its data is invalid: ${formatIssues(outcome.issues)}`,
          {
            eventType: event.type,
            topic: event.topic,
            eventId: id,
            issues: outcome.issues,
            retryable: false,
          },
        );
      const { row, result, scope } = rowOf(event, id, outcome.value, opts);
      try {
        requireSqliteTransaction(db, 'outbox.enqueueSync');
        for (const [sql, params] of statements.enqueue(row)) runSqliteSync(db, sql, params);
      } catch (error) {
        endScope(scope, { ok: false, error });
        throw error;
      }
      endScope(scope, { ok: true });
      return result;
    },
    async registerSchemas(definitions) {
      for (const definition of definitions) {
        checkDefinition(definition);
        await ensureRegistered(definition);
      }
    },
    schemaSql: () => [...statements.ddl],
    async setup() {
      const session = await database.session('outbox.setup');
      let broken = false;
      try {
        for (const sql of statements.ddl) await session.run(sql, []);
      } catch (error) {
        broken = true;
        throw error;
      } finally {
        await session.release(broken);
      }
    },
    async status() {
      const session = await database.session('outbox.status');
      let broken = false;
      try {
        const { rows } = await session.run(statements.status, []);
        const row = rows[0] ?? {};
        const oldest = row['oldest'] === null || row['oldest'] === undefined ? null : Number(row['oldest']);
        return {
          backlog: Number(row['backlog'] ?? 0),
          oldestAgeMs: oldest === null ? null : Math.max(0, clock.now() - oldest),
          maxAttempts: Number(row['attempts'] ?? 0),
        };
      } catch (error) {
        broken = true;
        throw error;
      } finally {
        await session.release(broken);
      }
    },
    startRelay(target: RelayTarget, relayOptions?: RelayOptions): Relay {
      if (!database.hasSessions)
        throw new TidingsError(
          ErrorCode.INVALID_CONFIG,
          `startRelay: the outbox's database was created without a pool; pass one (e.g. postgres(pool)) so the relay has connections of its own`,
        );
      return startOutboxRelay(
        { database, statements, table, keepPublishedMs, clock },
        target,
        relayOptions ?? {},
      );
    },
  };
  return outbox;
}
