/**
 * The outcome journal: consumers record on the `__outcomes` topic of their transport each delivery that did not
 * simply succeed at the first attempt (handled after retries, parked, waiting behind a parked key, released from or
 * skipped out of parking), so `tidings trace` can say what happened to each event of a flow after the fact. A
 * success at the first attempt writes nothing, so the hot path pays nothing; dead letters are not journaled (their
 * `<topic>.<group>.dlq` topic already holds them, with attempts and resolution).
 */
import { describeError } from './errors.js';
import type { Logger } from './logger.js';
import type { OutgoingRecord, StoredRecord, Transport } from './transport.js';

/** The topic outcome entries are written to. */
export const outcomesTopic = '__outcomes';

/**
 * How long journal entries are kept: the journal creates its topic with this retention (a topic that already exists
 * keeps its own settings). Older flows still trace, but without their retried and parked outcomes.
 */
export const outcomesRetentionMs = 30 * 24 * 60 * 60 * 1000;

/** The most characters of an error kept in an entry. */
export const outcomeErrorCharsMax = 1000;

/**
 * What happened to a delivery. `retried`: handled successfully after more than one attempt; `parked`: its retries
 * were spent and its key parked (`attempts` > 0), or it was queued behind a parked key (`attempts` 0);
 * `released`: handled successfully when its parked key was retried; `skipped`: dropped by an operator's skip.
 */
export type JournaledOutcome = 'retried' | 'parked' | 'released' | 'skipped';

/** One journal entry. */
export interface OutcomeEntry {
  outcome: JournaledOutcome;
  group: string;
  topic: string;
  partition: number;
  offset: number;
  key: string;
  eventId: string;
  correlationId: string;
  /** Handler attempts made for this outcome. */
  attempts: number;
  /** The last error, for `parked`. */
  error?: string;
  /** ms since epoch. */
  at: number;
}

const header = {
  outcome: 'tidings-outcome',
  group: 'tidings-outcome-group',
  topic: 'tidings-outcome-topic',
  partition: 'tidings-outcome-partition',
  offset: 'tidings-outcome-offset',
  eventId: 'tidings-outcome-event-id',
  correlationId: 'tidings-outcome-correlation-id',
  attempts: 'tidings-outcome-attempts',
  error: 'tidings-outcome-error',
} as const;

const outcomes: readonly string[] = ['retried', 'parked', 'released', 'skipped'];

/** The record of an entry: headers only, keyed by the event's key. */
export function outcomeRecord(entry: OutcomeEntry): OutgoingRecord {
  return {
    key: entry.key,
    value: new Uint8Array(0),
    timestamp: entry.at,
    headers: {
      [header.outcome]: entry.outcome,
      [header.group]: entry.group,
      [header.topic]: entry.topic,
      [header.partition]: String(entry.partition),
      [header.offset]: String(entry.offset),
      [header.eventId]: entry.eventId,
      [header.correlationId]: entry.correlationId,
      [header.attempts]: String(entry.attempts),
      ...(entry.error === undefined ? {} : { [header.error]: entry.error.slice(0, outcomeErrorCharsMax) }),
    },
  };
}

/** The correlation id of a journal record without parsing the rest (for scanning), or undefined. */
export function outcomeCorrelationId(record: Pick<StoredRecord, 'headers'>): string | undefined {
  return record.headers[header.correlationId];
}

/** Parses a journal record; undefined when it is not one. */
export function parseOutcomeRecord(record: StoredRecord): OutcomeEntry | undefined {
  const h = record.headers;
  const outcome = h[header.outcome];
  if (outcome === undefined || !outcomes.includes(outcome)) return undefined;
  const partition = Number(h[header.partition]);
  const offset = Number(h[header.offset]);
  if (!Number.isInteger(partition) || !Number.isInteger(offset)) return undefined;
  const error = h[header.error];
  return {
    outcome: outcome as JournaledOutcome,
    group: h[header.group] ?? '',
    topic: h[header.topic] ?? '',
    partition,
    offset,
    key: record.key,
    eventId: h[header.eventId] ?? '',
    correlationId: h[header.correlationId] ?? '',
    attempts: Number(h[header.attempts] ?? 0),
    ...(error === undefined ? {} : { error }),
    at: record.timestamp,
  };
}

/** Journal entries waiting to be written, at most; past it new entries are dropped (with one warning). */
export const outcomeQueueMax = 10_000;
/** Journal entries written in one transport call, at most. */
const outcomeBatchMax = 500;

/** Writes journal entries in the background; the bus flushes it before closing its transport. */
export interface OutcomeJournal {
  /**
   * Queues the entry for writing; a failed write is logged as a warning, never thrown. While
   * {@link outcomeQueueMax} entries wait, further ones are dropped ('tidings trace' then misses them) and one warning
   * says so.
   */
  record(entry: OutcomeEntry): void;
  /** Resolves once every entry queued so far is durable or has failed. Never rejects. */
  flush(): Promise<void>;
}

/** Creates the journal of one bus: one write in flight at a time, in batches of at most 500 entries. */
export function createOutcomeJournal(transport: Transport, logger: Logger): OutcomeJournal {
  let queue: OutcomeEntry[] = [];
  let writing: Promise<void> | undefined;
  let dropped = 0;
  let topicReady = false;

  /** Creates the topic with its retention before the first write; an existing topic is left as it is. */
  const ensureTopic = async (): Promise<void> => {
    if (topicReady) return;
    topicReady = true;
    try {
      await transport.admin.createTopic(outcomesTopic, { partitions: 1, retentionMs: outcomesRetentionMs });
    } catch (error) {
      // CONFLICT: it exists with other settings (an older data directory); anything else shows at the write.
      logger.debug({ err: error }, `the outcome journal's topic was not created: ${describeError(error)}`);
    }
  };

  const writeBatch = async (batch: OutcomeEntry[]): Promise<void> => {
    try {
      await transport.publish(outcomesTopic, batch.map(outcomeRecord));
    } catch (error) {
      logger.warn(
        { entries: batch.length, err: error },
        `could not journal ${batch.length} outcome(s): ${describeError(error)}; 'tidings trace' will miss them`,
      );
    }
  };

  const drain = async (): Promise<void> => {
    await ensureTopic();
    while (queue.length > 0) {
      const batch = queue.slice(0, outcomeBatchMax);
      queue = queue.slice(batch.length);
      await writeBatch(batch);
    }
    if (dropped > 0) {
      logger.warn(
        { dropped },
        `the outcome journal was full (${outcomeQueueMax} entries waiting); ${dropped} outcome(s) were not ` +
          `journaled and 'tidings trace' will miss them`,
      );
      dropped = 0;
    }
    writing = undefined;
  };

  return {
    record(entry) {
      if (queue.length >= outcomeQueueMax) {
        dropped++;
        return;
      }
      queue.push(entry);
      writing ??= drain();
    },
    async flush() {
      while (writing !== undefined) await writing;
    },
  };
}
