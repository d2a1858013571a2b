/**
 * The topology of a data directory, folded from the facts buses wrote to its `__topology` topic: which services
 * produce each message type, which groups (of which services) consume it, and the findings worth flagging.
 */
import { parseTopologyFact, readLimitMax, topologyTopic, type JsonSchema, type Transport } from 'tidings';

/** One message type as the topology knows it. */
export interface TopologyType {
  type: string;
  kind: 'event' | 'command';
  topic: string;
  /** The highest schema version any bus recorded. */
  version: number;
  /** The JSON Schema of that version, when a bus recorded one. */
  schema: JsonSchema | undefined;
  /** Services that publish it, with how each is known: `declared`, `observed` or both. */
  producers: Array<{ service: string; declared: boolean; observed: boolean }>;
  /** Groups that handle it, with the services their handlers run in. */
  consumers: Array<{ group: string; services: string[] }>;
}

/** The folded topology. */
export interface Topology {
  /** Every type, sorted by name. */
  types: TopologyType[];
  /** Facts read from the topic (a fact is written once per bus life, so restarts add more). */
  facts: number;
  /** Types produced (declared or observed) that no group consumes. */
  neverConsumed: string[];
  /** Types some group consumes that no service was seen or declared to produce. */
  neverProduced: string[];
}

interface Building {
  type: string;
  kind: 'event' | 'command';
  /** Whether a fact stated the kind (one an outbox relay wrote does not; `event` is then assumed). */
  kindStated: boolean;
  topic: string;
  version: number;
  schema: JsonSchema | undefined;
  producers: Map<string, { declared: boolean; observed: boolean }>;
  consumers: Map<string, Set<string>>;
}

/**
 * Reads and folds the `__topology` topic page by page ({@link readLimitMax} records at a time): memory is bounded by
 * the number of distinct facts, not by how many were written. An absent topic gives an empty topology.
 */
export async function readTopology(transport: Transport): Promise<Topology> {
  const types = new Map<string, Building>();
  let facts = 0;
  if ((await transport.admin.listTopics()).includes(topologyTopic)) {
    const description = await transport.admin.describeTopic(topologyTopic);
    for (const { partition, lowOffset, highOffset } of description.partitionOffsets) {
      for (let from = lowOffset; from < highOffset;) {
        const page = await transport.admin.read(topologyTopic, partition, from, readLimitMax);
        if (page.length === 0) break;
        for (const record of page) {
          const fact = parseTopologyFact(record);
          if (fact === undefined) continue;
          facts++;
          for (const message of fact.messages) {
            let entry = types.get(message.type);
            if (!entry) {
              entry = {
                type: message.type,
                kind: 'event',
                kindStated: false,
                topic: message.topic,
                version: 0,
                schema: undefined,
                producers: new Map(),
                consumers: new Map(),
              };
              types.set(message.type, entry);
            }
            if (!entry.kindStated && message.kind !== undefined) {
              entry.kind = message.kind === 'command' ? 'command' : 'event';
              entry.kindStated = true;
            }
            const version = typeof message.version === 'number' ? message.version : 1;
            if (version >= entry.version) {
              // A newer version without a schema (a relayed fact) leaves the schema unknown, never the older one's.
              if (version > entry.version && message.schema === undefined) entry.schema = undefined;
              entry.version = version;
              entry.topic = message.topic;
              if (message.schema !== undefined) entry.schema = message.schema;
            }
            if (fact.fact === 'consumes') {
              const services = entry.consumers.get(fact.group) ?? new Set<string>();
              services.add(fact.service);
              entry.consumers.set(fact.group, services);
            } else {
              const producer = entry.producers.get(fact.service) ?? { declared: false, observed: false };
              producer[fact.how] = true;
              entry.producers.set(fact.service, producer);
            }
          }
        }
        from = page[page.length - 1]!.offset + 1;
      }
    }
  }
  const sorted = [...types.values()]
    .sort((a, b) => a.type.localeCompare(b.type))
    .map((t): TopologyType => ({
      type: t.type,
      kind: t.kind,
      topic: t.topic,
      version: t.version,
      schema: t.schema,
      producers: [...t.producers]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([service, how]) => ({ service, ...how })),
      consumers: [...t.consumers]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([group, services]) => ({ group, services: [...services].sort() })),
    }));
  return {
    types: sorted,
    facts,
    neverConsumed: sorted
      .filter((t) => t.producers.length > 0 && t.consumers.length === 0)
      .map((t) => t.type),
    neverProduced: sorted
      .filter((t) => t.consumers.length > 0 && t.producers.length === 0)
      .map((t) => t.type),
  };
}
