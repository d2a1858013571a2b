/**
 * Topology facts: what each bus produces and consumes, written by the bus to the `__topology` topic of its own
 * transport, so every transport carries them and any tool that reads the transport (the CLI on a data directory) can
 * answer "who subscribes to OrderPlaced?". Each fact is written at most once per bus life.
 */
import type { MessageDefinition } from './define.js';
import { describeError } from './errors.js';
import type { JsonSchema } from './json-schema.js';
import type { Logger } from './logger.js';
import type { OutgoingRecord, Transport } from './transport.js';

/** The topic topology facts are written to. */
export const topologyTopic = '__topology';

/** The header that marks a topology record, with the format version as its value. */
export const topologyHeader = 'tidings-topology';

/** The largest JSON Schema (in UTF-8 bytes of its JSON) kept in a topology record; larger ones are left out. */
export const topologySchemaBytesMax = 64 * 1024;

/** A message type as a topology fact names it. */
export interface TopologyMessage {
  type: string;
  /**
   * Absent in a fact an outbox relay wrote: a stored envelope does not say whether it is an event or a command (a
   * reader takes the kind from another fact of the type, else assumes `event`).
   */
  kind?: 'event' | 'command';
  topic: string;
  version: number;
  /** The payload's JSON Schema, when the definition yields one of at most {@link topologySchemaBytesMax} bytes. */
  schema?: JsonSchema;
}

/**
 * One topology fact. `consumes`: a handler was registered (`group` handles `messages`); `produces`: the service
 * publishes `messages`, `declared` at `createBus({ produces })` or `observed` on its first publish (or outbox relay)
 * of each type.
 */
export type TopologyFact =
  | {
      v: 1;
      fact: 'consumes';
      service: string;
      group: string;
      messages: TopologyMessage[];
      /** ms since epoch. */
      at: number;
    }
  | {
      v: 1;
      fact: 'produces';
      service: string;
      how: 'declared' | 'observed';
      messages: TopologyMessage[];
      at: number;
    };

/** Records a bus's topology facts; created by the bus. */
export interface TopologyRecorder {
  /** Records that `group` handles `definitions`. */
  consumes(group: string, definitions: readonly MessageDefinition[]): void;
  /** Records the first publish of `definition`'s type by this bus; later calls for the type cost a set lookup. */
  produced(definition: MessageDefinition): void;
  /**
   * Records the first relay of a type by this bus's outbox relays, as an `observed` `produces` fact. A relay has the
   * stored envelope, not the definition: the fact names the type, topic and schema version, without kind or schema.
   * Nothing is written when the type was already recorded as produced by this bus (with its definition); later calls
   * for the type cost a set lookup.
   */
  relayed(message: RelayedMessage): void;
  /** Resolves once every fact written so far is durable (or failed and was logged). Never rejects. */
  flush(): Promise<void>;
}

/** What an outbox relay knows of a type it published: from the stored row and envelope. */
export interface RelayedMessage {
  type: string;
  topic: string;
  /** The envelope's `schemaversion`. */
  version: number;
}

/** The topology fact of a definition. */
export function topologyMessage(definition: MessageDefinition): TopologyMessage {
  const message: TopologyMessage = {
    type: definition.type,
    kind: definition.kind,
    topic: definition.topic,
    version: definition.version,
  };
  try {
    const schema = definition.jsonSchema();
    if (Buffer.byteLength(JSON.stringify(schema)) <= topologySchemaBytesMax) message.schema = schema;
  } catch {
    // No JSON Schema for this definition: the fact is recorded without one.
  }
  return message;
}

/** The record of a fact on the topology topic. */
export function topologyRecord(fact: TopologyFact): OutgoingRecord {
  return {
    key: fact.service,
    headers: { [topologyHeader]: '1', 'content-type': 'application/json' },
    value: Buffer.from(JSON.stringify(fact)),
    timestamp: fact.at,
  };
}

/** Parses a topology record; undefined for anything that is not a well-formed fact. */
export function parseTopologyFact(record: {
  headers: Readonly<Record<string, string>>;
  value: Uint8Array;
}): TopologyFact | undefined {
  if (record.headers[topologyHeader] !== '1') return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(record.value).toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const fact = parsed as Partial<TopologyFact> & { group?: unknown; how?: unknown };
  if (fact.v !== 1 || typeof fact.service !== 'string' || !Array.isArray(fact.messages)) return undefined;
  if (fact.fact === 'consumes' && typeof fact.group !== 'string') return undefined;
  if (fact.fact === 'produces' && fact.how !== 'declared' && fact.how !== 'observed') return undefined;
  if (fact.fact !== 'consumes' && fact.fact !== 'produces') return undefined;
  const messages = (fact.messages as unknown[]).filter(
    (m): m is TopologyMessage =>
      typeof m === 'object' &&
      m !== null &&
      typeof (m as TopologyMessage).type === 'string' &&
      typeof (m as TopologyMessage).topic === 'string',
  );
  return { ...(fact as TopologyFact), messages };
}

/**
 * Creates the recorder of one bus. Writes are fire-and-forget (a failure is logged as a warning, never thrown into
 * `publish` or `handle`); `flush` waits for them, and the bus flushes before it closes its transport. Facts declared
 * with `createBus({ produces })` are written with the first fact of any kind, so creating a bus touches nothing.
 */
export function createTopologyRecorder(options: {
  transport: Transport;
  service: string;
  logger: Logger;
  clock: { now(): number };
  declared: readonly MessageDefinition[];
}): TopologyRecorder {
  const { transport, service, logger, clock } = options;
  /** Types whose `observed` fact is written (each once per bus life, declared or not). */
  const observed = new Set<string>();
  /** Types whose relayed (kind- and schema-less) fact is written; a later `produced` still writes the full one. */
  const relayedTypes = new Set<string>();
  const handlers = new Set<string>();
  const pending = new Set<Promise<void>>();
  let declaredWritten = options.declared.length === 0;

  const write = (fact: TopologyFact) => {
    const done = transport
      .publish(topologyTopic, [topologyRecord(fact)])
      .then(
        () => undefined,
        (error: unknown) =>
          logger.warn(
            { service, err: error },
            `could not record topology (${fact.fact}): ${describeError(error)}; 'tidings topology' will miss it`,
          ),
      )
      .finally(() => pending.delete(done));
    pending.add(done);
  };
  const writeDeclared = () => {
    if (declaredWritten) return;
    declaredWritten = true;
    write({
      v: 1,
      fact: 'produces',
      service,
      how: 'declared',
      messages: options.declared.map(topologyMessage),
      at: clock.now(),
    });
  };
  /** Records that this service was seen producing `message` (after the declared list, written first once). */
  const writeObserved = (message: TopologyMessage) => {
    writeDeclared();
    write({ v: 1, fact: 'produces', service, how: 'observed', messages: [message], at: clock.now() });
  };

  return {
    consumes(group, definitions) {
      const id = `${group}\u0000${definitions.map((d) => d.type).join('\u0000')}`;
      if (handlers.has(id)) return;
      handlers.add(id);
      writeDeclared();
      write({
        v: 1,
        fact: 'consumes',
        service,
        group,
        messages: definitions.map(topologyMessage),
        at: clock.now(),
      });
    },
    produced(definition) {
      if (observed.has(definition.type)) return;
      observed.add(definition.type);
      writeObserved(topologyMessage(definition));
    },
    relayed(message) {
      if (relayedTypes.has(message.type) || observed.has(message.type)) return;
      relayedTypes.add(message.type);
      writeObserved({ type: message.type, topic: message.topic, version: message.version });
    },
    async flush() {
      while (pending.size > 0) await Promise.allSettled([...pending]);
    },
  };
}
