/**
 * The causal chain of one correlation id, from a data directory: every event carrying it (found by scanning the
 * topics page by page), arranged by causation id, and what each consuming group did with each event.
 *
 * Where each outcome comes from, so the answer is never a guess:
 * - `dead-lettered`: the group's `<topic>.<group>.dlq` topic (with attempts, reason, and a later retry or skip);
 * - `parked`: the parking store now, or the outcome journal (`__outcomes`) for a key parked and then skipped or
 *   released;
 * - `retried`: the outcome journal, which consumers write when a handler succeeded after more than one attempt;
 * - `handled`: the group's committed offset has passed the event and nothing above applies;
 * - `pending`: the group has not processed the event yet.
 * Which groups consume each type comes from the topology; a type the topology does not know falls back to every
 * group that reads the topic.
 */
import {
  decodeEnvelope,
  outcomeCorrelationId,
  outcomesTopic,
  parseOutcomeRecord,
  readDeadLetterHistory,
  readLimitMax,
  type DeadLetterHistoryEntry,
  type Envelope,
  type OutcomeEntry,
  type StoredRecord,
  type Transport,
} from 'tidings';
import { describeGroups } from '../lookup.js';
import { readTopology } from '../topology/model.js';

/** What a group did with an event. */
export type TraceOutcome = 'handled' | 'retried' | 'parked' | 'dead-lettered' | 'pending';

/** One group's outcome for one event. */
export interface GroupOutcome {
  group: string;
  /** Services whose handlers run in the group, as the topology recorded them. */
  services: string[];
  outcome: TraceOutcome;
  /** Handler attempts, when known. */
  attempts?: number;
  /** The last error, for parked and dead-lettered events. */
  error?: string;
  /** What happened afterwards, e.g. `released`, `retried`, `skipped`. */
  then?: string;
}

/** One event of the chain. */
export interface TracedEvent {
  id: string;
  type: string;
  source: string;
  time: string | undefined;
  topic: string;
  partition: number;
  offset: number;
  key: string;
  causationId: string | undefined;
  traceparent: string | undefined;
  /**
   * Set on a later record with the id of an event already in the chain: the same event published again (a
   * producer retry), not a new one. Its outcomes say only that each group's offset passed it (an inbox drops it).
   */
  copy?: true;
  outcomes: GroupOutcome[];
  /** Events caused by this one, in time order. */
  children: TracedEvent[];
}

/** The chain of a correlation id. */
export interface Trace {
  correlationId: string;
  /** Events whose cause is not among the found events (normally the one that started the flow). */
  roots: TracedEvent[];
  /** Distinct events (by id). */
  events: number;
  /** Records re-publishing an event already counted (same id), shown as copies. */
  copies: number;
  /** True when more than `limit` events matched: the chain shown is incomplete. */
  truncated: boolean;
}

/** Options of {@link collectTrace}. */
export interface TraceOptions {
  /** The most events kept. */
  limit: number;
  /** Only these topics; default every topic but internal (`__*`) and dead-letter (`*.dlq`) ones. */
  topics?: readonly string[];
}

const internal = (topic: string) => topic.startsWith('__') || topic.endsWith('.dlq');

/** Reads every record of `topic`, page by page, calling `visit` for each; stops when `visit` returns false. */
async function scan(
  transport: Transport,
  topic: string,
  visit: (record: StoredRecord) => boolean,
): Promise<void> {
  const description = await transport.admin.describeTopic(topic);
  for (const { partition, lowOffset, highOffset } of description.partitionOffsets) {
    for (let from = lowOffset; from < highOffset;) {
      const page = await transport.admin.read(topic, partition, from, readLimitMax);
      if (page.length === 0) break;
      for (const record of page) if (!visit(record)) return;
      from = page[page.length - 1]!.offset + 1;
    }
  }
}

/** The correlation id of a record, reading headers first and decoding only structured events. */
function correlationOf(record: StoredRecord): { correlationId: string | undefined; envelope?: Envelope } {
  const header = record.headers['ce-correlationid'];
  if (header !== undefined) return { correlationId: header };
  if (record.headers['ce-id'] !== undefined) return { correlationId: record.headers['ce-id'] }; // defaults to its id
  if (!(record.headers['content-type'] ?? '').startsWith('application/cloudevents+json'))
    return { correlationId: undefined };
  try {
    const envelope = decodeEnvelope(record);
    return { correlationId: envelope.correlationid ?? envelope.id, envelope };
  } catch {
    return { correlationId: undefined };
  }
}

/** Finds the events of `correlationId` and what every consuming group did with them. */
export async function collectTrace(
  transport: Transport,
  correlationId: string,
  options: TraceOptions,
): Promise<Trace> {
  const allTopics = await transport.admin.listTopics();
  const topics = options.topics ?? allTopics.filter((t) => !internal(t));
  const found: TracedEvent[] = [];
  let truncated = false;
  for (const topic of topics) {
    if (truncated) break;
    await scan(transport, topic, (record) => {
      const match = correlationOf(record);
      if (match.correlationId !== correlationId) return true;
      if (found.length >= options.limit) {
        truncated = true;
        return false;
      }
      let envelope = match.envelope;
      try {
        envelope ??= decodeEnvelope(record);
      } catch {
        return true; // undecodable: not an event of the chain
      }
      found.push({
        id: envelope.id,
        type: envelope.type,
        source: envelope.source,
        time: envelope.time,
        topic: record.topic,
        partition: record.partition,
        offset: record.offset,
        key: record.key,
        causationId: envelope.causationid,
        traceparent: envelope.traceparent,
        outcomes: [],
        children: [],
      });
      return true;
    });
  }

  await addOutcomes(transport, correlationId, found, allTopics);

  const order = (a: TracedEvent, b: TracedEvent) =>
    (a.time ?? '').localeCompare(b.time ?? '') || a.topic.localeCompare(b.topic) || a.offset - b.offset;
  const sorted = [...found].sort(order);
  // The first record of an id is the event; a later one with the same id is a re-published copy of it.
  const byId = new Map<string, TracedEvent>();
  let copies = 0;
  for (const event of sorted) {
    if (byId.has(event.id)) {
      event.copy = true;
      copies++;
    } else byId.set(event.id, event);
  }
  const roots: TracedEvent[] = [];
  for (const event of sorted) {
    const parent = event.causationId === undefined ? undefined : byId.get(event.causationId);
    if (parent !== undefined && parent !== event) parent.children.push(event);
    else roots.push(event);
  }
  return { correlationId, roots, events: found.length - copies, copies, truncated };
}

async function addOutcomes(
  transport: Transport,
  correlationId: string,
  events: TracedEvent[],
  allTopics: readonly string[],
): Promise<void> {
  if (events.length === 0) return;
  const topology = await readTopology(transport);
  const consumersOf = new Map(topology.types.map((t) => [t.type, t.consumers]));

  // Committed offsets per group, topic and partition.
  const committed = new Map<string, number>();
  const groupsByTopic = new Map<string, string[]>();
  for await (const { group, description } of describeGroups(transport)) {
    for (const lag of description.lag) {
      committed.set(`${group}\u0000${lag.topic}\u0000${lag.partition}`, lag.committedOffset);
      const list = groupsByTopic.get(lag.topic) ?? [];
      if (!list.includes(group)) list.push(group);
      groupsByTopic.set(lag.topic, list);
    }
  }

  // The journal entries of this correlation id, oldest first.
  const journal = new Map<string, OutcomeEntry[]>();
  if (allTopics.includes(outcomesTopic)) {
    await scan(transport, outcomesTopic, (record) => {
      if (outcomeCorrelationId(record) !== correlationId) return true;
      const entry = parseOutcomeRecord(record);
      if (entry === undefined) return true;
      const id = `${entry.group}\u0000${entry.topic}\u0000${entry.partition}\u0000${entry.offset}`;
      const list = journal.get(id) ?? [];
      list.push(entry);
      journal.set(id, list);
      return true;
    });
  }

  const parkedByGroup = new Map<string, Map<string, { attempts: number; error: string; first: boolean }>>();
  const parkedOf = async (group: string) => {
    let map = parkedByGroup.get(group);
    if (map === undefined) {
      map = new Map();
      for (const key of (await transport.stores?.parking?.list(group)) ?? []) {
        key.events.forEach((event, index) =>
          map!.set(`${key.topic}\u0000${event.partition}\u0000${event.offset}`, {
            attempts: index === 0 ? key.attempts : 0,
            error: key.error,
            first: index === 0,
          }),
        );
      }
      parkedByGroup.set(group, map);
    }
    return map;
  };

  const deadLetters = new Map<string, Map<string, DeadLetterHistoryEntry>>();
  const deadLettersOf = async (topic: string, group: string) => {
    const id = `${topic}\u0000${group}`;
    let map = deadLetters.get(id);
    if (map === undefined) {
      map = new Map();
      for (const letter of await readDeadLetterHistory(transport, topic, group, Number.MAX_SAFE_INTEGER))
        map.set(`${letter.partition}\u0000${letter.offset}`, letter);
      deadLetters.set(id, map);
    }
    return map;
  };

  for (const event of events) {
    const consumers =
      consumersOf.get(event.type) ??
      (groupsByTopic.get(event.topic) ?? []).sort().map((group) => ({ group, services: [] as string[] }));
    for (const { group, services } of consumers) {
      const position = `${event.partition}\u0000${event.offset}`;
      const letter = (await deadLettersOf(event.topic, group)).get(position);
      const entries = journal.get(`${group}\u0000${event.topic}\u0000${position}`) ?? [];
      const parkedNow = (await parkedOf(group)).get(`${event.topic}\u0000${position}`);
      const done =
        (committed.get(`${group}\u0000${event.topic}\u0000${event.partition}`) ?? 0) > event.offset;
      event.outcomes.push(outcomeOf(group, services, letter, entries, parkedNow, done));
    }
  }
}

function outcomeOf(
  group: string,
  services: string[],
  letter: DeadLetterHistoryEntry | undefined,
  entries: readonly OutcomeEntry[],
  parkedNow: { attempts: number; error: string; first: boolean } | undefined,
  done: boolean,
): GroupOutcome {
  const base = { group, services };
  if (letter !== undefined) {
    return {
      ...base,
      outcome: 'dead-lettered',
      attempts: letter.attempts,
      error: letter.error,
      ...(letter.resolution === undefined ? {} : { then: letter.resolution }),
    };
  }
  if (parkedNow !== undefined) {
    return {
      ...base,
      outcome: 'parked',
      ...(parkedNow.first
        ? { attempts: parkedNow.attempts, error: parkedNow.error }
        : { then: 'waiting behind the failed event' }),
    };
  }
  const parked = entries.find((e) => e.outcome === 'parked');
  const last = entries.at(-1);
  if (parked !== undefined) {
    return {
      ...base,
      outcome: 'parked',
      attempts: parked.attempts,
      ...(parked.error === undefined ? {} : { error: parked.error }),
      ...(last !== undefined && last !== parked ? { then: last.outcome } : {}),
    };
  }
  const retried = entries.find((e) => e.outcome === 'retried');
  if (retried !== undefined) return { ...base, outcome: 'retried', attempts: retried.attempts };
  return { ...base, outcome: done ? 'handled' : 'pending' };
}
