import { systemClock, type Clock } from './clock.js';
import { encodeEnvelope, encodedSize, type WireMode } from './codec.js';
import { Consumer, type ConsumerDeps, type ConsumerOptions, type ParkedRetryResult } from './consumer.js';
import { getDeadLetter, listDeadLetters, resolutionRecord, type DeadLetter } from './dead-letters.js';
import type { CommandDefinition, EventDefinition, InputOf, MessageDefinition } from './define.js';
import { isDefinition } from './define.js';
import { buildEnvelope } from './envelope-builder.js';
import type { Envelope } from './envelope.js';
import { ErrorCode, TidingsError, describeError, isTidingsError } from './errors.js';
import type { HandledMessage, HandlerContext, HandlerFn, PublishOptions, Receipt } from './handler.js';
import { uuidv7, type IdGenerator } from './ids.js';
import { createConsoleLogger, type Logger } from './logger.js';
import type { InboxStore } from './inbox.js';
import { createMemoryParking, type ParkedKey, type ParkedKeyRef, type ParkingStore } from './parking.js';
import { validateWithSchema } from './schema.js';
import type { OutgoingRecord, Transport } from './transport.js';
import type { Instrumentation, PublishOutcome, PublishScope } from './instrumentation.js';
import { applyTraceContext, endPublishScope, openPublishScope, publishInfoOf } from './publish-scope.js';
import { createTopologyRecorder } from './topology.js';
import { createOutcomeJournal } from './outcomes.js';
import type { Relay, RelaySource } from './relay.js';
import { createDefaultTransport } from './default-transport.js';

/** Options of {@link createBus}. Validated and defaulted once, here. */
export interface BusOptions {
  /**
   * The name of this service: the envelope's `source` is `tidings://<service>` unless `source` is given.
   * Default: the `TIDINGS_SERVICE` environment variable, else `app`.
   */
  service?: string;
  /**
   * Where events go. Default: the embedded durable log in `dataDir`, owned by this bus (loaded on first use; needs
   * better-sqlite3 12). A transport passed in is shared, and not closed by `bus.close()`: whoever created it closes it.
   */
  transport?: Transport;
  /**
   * The data directory of the default transport. Default: the `TIDINGS_DATA_DIR` environment variable, else
   * `./.tidings`. Ignored when `transport` is given.
   */
  dataDir?: string;
  /** The CloudEvents `source` attribute. Default `tidings://<service>`. */
  source?: string;
  /** How envelopes travel: attributes as headers (`binary`, default) or one JSON document (`structured`). */
  wireMode?: WireMode;
  /** The largest encoded event (headers plus body) `publish` accepts. Default 1 MiB (1,048,576 bytes). */
  maxEventBytes?: number;
  /** Where parked keys are kept. Default: the transport's durable store (the embedded log has one), else memory. */
  parking?: ParkingStore;
  /** Default: JSON lines on stderr at level `warn` (or `TIDINGS_LOG_LEVEL`). Pass pino for production. */
  logger?: Logger;
  /** Time, for tests. Default: the system clock. */
  clock?: Clock;
  /** Event ids. Default: UUIDv7. */
  idGenerator?: IdGenerator;
  /** Randomness for retry jitter, a function returning [0, 1). Default `Math.random`. */
  random?: () => number;
  /**
   * A schema registry (`createSchemaRegistry` from `tidings/registry`, or anything with `ensureRegistered`). Before a
   * definition version is first published or sent, its JSON Schema is registered under the type (once per
   * definition, cached); when the registered history forbids it, `publish` rejects with `SCHEMA_INCOMPATIBLE` and
   * nothing is written. Default: none (no registry check).
   */
  registry?: { ensureRegistered(definition: MessageDefinition): Promise<void> };
  /**
   * Observes every publish and delivery: tracing and metrics. `createOtelInstrumentation()` from `tidings/otel`
   * gives OpenTelemetry spans, trace context in every envelope, and metrics; it also sees the events this bus's
   * outbox relays publish (see `startRelay`). Default: none (the seam then costs nothing per event).
   */
  instrumentation?: Instrumentation;
  /**
   * The events and commands this service publishes, declared up front so that `tidings topology` and
   * `tidings asyncapi` know them before the first publish. Types are also recorded when first published.
   */
  produces?: readonly MessageDefinition[];
  /**
   * Whether the bus records what it produces and consumes on the transport's `__topology` topic (each fact once
   * per bus life), for `tidings topology`, `tidings asyncapi` and `tidings trace`. Types its outbox relays publish
   * count as produced by this bus. Default `true`.
   */
  topology?: boolean;
  /**
   * Whether consumers journal deliveries that did not simply succeed at the first attempt (handled after retries,
   * parked, released or skipped) on the transport's `__outcomes` topic, for `tidings trace`. A first-attempt
   * success writes nothing. Default `true`.
   */
  journal?: boolean;
}

/** An item of {@link Bus.publishMany}. */
export interface PublishManyItem<E extends EventDefinition = EventDefinition> {
  event: E;
  data: InputOf<E>;
  options?: Omit<PublishOptions, 'signal'>;
}

/** Parked keys of this bus's consumers. */
export interface ParkedApi {
  /** Every parked key, of one group or of all. */
  list(group?: string): Promise<ParkedKey[]>;
  /**
   * Handles the key's events again, in order, with the group's handler in this process. Resolves with how many were
   * handled; the key is released when none remain. Rejects with `NOT_FOUND` when the key is not parked or the group
   * has no consumer in this process.
   */
  retry(ref: ParkedKeyRef): Promise<ParkedRetryResult>;
  /** Drops the key's failed event, then handles the ones that waited behind it, as `retry` does. */
  skip(ref: ParkedKeyRef): Promise<ParkedRetryResult>;
}

/** Dead letters of this bus's consumer groups. */
export interface DeadLettersApi {
  /** Unresolved dead letters of `group` for `topic`, oldest first, at most `limit` (default 100). */
  list(query: { group: string; topic: string; limit?: number }): Promise<DeadLetter[]>;
  /**
   * Handles the dead letter again with the group's handler in this process; on success it is marked retried and no
   * longer listed. Rejects with `HANDLER_FAILED` if it fails again, `NOT_FOUND` if it does not exist or the group has
   * no consumer here.
   */
  retry(query: { group: string; topic: string; id: string }): Promise<void>;
  /** Marks the dead letter skipped: it is no longer listed and is never handled. */
  skip(query: { group: string; topic: string; id: string }): Promise<void>;
}

/**
 * The bus: publishes events, sends commands and runs handlers over one transport.
 *
 * Delivery promises: `publish` resolves only once the transport holds the event durably; each group receives every
 * event at least once and commits its offset only after its handler succeeded; events of one key reach a group in
 * publish order; exactly-once *effects* come from the inbox, not from the transport.
 */
export interface Bus {
  readonly service: string;
  readonly transport: Transport;
  /**
   * Validates `data` against the event's schema, then appends the event to its topic. Resolves with where it landed
   * once the transport holds it durably. Rejects before writing anything with `VALIDATION_FAILED` (bad data),
   * `EVENT_TOO_LARGE` (over `maxEventBytes` or the transport's limit) or `INVALID_CONFIG` (a command, use `send`);
   * with `PUBLISH_FAILED` / `TRANSPORT_UNAVAILABLE` when the transport failed, in which case the event may or may
   * not have been written (publish again with the same `id` and let the inbox drop the duplicate).
   */
  publish<E extends EventDefinition>(event: E, data: InputOf<E>, options?: PublishOptions): Promise<Receipt>;
  /**
   * Publishes several events. Every item is validated and encoded before any is written, so one bad item rejects
   * the whole call with nothing written. Items of one topic go to the transport in one call, in order. Resolves with
   * receipts in input order once all are durable.
   */
  publishMany(items: readonly PublishManyItem[], options?: { signal?: AbortSignal }): Promise<Receipt[]>;
  /**
   * Sends a command to its one handler (the group that handles it): validated, then durable on the command's topic
   * when this resolves. Rejects as `publish` does.
   */
  send<C extends CommandDefinition>(command: C, data: InputOf<C>, options?: PublishOptions): Promise<Receipt>;
  /**
   * Starts a consumer in `group` for the given events (and commands). The handler receives each event, with the
   * definition's schema-validated data, and a context. The consumer joins the group at once and runs until closed.
   *
   * Throws `INVALID_CONFIG` at once for a bad group name or option, and when a command handled here already has a
   * handler on this bus (a command has exactly one).
   */
  handle<const D extends readonly MessageDefinition[]>(
    group: string,
    definitions: D,
    handler: (message: HandledMessage<D>, ctx: HandlerContext) => Promise<void> | void,
    options?: ConsumerOptions,
  ): Consumer;
  readonly parked: ParkedApi;
  readonly deadLetters: DeadLettersApi;
  /**
   * Starts a relay that publishes the events stored in `outbox` (from `tidings/outbox`) through this bus's
   * transport and wire mode, per key in the order they were enqueued, in batches, until it is closed or the bus
   * closes. The envelopes were built at enqueue, so a re-publish after a crash carries the same event id and the
   * consumers' inbox drops it. Several relays (in this or other processes) may run on one outbox safely.
   *
   * The bus's `instrumentation` sees each relayed event as a `publish` (with `relayed: true`, parented on the stored
   * trace context; the stored envelope is not rewritten), and its topology records each relayed type as produced by
   * this bus's service.
   *
   * Throws `CLOSED` when the bus is closed and `INVALID_CONFIG` for a bad option or an outbox without a database
   * connection for relaying.
   */
  startRelay<TOptions>(outbox: RelaySource<TOptions>, options?: TOptions): Relay;
  /** The consumers running on this bus. */
  consumers(): readonly Consumer[];
  /**
   * Closes every consumer (gracefully, see `Consumer.close`), then the transport if the bus created it. Publishing
   * afterwards rejects with `CLOSED`. Idempotent.
   */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const defaultMaxEventBytes = 1024 * 1024;

/**
 * Creates a bus. With no options it runs on the embedded durable log in `./.tidings` (or `TIDINGS_DATA_DIR`).
 * Throws `INVALID_CONFIG` for a bad option.
 */
export function createBus(options: BusOptions = {}): Bus {
  const invalid = (message: string) => new TidingsError(ErrorCode.INVALID_CONFIG, `createBus: ${message}`);
  if (typeof options !== 'object' || options === null)
    throw invalid('pass an options object, e.g. createBus({ service: "orders" })');
  const service = options.service ?? process.env.TIDINGS_SERVICE ?? 'app';
  if (typeof service !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/.test(service)) {
    throw invalid(
      `"service" must be a name of letters, digits, '_', '.' and '-', e.g. "orders"; got ${JSON.stringify(service)}`,
    );
  }
  const ownsTransport = options.transport === undefined;
  const transport = options.transport ?? createDefaultTransport(options.dataDir);
  const source = options.source ?? `tidings://${service}`;
  const wireMode = options.wireMode ?? 'binary';
  if (wireMode !== 'binary' && wireMode !== 'structured')
    throw invalid(`"wireMode" must be 'binary' or 'structured', got ${String(wireMode)}`);
  const maxEventBytes = Math.min(
    options.maxEventBytes ?? defaultMaxEventBytes,
    transport.features.maxRecordBytes,
  );
  if (!Number.isInteger(maxEventBytes) || maxEventBytes < 1)
    throw invalid(`"maxEventBytes" must be a positive integer, got ${maxEventBytes}`);
  const clock = options.clock ?? systemClock;
  const ids = options.idGenerator ?? uuidv7;
  const random = options.random ?? Math.random;
  const logger = options.logger ?? createConsoleLogger();
  const instrumentation = options.instrumentation;
  const declared = options.produces ?? [];
  if (!Array.isArray(declared) || !declared.every(isDefinition))
    throw invalid('"produces" must be an array of definitions from defineEvent or defineCommand');
  const topology =
    options.topology === false
      ? undefined
      : createTopologyRecorder({ transport, service, logger, clock, declared });
  const journal = options.journal === false ? undefined : createOutcomeJournal(transport, logger);
  // Stores are looked up when first used, so a transport that connects lazily can supply its own.
  let memoryParking: ParkingStore | undefined;
  const resolveParking = (): ParkingStore =>
    options.parking ?? transport.stores?.parking ?? (memoryParking ??= createMemoryParking());
  const parking: ParkingStore = {
    isParked: (ref) => resolveParking().isParked(ref),
    append: (ref, event, failure) => resolveParking().append(ref, event, failure),
    recordFailure: (ref, failure) => resolveParking().recordFailure(ref, failure),
    get: (ref) => resolveParking().get(ref),
    list: (group) => resolveParking().list(group),
    shift: (ref) => resolveParking().shift(ref),
  };
  const defaultInbox = (): InboxStore => {
    const inbox = transport.stores?.inbox;
    if (!inbox) {
      throw new TidingsError(
        ErrorCode.INVALID_CONFIG,
        `inbox: true needs a transport with a durable inbox, and "${transport.name}" has none; pass an InboxStore (e.g. createMemoryInbox())`,
      );
    }
    return inbox;
  };

  const consumers = new Set<Consumer>();
  const relays = new Set<Relay>();
  const commandOwners = new Map<string, string>();
  let closed = false;
  let closing: Promise<void> | undefined;

  const ensureOpen = () => {
    if (closed)
      throw new TidingsError(
        ErrorCode.CLOSED,
        `bus of service "${service}" is closed; create a new bus to publish`,
      );
  };

  /** Validates, builds and encodes one message; throws before anything is written. */
  async function prepare(
    definition: MessageDefinition,
    data: unknown,
    kind: 'event' | 'command',
    publishOptions: Omit<PublishOptions, 'signal'> = {},
  ): Promise<{ topic: string; id: string; record: OutgoingRecord; scope: PublishScope | undefined }> {
    if (!isDefinition(definition)) {
      throw new TidingsError(
        ErrorCode.INVALID_CONFIG,
        `${kind === 'event' ? 'publish' : 'send'}: the first argument must come from define${kind === 'event' ? 'Event' : 'Command'}`,
      );
    }
    if (definition.kind !== kind) {
      throw new TidingsError(
        ErrorCode.INVALID_CONFIG,
        kind === 'event'
          ? `publish: "${definition.type}" is a command; send it with bus.send`
          : `send: "${definition.type}" is an event; publish it with bus.publish`,
        { eventType: definition.type },
      );
    }
    if (options.registry !== undefined) await options.registry.ensureRegistered(definition);
    const id = publishOptions.id ?? ids();
    const value = await validateWithSchema(
      definition.schema,
      data,
      ErrorCode.VALIDATION_FAILED,
      `${definition.type} was not published, its data is invalid`,
      {
        eventType: definition.type,
        topic: definition.topic,
        eventId: id,
      },
    );
    const { envelope, key, time } = buildEnvelope(definition, id, value, publishOptions, {
      source,
      now: clock.now(),
    });
    const scope =
      instrumentation === undefined
        ? undefined
        : openPublishScope(
            instrumentation,
            publishInfoOf(envelope, {
              service,
              operation: kind === 'event' ? 'publish' : 'send',
              system: transport.name,
              topic: definition.topic,
              key,
            }),
            logger,
          );
    applyTraceContext(envelope, scope);
    const encoded = encodeEnvelope(envelope, wireMode);
    const size = encodedSize(encoded) + Buffer.byteLength(key);
    if (size > maxEventBytes) {
      const error = new TidingsError(
        ErrorCode.EVENT_TOO_LARGE,
        `${definition.type} was not published: it is ${size} bytes encoded, over the limit of ${maxEventBytes} bytes; ` +
          `store large content elsewhere and publish a reference to it, or raise maxEventBytes (the transport allows ${transport.features.maxRecordBytes})`,
        {
          eventType: definition.type,
          topic: definition.topic,
          eventId: id,
          size,
          limit: maxEventBytes,
          retryable: false,
        },
      );
      endScope(scope, { ok: false, error });
      throw error;
    }
    return {
      topic: definition.topic,
      id,
      record: { key, headers: encoded.headers, value: encoded.value, timestamp: time.getTime() },
      scope,
    };
  }

  /** Ends a publish scope; an instrumentation that throws is logged, never allowed to fail the publish. */
  function endScope(scope: PublishScope | undefined, outcome: PublishOutcome): void {
    endPublishScope(scope, outcome, logger, service);
  }

  async function write(topic: string, records: OutgoingRecord[], signal: AbortSignal | undefined) {
    try {
      return await transport.publish(topic, records, signal ? { signal } : {});
    } catch (error) {
      if (isTidingsError(error)) throw error;
      throw new TidingsError(
        ErrorCode.PUBLISH_FAILED,
        `publishing to "${topic}" failed: ${describeError(error)}; the event may or may not be stored`,
        {
          topic,
          cause: error,
        },
      );
    }
  }

  async function publishOne(
    definition: MessageDefinition,
    data: unknown,
    kind: 'event' | 'command',
    publishOptions: PublishOptions = {},
  ): Promise<Receipt> {
    ensureOpen();
    const { signal, ...rest } = publishOptions;
    const prepared = await prepare(definition, data, kind, rest);
    if (prepared.scope === undefined) {
      const [ack] = await write(prepared.topic, [prepared.record], signal);
      if (!ack) throw noAck(definition.type, prepared.topic);
      topology?.produced(definition);
      return { id: prepared.id, topic: ack.topic, partition: ack.partition, offset: ack.offset };
    }
    let ack;
    try {
      [ack] = await write(prepared.topic, [prepared.record], signal);
      if (!ack) throw noAck(definition.type, prepared.topic);
    } catch (error) {
      endScope(prepared.scope, { ok: false, error });
      throw error;
    }
    endScope(prepared.scope, { ok: true, ack });
    topology?.produced(definition);
    return { id: prepared.id, topic: ack.topic, partition: ack.partition, offset: ack.offset };
  }

  const noAck = (type: string, topic: string) =>
    new TidingsError(
      ErrorCode.PUBLISH_FAILED,
      `transport "${transport.name}" returned no acknowledgement for ${type}`,
      { topic },
    );

  /** `ctx.publish` / `ctx.send` for a handled envelope: causation and correlation and trace carried forward. */
  function followUps(handled: Envelope): Pick<HandlerContext, 'publish' | 'send'> {
    const carried = (publishOptions: PublishOptions = {}): PublishOptions => ({
      correlationId: handled.correlationid ?? handled.id,
      causationId: handled.id,
      ...(handled.traceparent === undefined ? {} : { traceparent: handled.traceparent }),
      ...(handled.tracestate === undefined ? {} : { tracestate: handled.tracestate }),
      ...publishOptions,
    });
    return {
      publish: (event, data, publishOptions) => publishOne(event, data, 'event', carried(publishOptions)),
      send: (command, data, publishOptions) => publishOne(command, data, 'command', carried(publishOptions)),
    };
  }

  const deps: ConsumerDeps = {
    transport,
    clock,
    random,
    logger,
    parking,
    defaultInbox,
    requests: () => transport.stores?.requests,
    followUps,
    service,
    instrumentation: instrumentation?.deliver === undefined ? undefined : instrumentation,
    journal,
    onClosed: (consumer) => {
      consumers.delete(consumer);
      for (const [type, group] of commandOwners)
        if (group === consumer.group && !hasConsumer(group)) commandOwners.delete(type);
    },
  };

  const hasConsumer = (group: string) => [...consumers].some((c) => c.group === group);

  function localConsumer(group: string, topic: string): Consumer {
    const consumer = [...consumers].find((c) => c.group === group && c.topics.includes(topic));
    if (!consumer) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `no consumer of group "${group}" for topic "${topic}" runs on this bus; start it with bus.handle("${group}", ...) in this process first`,
        { group, topic },
      );
    }
    return consumer;
  }

  const bus: Bus = {
    service,
    transport,
    publish: (event, data, publishOptions) => publishOne(event, data, 'event', publishOptions),
    send: (command, data, publishOptions) => publishOne(command, data, 'command', publishOptions),
    async publishMany(items, manyOptions = {}) {
      ensureOpen();
      const preparing = items.map((item) => prepare(item.event, item.data, 'event', item.options));
      let prepared: Array<Awaited<ReturnType<typeof prepare>>>;
      if (instrumentation?.publish === undefined) {
        prepared = await Promise.all(preparing);
      } else {
        // Every publish scope that opened must end, also when another item was refused.
        const settled = await Promise.allSettled(preparing);
        const refused = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
        if (refused) {
          for (const s of settled)
            if (s.status === 'fulfilled') endScope(s.value.scope, { ok: false, error: refused.reason });
          throw refused.reason;
        }
        prepared = settled.map(
          (s) => (s as PromiseFulfilledResult<Awaited<ReturnType<typeof prepare>>>).value,
        );
      }
      const byTopic = new Map<string, number[]>();
      prepared.forEach((p, index) => {
        const list = byTopic.get(p.topic) ?? [];
        list.push(index);
        byTopic.set(p.topic, list);
      });
      const receipts = new Array<Receipt>(items.length);
      await Promise.all(
        [...byTopic].map(async ([topic, indexes]) => {
          let acks;
          try {
            acks = await write(
              topic,
              indexes.map((i) => prepared[i]!.record),
              manyOptions.signal,
            );
          } catch (error) {
            for (const i of indexes) endScope(prepared[i]!.scope, { ok: false, error });
            throw error;
          }
          indexes.forEach((itemIndex, n) => {
            const ack = acks[n];
            if (!ack) {
              const error = new TidingsError(
                ErrorCode.PUBLISH_FAILED,
                `transport "${transport.name}" returned too few acknowledgements for "${topic}"`,
                { topic },
              );
              endScope(prepared[itemIndex]!.scope, { ok: false, error });
              throw error;
            }
            endScope(prepared[itemIndex]!.scope, { ok: true, ack });
            receipts[itemIndex] = {
              id: prepared[itemIndex]!.id,
              topic: ack.topic,
              partition: ack.partition,
              offset: ack.offset,
            };
          });
        }),
      );
      if (topology !== undefined) for (const item of items) topology.produced(item.event);
      return receipts;
    },
    handle(group, definitions, handler, consumerOptions) {
      ensureOpen();
      for (const definition of definitions) {
        if (!isDefinition(definition)) {
          throw new TidingsError(
            ErrorCode.INVALID_CONFIG,
            `handle("${group}"): every item of the list must come from defineEvent or defineCommand`,
            { group },
          );
        }
        if (definition.kind !== 'command') continue;
        const owner = commandOwners.get(definition.type);
        if (owner !== undefined && owner !== group) {
          throw new TidingsError(
            ErrorCode.INVALID_CONFIG,
            `handle("${group}"): command "${definition.type}" is already handled by group "${owner}"; a command has exactly one handler`,
            { group, eventType: definition.type },
          );
        }
      }
      if (consumerOptions?.inbox === true && transport.stores?.inbox === undefined && !ownsTransport)
        defaultInbox(); // throws at setup
      const consumer = new Consumer(
        deps,
        group,
        definitions,
        handler as unknown as HandlerFn,
        consumerOptions,
      );
      for (const definition of definitions)
        if (definition.kind === 'command') commandOwners.set(definition.type, group);
      consumers.add(consumer);
      consumer.start();
      topology?.consumes(group, definitions);
      return consumer;
    },
    parked: {
      list: async (group) => parking.list(group),
      retry: async (ref) => localConsumer(ref.group, ref.topic).retryParked(ref, false),
      skip: async (ref) => localConsumer(ref.group, ref.topic).retryParked(ref, true),
    },
    deadLetters: {
      list: ({ group, topic, limit }) => listDeadLetters(transport, topic, group, limit ?? 100),
      retry: async ({ group, topic, id }) => {
        const consumer = localConsumer(group, topic);
        await consumer.retryDeadLetter(await getDeadLetter(transport, topic, group, id));
      },
      skip: async ({ group, topic, id }) => {
        const letter = await getDeadLetter(transport, topic, group, id);
        await transport.publish(letter.deadLetterTopic, [
          resolutionRecord(letter.id, letter.key, 'skipped', clock.now()),
        ]);
      },
    },
    consumers: () => [...consumers],
    startRelay(outbox, relayOptions) {
      ensureOpen();
      const relay = outbox.startRelay(
        {
          transport,
          wireMode,
          logger,
          clock,
          service,
          instrumentation: instrumentation?.publish === undefined ? undefined : instrumentation,
          topology,
        },
        relayOptions,
      );
      relays.add(relay);
      void relay.closed.then(() => relays.delete(relay));
      return relay;
    },
    close() {
      closing ??= (async () => {
        closed = true;
        await Promise.allSettled([...relays].map((relay) => relay.close()));
        await Promise.allSettled([...consumers].map((consumer) => consumer.close()));
        await topology?.flush();
        await journal?.flush();
        if (ownsTransport) await transport.close();
      })();
      return closing;
    },
    [Symbol.asyncDispose]: () => bus.close(),
  };
  return bus;
}
