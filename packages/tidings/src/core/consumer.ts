import type { Clock } from './clock.js';
import { decodeEnvelope } from './codec.js';
import {
  deadLetterRecord,
  getDeadLetter,
  deadLetterTopic,
  resolutionRecord,
  type DeadLetter,
  type DeadLetterReason,
} from './dead-letters.js';
import type { MessageDefinition } from './define.js';
import type { Envelope } from './envelope.js';
import { ErrorCode, TidingsError, describeError, isTidingsError } from './errors.js';
import { composeMiddleware, type HandlerContext, type HandlerFn, type Middleware } from './handler.js';
import type { InboxStore } from './inbox.js';
import type { JournaledOutcome, OutcomeJournal } from './outcomes.js';
import {
  traceIdOf,
  type DeliveryOutcome,
  type DeliveryScope,
  type Instrumentation,
} from './instrumentation.js';
import { LazyChildLogger, type Logger } from './logger.js';
import { idempotent, retry, timeout, type RetryOptions } from './middleware.js';
import type { ParkedEvent, ParkedKeyRef, ParkingStore } from './parking.js';
import { validateWithSchema } from './schema.js';
import { partitionForKey } from './partitioner.js';
import type {
  Delivery,
  OperatorRequest,
  OperatorRequestOutcome,
  OperatorRequestStore,
  StartPosition,
  Subscription,
  Transport,
} from './transport.js';

/** What happens to an event whose retries are spent. */
export type FailurePolicy = 'park' | 'deadLetter';

/** Options of `bus.handle`. Validated and defaulted when the consumer is created. */
export interface ConsumerOptions {
  /** Different keys handled at once. Events of one key are always handled one at a time, in order. Default 8. */
  concurrency?: number;
  /** Deliveries held un-acknowledged at most (queued plus running). Default 256. */
  prefetch?: number;
  /** Where a group with no committed offset starts. Default `'earliest'`: a new group sees the whole history. */
  startFrom?: StartPosition;
  /** Retry policy, or `false` for a single attempt. Default: 5 attempts, 100 ms doubling to 10 s, 20% jitter. */
  retry?: RetryOptions | false;
  /** Per-attempt time limit; past it the attempt fails with `HANDLER_TIMEOUT` (retryable). Default: none. */
  timeoutMs?: number;
  /**
   * Once retries are spent: `'deadLetter'` (default) moves the event to `<topic>.<group>.dlq` and goes on with the
   * key; `'park'` holds the key: later events of that key wait behind the failed one until it is retried or
   * skipped, while other keys keep flowing.
   */
  onFailure?: FailurePolicy;
  /**
   * Skip events this group already handled (idempotent consumer), by (group, event id): an {@link InboxStore}, or
   * `true` for the transport's durable inbox (the embedded log keeps one in its data directory). Default: none.
   */
  inbox?: InboxStore | true;
  /** Extra middleware, outermost first. Runs inside retry (once per attempt) and outside the timeout. */
  middleware?: readonly Middleware[];
  /** How long `close()` waits for running handlers before aborting their signals. Default 10,000 ms. */
  closeTimeoutMs?: number;
  /** Aborting closes the consumer, as `close()` does. */
  signal?: AbortSignal;
}

/** Counts since the consumer started. */
export interface ConsumerStats {
  /** Events the handler finished successfully. */
  processed: number;
  /** Handler attempts after the first (retries). */
  retried: number;
  /** Events whose retries were spent (then parked or dead-lettered). */
  failed: number;
  /** Events parked: failed ones and those queued behind them. */
  parked: number;
  /** Events moved to the dead-letter topic, including undecodable and schema-invalid ones. */
  deadLettered: number;
  /** Events the inbox recognised as already handled. */
  duplicates: number;
  /** Events of types this consumer does not handle, acknowledged without work. */
  skipped: number;
}

/** Where a receipt-like position is: the consumer waits until it has settled everything up to it. */
export interface Position {
  topic: string;
  partition: number;
  offset: number;
}

/** Outcome of retrying a parked key. */
export interface ParkedRetryResult {
  /** Events handled successfully in this retry. */
  processed: number;
  /** Events still parked (0 when the key was released). */
  remaining: number;
  /** Why the first remaining event failed again, if it did. */
  error?: string;
}

/** Internals the bus hands to each consumer. */
export interface ConsumerDeps {
  transport: Transport;
  clock: Clock;
  random: () => number;
  logger: Logger;
  parking: ParkingStore;
  /** The inbox behind `inbox: true`; throws `INVALID_CONFIG` when the transport has none. */
  defaultInbox(): InboxStore;
  /** Where operators' requests for this group arrive, when the transport keeps them. */
  requests(): OperatorRequestStore | undefined;
  /** Builds the handler context's `publish` and `send`, bound to the handled envelope. */
  followUps(envelope: Envelope): Pick<HandlerContext, 'publish' | 'send'>;
  onClosed(consumer: Consumer): void;
  /** The bus's service name, for instrumentation. */
  service: string;
  /** Observes each delivery (tracing, metrics); undefined when none is configured or it has no `deliver`. */
  instrumentation: Instrumentation | undefined;
  /** Where deliveries that did not simply succeed are journaled, for `tidings trace`; undefined when off. */
  journal: OutcomeJournal | undefined;
}

type Work =
  { kind: 'delivery'; delivery: Delivery } | { kind: 'task'; run: () => Promise<void>; cancel: () => void };

interface KeyQueue {
  ref: ParkedKeyRef;
  items: Work[];
}

const groupNamePattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$/;

/**
 * A running handler for one consumer group: the router. It iterates the transport subscription, keeps one queue per
 * (topic, key), runs up to `concurrency` keys at once and each key strictly in order, acknowledges a delivery only
 * after its handler succeeded (or it was parked or dead-lettered), and closes gracefully.
 */
export class Consumer {
  readonly group: string;
  readonly topics: readonly string[];
  readonly types: readonly string[];
  /** Resolves once the consumer has stopped: `undefined` after `close()`, or the error that stopped it. */
  readonly closed: Promise<Error | undefined>;

  readonly #deps: ConsumerDeps;
  readonly #definitions: ReadonlyMap<string, MessageDefinition>;
  readonly #chain: HandlerFn;
  readonly #concurrency: number;
  readonly #prefetch: number;
  readonly #startFrom: StartPosition;
  readonly #policy: FailurePolicy;
  readonly #closeTimeoutMs: number;
  readonly #stats: ConsumerStats = {
    processed: 0,
    retried: 0,
    failed: 0,
    parked: 0,
    deadLettered: 0,
    duplicates: 0,
    skipped: 0,
  };
  readonly #queues = new Map<string, KeyQueue>();
  readonly #ready: string[] = [];
  readonly #readySet = new Set<string>();
  readonly #running = new Map<string, Promise<void>>();
  readonly #abort = new AbortController();
  /** Aborted as soon as close() starts: stops background loops (not handlers). */
  readonly #stopping = new AbortController();
  readonly #tracker = new SettleTracker();
  readonly #externalSignal: AbortSignal | undefined;
  #subscription: Subscription | undefined;
  #closing = false;
  #closePromise: Promise<void> | undefined;
  #resolveClosed!: (value: Error | undefined) => void;

  constructor(
    deps: ConsumerDeps,
    group: string,
    definitions: readonly MessageDefinition[],
    handler: HandlerFn,
    options: ConsumerOptions = {},
  ) {
    const where = `handle("${group}")`;
    const invalid = (message: string) =>
      new TidingsError(ErrorCode.INVALID_CONFIG, `${where}: ${message}`, { group });
    if (typeof group !== 'string' || !groupNamePattern.test(group)) {
      throw invalid(
        `the group name must start with a letter or digit and contain only letters, digits, '_', '.' and '-'`,
      );
    }
    if (definitions.length === 0) throw invalid('give at least one event or command definition to handle');
    if (typeof handler !== 'function') throw invalid('the handler must be a function');
    const byType = new Map<string, MessageDefinition>();
    for (const definition of definitions) {
      if (byType.has(definition.type)) throw invalid(`"${definition.type}" is listed twice`);
      byType.set(definition.type, definition);
    }
    this.#concurrency = options.concurrency ?? 8;
    this.#prefetch = options.prefetch ?? 256;
    this.#closeTimeoutMs = options.closeTimeoutMs ?? 10_000;
    this.#policy = options.onFailure ?? 'deadLetter';
    this.#startFrom = options.startFrom ?? 'earliest';
    if (!Number.isInteger(this.#concurrency) || this.#concurrency < 1 || this.#concurrency > 10_000) {
      throw invalid(`concurrency must be an integer from 1 to 10,000, got ${this.#concurrency}`);
    }
    if (!Number.isInteger(this.#prefetch) || this.#prefetch < 1 || this.#prefetch > 100_000) {
      throw invalid(`prefetch must be an integer from 1 to 100,000, got ${this.#prefetch}`);
    }
    if (!(this.#closeTimeoutMs >= 0))
      throw invalid(`closeTimeoutMs must be >= 0, got ${this.#closeTimeoutMs}`);
    if (this.#policy !== 'park' && this.#policy !== 'deadLetter') {
      throw invalid(`onFailure must be 'park' or 'deadLetter', got ${String(this.#policy)}`);
    }
    this.group = group;
    this.#deps = deps;
    this.#definitions = byType;
    this.types = [...byType.keys()];
    this.topics = [...new Set(definitions.map((d) => d.topic))];
    this.#externalSignal = options.signal;

    // Order, outermost first: inbox (a duplicate costs nothing), retry, user middleware, timeout, handler.
    const chain: Middleware[] = [];
    if (options.inbox) {
      // `true` is resolved per call: a transport that connects lazily supplies its inbox once connected.
      const inbox: InboxStore =
        options.inbox === true
          ? { has: (g, id) => deps.defaultInbox().has(g, id), add: (g, id) => deps.defaultInbox().add(g, id) }
          : options.inbox;
      chain.push(idempotent(inbox, () => this.#stats.duplicates++));
    }
    if (options.retry !== false)
      chain.push(retry(options.retry ?? {}, { clock: deps.clock, random: deps.random }));
    if (deps.instrumentation !== undefined) chain.push(observeAttempts);
    chain.push(...(options.middleware ?? []));
    if (options.timeoutMs !== undefined) chain.push(timeout(options.timeoutMs, { clock: deps.clock }));
    this.#chain = composeMiddleware(chain, async (message, ctx) => {
      const sink = (ctx as { [attemptSink]?: AttemptSink })[attemptSink];
      if (sink) sink.attempts = ctx.attempt;
      if (ctx.attempt > 1) this.#stats.retried++;
      await handler(message, ctx);
    });

    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
  }

  /** Joins the group and starts handling. Called once by the bus. */
  start(): void {
    if (this.#externalSignal?.aborted) {
      void this.close();
      return;
    }
    this.#externalSignal?.addEventListener('abort', () => void this.close(), { once: true });
    this.#subscription = this.#deps.transport.subscribe({
      group: this.group,
      topics: this.topics,
      startFrom: this.#startFrom,
      prefetch: this.#prefetch,
    });
    void this.#intake(this.#subscription);
    void this.#serveOperatorRequests();
  }

  /** How often the consumer looks for operators' requests (retry or skip a parked key, retry a dead letter). */
  static readonly requestPollMs = 1_000;

  /**
   * Carries out operators' requests filed for this group (e.g. by the CLI in another process), for keys whose
   * partition this member owns, so each request runs in the key's queue of exactly one member.
   */
  async #serveOperatorRequests(): Promise<void> {
    const partitionCounts = new Map<string, number>();
    while (!this.#closing) {
      try {
        await this.#deps.clock.sleep(Consumer.requestPollMs, this.#stopping.signal);
      } catch {
        return; // closing
      }
      const store = this.#deps.requests();
      if (!store || !this.#subscription) continue;
      try {
        const owned = new Set(this.#subscription.assignments().map((a) => `${a.topic}\u0000${a.partition}`));
        for (const request of await store.pending(this.group, 100)) {
          if (this.#closing) return;
          if (!this.topics.includes(request.topic)) continue;
          let partitions = partitionCounts.get(request.topic);
          if (partitions === undefined) {
            partitions = (await this.#deps.transport.admin.describeTopic(request.topic)).partitions;
            partitionCounts.set(request.topic, partitions);
          }
          if (!owned.has(`${request.topic}\u0000${partitionForKey(request.key, partitions)}`)) continue;
          await store.complete(request.id, await this.#carryOut(request));
        }
      } catch (error) {
        this.#deps.logger.error(
          { group: this.group, err: error },
          'could not serve operator requests; trying again',
        );
      }
    }
  }

  async #carryOut(request: OperatorRequest): Promise<OperatorRequestOutcome> {
    const ref = { group: this.group, topic: request.topic, key: request.key };
    try {
      if (request.kind === 'retry-dead-letter') {
        const letter = await getDeadLetter(
          this.#deps.transport,
          request.topic,
          this.group,
          request.deadLetterId,
        );
        await this.retryDeadLetter(letter);
        return { ok: true, message: `dead letter ${request.deadLetterId} handled successfully` };
      }
      const result = await this.retryParked(ref, request.kind === 'skip-parked');
      return result.error === undefined
        ? { ok: true, message: `key "${request.key}" released: ${result.processed} event(s) handled` }
        : {
            ok: false,
            message: `key "${request.key}" still parked (${result.remaining} event(s)): ${result.error}`,
          };
    } catch (error) {
      return { ok: false, message: describeError(error) };
    }
  }

  /** Counts since start. */
  stats(): ConsumerStats {
    return { ...this.#stats };
  }

  /**
   * Resolves once this consumer has settled (handled, parked or dead-lettered) every event of the position's
   * partition up to and including its offset, or once the group's committed offset has passed it (when another
   * member owns the partition). Rejects with `TIMEOUT` after `timeoutMs` (default 30,000) and with `CLOSED` if the
   * consumer closes first.
   */
  async waitFor(
    positions: Position | readonly Position[],
    options: { timeoutMs?: number } = {},
  ): Promise<void> {
    const list = Array.isArray(positions) ? (positions as readonly Position[]) : [positions as Position];
    const timeoutMs = options.timeoutMs ?? 30_000;
    const deadline = performance.now() + timeoutMs; // real time: a fake clock must not stall a test's wait
    for (const position of list) {
      while (!this.#tracker.isSettled(position) && !(await this.#committedPast(position))) {
        if (this.#closing) {
          throw new TidingsError(
            ErrorCode.CLOSED,
            `consumer "${this.group}" closed before it reached ${describePosition(position)}`,
            { group: this.group },
          );
        }
        const remainingMs = deadline - performance.now();
        if (remainingMs <= 0) {
          throw new TidingsError(
            ErrorCode.TIMEOUT,
            `consumer "${this.group}" did not reach ${describePosition(position)} within ${timeoutMs} ms; ` +
              `check that its handler succeeds and the group owns the partition`,
            {
              group: this.group,
              topic: position.topic,
              partition: position.partition,
              offset: position.offset,
            },
          );
        }
        await this.#tracker.changed(Math.min(remainingMs, 50));
      }
    }
  }

  async #committedPast(position: Position): Promise<boolean> {
    // While this member owns a partition it has consumed, its own settlements answer; once the partition has moved
    // to another member (a rebalance), only the group's committed offset can.
    const owned = this.#subscription
      ?.assignments()
      .some((a) => a.topic === position.topic && a.partition === position.partition);
    if (owned === true && this.#tracker.seesPartition(position)) return false;
    let description;
    try {
      description = await this.#deps.transport.admin.describeGroup(this.group);
    } catch (error) {
      if (isTidingsError(error, ErrorCode.NOT_FOUND)) return false; // the group's join is not written yet
      throw error;
    }
    const lag = description.lag.find((l) => l.topic === position.topic && l.partition === position.partition);
    return lag !== undefined && lag.committedOffset > position.offset;
  }

  /**
   * Stops intake, lets running handlers finish for up to `closeTimeoutMs`, then aborts their signals, commits what
   * succeeded and leaves the group. Queued and unfinished events are redelivered to the group later. Idempotent.
   */
  close(): Promise<void> {
    this.#closePromise ??= this.#close();
    return this.#closePromise;
  }

  async #close(): Promise<void> {
    this.#closing = true;
    this.#stopping.abort();
    this.#tracker.notify();
    // Queued work never started: deliveries stay un-acknowledged so the group gets them again; queued operator
    // tasks (parked or dead-letter retries) are told the consumer closed.
    for (const queue of this.#queues.values()) {
      for (const item of queue.items) if (item.kind === 'task') item.cancel();
      queue.items.length = 0;
    }
    const running = Promise.allSettled([...this.#running.values()]);
    const stopTimer = new AbortController();
    const timer = this.#deps.clock.sleep(this.#closeTimeoutMs, stopTimer.signal).then(
      () => 'timeout' as const,
      () => 'done' as const,
    );
    const first = await Promise.race([running.then(() => 'done' as const), timer]);
    stopTimer.abort();
    if (first === 'timeout') {
      this.#abort.abort(
        new TidingsError(
          ErrorCode.CLOSED,
          `consumer "${this.group}" is closing: closeTimeoutMs (${this.#closeTimeoutMs} ms) passed`,
          { group: this.group },
        ),
      );
      await running;
    }
    await this.#subscription?.close();
    this.#deps.onClosed(this);
    this.#resolveClosed(undefined);
  }

  async #intake(subscription: Subscription): Promise<void> {
    const iterator = subscription[Symbol.asyncIterator]();
    try {
      for (;;) {
        const next = await iterator.next();
        if (next.done || this.#closing) break;
        this.#tracker.delivered(next.value);
        this.#enqueue({ kind: 'delivery', delivery: next.value }, next.value.topic, next.value.key);
      }
    } catch (error) {
      this.#deps.logger.error({ group: this.group, err: error }, 'consumer stopped: the subscription failed');
      this.#closePromise ??= this.#close();
      return;
    }
    if (!this.#closing) {
      // The transport ended the subscription on its own (transport closed or failed).
      const reason = await subscription.closed;
      this.#closing = true;
      this.#stopping.abort();
      await Promise.allSettled([...this.#running.values()]);
      this.#deps.onClosed(this);
      this.#resolveClosed(reason);
    }
  }

  #enqueue(work: Work, topic: string, key: string): void {
    const id = `${topic}\u0000${key}`;
    let queue = this.#queues.get(id);
    if (!queue) this.#queues.set(id, (queue = { ref: { group: this.group, topic, key }, items: [] }));
    queue.items.push(work);
    if (!this.#running.has(id) && !this.#readySet.has(id)) {
      this.#ready.push(id);
      this.#readySet.add(id);
    }
    this.#schedule();
  }

  #schedule(): void {
    while (this.#running.size < this.#concurrency && this.#ready.length > 0) {
      const id = this.#ready.shift()!;
      this.#readySet.delete(id);
      const queue = this.#queues.get(id);
      const work = queue?.items.shift();
      if (!queue || !work) continue;
      const run = this.#runOne(queue, work).finally(() => {
        this.#running.delete(id);
        if (queue.items.length > 0 && !this.#closing) {
          this.#ready.push(id); // back of the line: other keys get their turn
          this.#readySet.add(id);
        } else if (queue.items.length === 0) {
          this.#queues.delete(id);
        }
        this.#schedule();
      });
      this.#running.set(id, run);
    }
  }

  async #runOne(queue: KeyQueue, work: Work): Promise<void> {
    if (work.kind === 'task') return work.run();
    const { delivery } = work;
    try {
      const settled = await this.#process(queue.ref, delivery);
      if (settled) {
        delivery.ack();
        this.#tracker.settled(delivery);
      }
    } catch (error) {
      // Only infrastructure failures reach here (parking store, dead-letter publish), after in-place retries
      // were interrupted by close. Leave the delivery for redelivery.
      this.#deps.logger.error(
        { group: this.group, topic: delivery.topic, offset: delivery.offset, err: error },
        'event left for redelivery',
      );
    }
  }

  /** Handles one delivery; true when it may be acknowledged. */
  async #process(ref: ParkedKeyRef, delivery: Delivery): Promise<boolean> {
    const decoded = await this.#decode(delivery);
    if (!decoded.ok && decoded.skip) {
      this.#stats.skipped++;
      return true;
    }
    const instrumentation = this.#deps.instrumentation;
    if (instrumentation === undefined) return this.#settle(ref, delivery, decoded, undefined);
    const scope = this.#startScope(instrumentation, delivery, decoded.ok ? decoded.envelope : undefined);
    if (scope === undefined) return this.#settle(ref, delivery, decoded, undefined);
    const report: { outcome: DeliveryOutcome } = { outcome: { status: 'abandoned', attempts: 0 } };
    try {
      return await scope.run(() => this.#settle(ref, delivery, decoded, { scope, report }));
    } finally {
      try {
        scope.end(report.outcome);
      } catch (error) {
        this.#deps.logger.warn(
          { group: this.group, err: error },
          'the instrumentation failed to end a delivery; ignored',
        );
      }
    }
  }

  #startScope(
    instrumentation: Instrumentation,
    delivery: Delivery,
    envelope: Envelope | undefined,
  ): DeliveryScope | undefined {
    try {
      return instrumentation.deliver?.({
        service: this.#deps.service,
        system: this.#deps.transport.name,
        group: this.group,
        topic: delivery.topic,
        partition: delivery.partition,
        offset: delivery.offset,
        key: delivery.key,
        deliveryCount: delivery.deliveryCount,
        envelope,
      });
    } catch (error) {
      this.#deps.logger.warn(
        { group: this.group, err: error },
        'the instrumentation failed to start a delivery; ignored',
      );
      return undefined;
    }
  }

  /** Settles a decoded (or undecodable) delivery: handle, park or dead-letter. True when it may be acknowledged. */
  async #settle(
    ref: ParkedKeyRef,
    delivery: Delivery,
    decoded:
      | { ok: true; envelope: Envelope; data: unknown }
      | { ok: false; skip: false; reason: DeadLetterReason; error: string },
    observed: { scope: DeliveryScope; report: { outcome: DeliveryOutcome } } | undefined,
  ): Promise<boolean> {
    if (!decoded.ok) {
      const settled = await this.#deadLetter(delivery, decoded.reason, decoded.error, 0, undefined);
      if (observed) observed.report.outcome = { status: 'deadLettered', attempts: 0, error: decoded.error };
      return settled;
    }
    if (await this.#deps.parking.isParked(ref)) {
      await this.#withInPlaceRetry(() =>
        this.#deps.parking.append(ref, parkedEventOf(delivery, this.#deps.clock.now())),
      );
      this.#stats.parked++;
      if (observed) observed.report.outcome = { status: 'parked', attempts: 0 };
      this.#journal('parked', decoded.envelope, delivery, 0);
      return true;
    }
    const outcome = await this.#runHandler(decoded.envelope, decoded.data, delivery, observed?.scope);
    if (outcome.ok) {
      if (outcome.attempts > 1) this.#journal('retried', decoded.envelope, delivery, outcome.attempts);
      if (observed)
        observed.report.outcome = {
          status: outcome.attempts === 0 ? 'duplicate' : 'processed',
          attempts: outcome.attempts,
        };
      return true;
    }
    if (this.#closing) {
      if (observed)
        observed.report.outcome = { status: 'abandoned', attempts: outcome.attempts, error: outcome.error };
      return false;
    }
    this.#stats.failed++;
    if (this.#policy === 'park') {
      const failure = { error: describeError(outcome.error), attempts: outcome.attempts };
      await this.#withInPlaceRetry(() =>
        this.#deps.parking.append(ref, parkedEventOf(delivery, this.#deps.clock.now()), failure),
      );
      this.#stats.parked++;
      if (observed)
        observed.report.outcome = { status: 'parked', attempts: outcome.attempts, error: outcome.error };
      this.#journal('parked', decoded.envelope, delivery, outcome.attempts, failure.error);
      this.#deps.logger.warn(
        {
          group: this.group,
          topic: ref.topic,
          key: ref.key,
          eventId: decoded.envelope.id,
          ...traceFields(decoded.envelope, observed?.scope),
          err: outcome.error,
        },
        'key parked',
      );
      return true;
    }
    const reason: DeadLetterReason = isTidingsError(outcome.error, ErrorCode.HANDLER_TIMEOUT)
      ? ErrorCode.HANDLER_TIMEOUT
      : ErrorCode.HANDLER_FAILED;
    const settled = await this.#deadLetter(
      delivery,
      reason,
      describeError(outcome.error),
      outcome.attempts,
      decoded.envelope,
      observed?.scope,
    );
    if (observed)
      observed.report.outcome = { status: 'deadLettered', attempts: outcome.attempts, error: outcome.error };
    return settled;
  }

  /** Journals an outcome other than a first-attempt success (see `outcomes.ts`). */
  #journal(
    outcome: JournaledOutcome,
    envelope: Envelope,
    record: Pick<Delivery, 'topic' | 'partition' | 'offset' | 'key'>,
    attempts: number,
    error?: string,
  ): void {
    this.#deps.journal?.record({
      outcome,
      group: this.group,
      topic: record.topic,
      partition: record.partition,
      offset: record.offset,
      key: record.key,
      eventId: envelope.id,
      correlationId: envelope.correlationid ?? envelope.id,
      attempts,
      ...(error === undefined ? {} : { error }),
      at: this.#deps.clock.now(),
    });
  }

  async #decode(
    record: Pick<Delivery, 'headers' | 'value' | 'topic'>,
  ): Promise<
    | { ok: true; envelope: Envelope; data: unknown }
    | { ok: false; skip: true }
    | { ok: false; skip: false; reason: DeadLetterReason; error: string }
  > {
    let envelope: Envelope;
    try {
      envelope = decodeEnvelope(record);
    } catch (error) {
      return { ok: false, skip: false, reason: ErrorCode.DECODE_FAILED, error: describeError(error) };
    }
    const definition = this.#definitions.get(envelope.type);
    if (!definition) return { ok: false, skip: true };
    const version = envelope.schemaversion ?? 1;
    if (version > definition.version) {
      return {
        ok: false,
        skip: false,
        reason: ErrorCode.UNKNOWN_VERSION,
        error: `${envelope.type} version ${version} is newer than the version this consumer knows (${definition.version}); deploy the newer definition, then retry the dead letter`,
      };
    }
    // Older events are brought up to the current version first (the definition's upcasters), then validated.
    let payload = envelope.data;
    if (version < definition.version) {
      try {
        payload = await definition.upcast(envelope.data, version);
      } catch (error) {
        const reason = isTidingsError(error, ErrorCode.UNKNOWN_VERSION)
          ? ErrorCode.UNKNOWN_VERSION
          : ErrorCode.SCHEMA_INVALID;
        return { ok: false, skip: false, reason, error: describeError(error) };
      }
    }
    try {
      const data = await validateWithSchema(
        definition.schema,
        payload,
        ErrorCode.SCHEMA_INVALID,
        `${envelope.type} ${envelope.id} does not match its schema`,
      );
      return { ok: true, envelope: { ...envelope, data }, data };
    } catch (error) {
      return { ok: false, skip: false, reason: ErrorCode.SCHEMA_INVALID, error: describeError(error) };
    }
  }

  async #runHandler(
    envelope: Envelope,
    data: unknown,
    record: Pick<Delivery, 'topic' | 'partition' | 'offset' | 'key'> & { deliveryCount: number },
    scope?: DeliveryScope,
  ): Promise<{ ok: true; attempts: number } | { ok: false; error: unknown; attempts: number }> {
    const sink: AttemptSink = { attempts: 0, scope };
    // The handler's logger binds its fields on first use: most handlers never log.
    const logger = new LazyChildLogger(this.#deps.logger, () => ({
      group: this.group,
      eventId: envelope.id,
      eventType: envelope.type,
      ...traceFields(envelope, scope),
    }));
    const ctx: HandlerContext & { [attemptSink]: typeof sink } = {
      envelope,
      group: this.group,
      topic: record.topic,
      partition: record.partition,
      offset: record.offset,
      attempt: 1,
      deliveryCount: record.deliveryCount,
      signal: this.#abort.signal,
      logger,
      ...this.#deps.followUps(envelope),
      [attemptSink]: sink,
    };
    try {
      await this.#chain({ type: envelope.type, data, key: record.key }, ctx);
      if (sink.attempts > 0) this.#stats.processed++; // 0: the inbox recognised a duplicate, the handler never ran
      return { ok: true, attempts: sink.attempts };
    } catch (error) {
      return { ok: false, error, attempts: Math.max(1, sink.attempts) };
    }
  }

  async #deadLetter(
    delivery: Delivery,
    reason: DeadLetterReason,
    error: string,
    attempts: number,
    envelope: Envelope | undefined,
    scope?: DeliveryScope,
  ): Promise<boolean> {
    const record = deadLetterRecord(delivery, this.group, reason, error, attempts, this.#deps.clock.now());
    await this.#withInPlaceRetry(() =>
      this.#deps.transport.publish(deadLetterTopic(delivery.topic, this.group), [record]),
    );
    this.#stats.deadLettered++;
    this.#deps.logger.warn(
      {
        group: this.group,
        topic: delivery.topic,
        offset: delivery.offset,
        ...(envelope === undefined ? {} : { eventId: envelope.id, ...traceFields(envelope, scope) }),
        reason,
        error,
      },
      'event dead-lettered',
    );
    return true;
  }

  /**
   * Retries an infrastructure step (parking store, dead-letter publish) in place, so the key's order holds, with
   * backoff up to 5 s, until it succeeds or the consumer closes (then rejects, leaving the delivery un-acked).
   */
  async #withInPlaceRetry(step: () => unknown): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await step();
        return;
      } catch (error) {
        if (this.#closing) throw error;
        const delayMs = Math.min(5_000, 50 * 2 ** Math.min(attempt, 10));
        this.#deps.logger.error(
          { group: this.group, attempt, delayMs, err: error },
          'could not park or dead-letter an event; trying again',
        );
        await this.#deps.clock.sleep(delayMs, this.#abort.signal).catch(() => undefined);
      }
    }
  }

  /** Runs `task` in the key's queue, after the key's queued events, so it is ordered with them. */
  #runInKeyQueue<T>(topic: string, key: string, task: () => Promise<T>): Promise<T> {
    if (this.#closing)
      return Promise.reject(
        new TidingsError(ErrorCode.CLOSED, `consumer "${this.group}" is closed`, { group: this.group }),
      );
    return new Promise<T>((resolve, reject) => {
      const closed = () =>
        reject(
          new TidingsError(ErrorCode.CLOSED, `consumer "${this.group}" closed before the request ran`, {
            group: this.group,
          }),
        );
      this.#enqueue({ kind: 'task', run: () => task().then(resolve, reject), cancel: closed }, topic, key);
    });
  }

  /**
   * Handles a parked key's events in order through this consumer's handler (with its retry policy). With
   * `skipFirst`, the failed event is dropped first. Stops at the first failure, which stays parked.
   */
  retryParked(ref: ParkedKeyRef, skipFirst: boolean): Promise<ParkedRetryResult> {
    return this.#runInKeyQueue(ref.topic, ref.key, async () => {
      const parking = this.#deps.parking;
      if (!(await parking.get(ref))) {
        throw new TidingsError(
          ErrorCode.NOT_FOUND,
          `key "${ref.key}" of group "${ref.group}" on topic "${ref.topic}" is not parked`,
          { group: ref.group, topic: ref.topic },
        );
      }
      if (skipFirst) {
        const first = this.#deps.journal === undefined ? undefined : (await parking.get(ref))?.events[0];
        await parking.shift(ref);
        if (first !== undefined && this.#deps.journal !== undefined) {
          const decoded = await this.#decode({
            topic: ref.topic,
            headers: first.headers,
            value: first.value,
          });
          if (decoded.ok)
            this.#journal(
              'skipped',
              decoded.envelope,
              { ...ref, partition: first.partition, offset: first.offset },
              0,
            );
        }
      }
      let processed = 0;
      for (;;) {
        const parked = await parking.get(ref);
        const event = parked?.events[0];
        if (!parked || !event) return { processed, remaining: 0 };
        const record = {
          topic: ref.topic,
          key: ref.key,
          partition: event.partition,
          offset: event.offset,
          deliveryCount: 1,
          headers: event.headers,
          value: event.value,
        };
        const decoded = await this.#decode(record);
        if (decoded.ok) {
          const outcome = await this.#runHandler(decoded.envelope, decoded.data, record);
          if (!outcome.ok) {
            const error = describeError(outcome.error);
            await parking.recordFailure(ref, { error, attempts: parked.attempts + outcome.attempts });
            return { processed, remaining: parked.events.length, error };
          }
          processed++;
          this.#journal('released', decoded.envelope, record, outcome.attempts);
        }
        await parking.shift(ref);
      }
    });
  }

  /**
   * Handles a dead letter again through this consumer's handler; on success marks it retried on the dead-letter
   * topic. Rejects with the handler's error (wrapped as `HANDLER_FAILED`) if it fails again; it then stays listed.
   */
  retryDeadLetter(letter: DeadLetter): Promise<void> {
    return this.#runInKeyQueue(letter.topic, letter.key, async () => {
      const record = {
        topic: letter.topic,
        key: letter.key,
        partition: letter.partition,
        offset: letter.offset,
        deliveryCount: 1,
        headers: letter.headers,
        value: letter.value,
      };
      const decoded = await this.#decode(record);
      if (!decoded.ok) {
        const why = decoded.skip ? `its type is not handled by group "${this.group}"` : decoded.error;
        throw new TidingsError(
          ErrorCode.HANDLER_FAILED,
          `dead letter ${letter.id} cannot be retried: ${why}`,
          { group: this.group, topic: letter.topic, retryable: false },
        );
      }
      const outcome = await this.#runHandler(decoded.envelope, decoded.data, record);
      if (!outcome.ok) {
        throw new TidingsError(
          ErrorCode.HANDLER_FAILED,
          `dead letter ${letter.id} failed again: ${describeError(outcome.error)}`,
          {
            group: this.group,
            topic: letter.topic,
            eventId: decoded.envelope.id,
            cause: outcome.error,
          },
        );
      }
      await this.#deps.transport.publish(letter.deadLetterTopic, [
        resolutionRecord(letter.id, letter.key, 'retried', this.#deps.clock.now()),
      ]);
    });
  }
}

/**
 * A per-delivery counter carried in the handler context under a symbol (object spread copies it), so the router
 * learns how many attempts the middleware chain made.
 */
const attemptSink = Symbol('tidings.attemptSink');

/** What the router learns from inside the chain about one delivery. */
interface AttemptSink {
  attempts: number;
  /** The delivery's instrumentation scope, told of each failed attempt. */
  scope: DeliveryScope | undefined;
}

/**
 * Placed right inside `retry` when instrumentation is configured: tells the delivery's scope of each failed attempt
 * (timeouts included), so a tracer can record retries as span events.
 */
const observeAttempts: Middleware = (next) => async (message, ctx) => {
  try {
    await next(message, ctx);
  } catch (error) {
    const scope = (ctx as { [attemptSink]?: AttemptSink })[attemptSink]?.scope;
    try {
      scope?.attemptFailed?.(ctx.attempt, error);
    } catch {
      // An instrumentation must not change the outcome of an attempt.
    }
    throw error;
  }
};

/** `traceId` (and what the scope adds, e.g. `spanId`) for log lines about `envelope`. */
function traceFields(
  envelope: Envelope,
  scope: DeliveryScope | undefined,
): Readonly<Record<string, unknown>> {
  if (scope?.logFields !== undefined) return scope.logFields;
  if (envelope.traceparent === undefined) return noFields;
  const traceId = traceIdOf(envelope.traceparent);
  return traceId === undefined ? noFields : { traceId };
}

const noFields: Readonly<Record<string, unknown>> = Object.freeze({});

function parkedEventOf(delivery: Delivery, now: number): ParkedEvent {
  return {
    partition: delivery.partition,
    offset: delivery.offset,
    headers: delivery.headers,
    value: delivery.value,
    timestamp: delivery.timestamp,
    parkedAt: now,
  };
}

function describePosition(position: Position): string {
  return `${position.topic}[${position.partition}]@${position.offset}`;
}

/**
 * Which deliveries of each partition this consumer has settled, to answer "has everything up to offset N been
 * handled?" without asking the transport. Memory is bounded by the prefetch (only unsettled offsets are kept).
 */
class SettleTracker {
  readonly #partitions = new Map<string, { maxDelivered: number; unsettled: Set<number> }>();
  #waiters: Array<() => void> = [];

  delivered(delivery: Delivery): void {
    const id = `${delivery.topic}\u0000${delivery.partition}`;
    let state = this.#partitions.get(id);
    if (!state) this.#partitions.set(id, (state = { maxDelivered: -1, unsettled: new Set() }));
    state.maxDelivered = Math.max(state.maxDelivered, delivery.offset);
    state.unsettled.add(delivery.offset);
  }

  settled(delivery: Delivery): void {
    this.#partitions.get(`${delivery.topic}\u0000${delivery.partition}`)?.unsettled.delete(delivery.offset);
    this.notify();
  }

  seesPartition(position: Position): boolean {
    return this.#partitions.has(`${position.topic}\u0000${position.partition}`);
  }

  isSettled(position: Position): boolean {
    const state = this.#partitions.get(`${position.topic}\u0000${position.partition}`);
    if (!state || state.maxDelivered < position.offset) return false;
    for (const offset of state.unsettled) if (offset <= position.offset) return false;
    return true;
  }

  notify(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  /** Resolves on the next settle, or after `maxWaitMs` (real time), whichever is first. */
  changed(maxWaitMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, maxWaitMs);
      this.#waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
