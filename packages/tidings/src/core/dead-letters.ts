import { decodeEnvelope } from './codec.js';
import type { Envelope } from './envelope.js';
import { ErrorCode, TidingsError } from './errors.js';
import type { Delivery, OutgoingRecord, StoredRecord, Transport } from './transport.js';

/**
 * Dead letters live on a topic of the transport itself, `<topic>.<group>.dlq`: each is the original record (so a
 * CloudEvents reader still reads the original event) with `tidings-dlq-*` headers saying why. Retrying or skipping one
 * appends a small marker record to the same topic, so the topic stays append-only and its history auditable.
 */

/** Why an event was dead-lettered. */
export type DeadLetterReason =
  | typeof ErrorCode.HANDLER_FAILED
  | typeof ErrorCode.HANDLER_TIMEOUT
  | typeof ErrorCode.DECODE_FAILED
  | typeof ErrorCode.SCHEMA_INVALID
  | typeof ErrorCode.UNKNOWN_VERSION;

/** A dead letter as listed by `bus.deadLetters.list`. */
export interface DeadLetter {
  /** `<partition>:<offset>` of the dead letter in its dead-letter topic. */
  id: string;
  group: string;
  /** The topic the event was consumed from. */
  topic: string;
  /** The dead-letter topic that holds it. */
  deadLetterTopic: string;
  /** Where the original was read from. */
  partition: number;
  offset: number;
  key: string;
  reason: DeadLetterReason;
  /** The last error, as text. */
  error: string;
  /** How many times the handler ran (0 when the event could not be decoded or validated). */
  attempts: number;
  /** When it was dead-lettered, ms since epoch. */
  deadLetteredAt: number;
  /** The original CloudEvent, when it could be decoded. */
  envelope: Envelope | undefined;
  /** The original record as it was on the topic. */
  headers: Readonly<Record<string, string>>;
  value: Uint8Array;
}

const header = {
  reason: 'tidings-dlq-reason',
  error: 'tidings-dlq-error',
  attempts: 'tidings-dlq-attempts',
  group: 'tidings-dlq-group',
  topic: 'tidings-dlq-topic',
  partition: 'tidings-dlq-partition',
  offset: 'tidings-dlq-offset',
  time: 'tidings-dlq-time',
  resolution: 'tidings-dlq-resolution',
  resolves: 'tidings-dlq-resolves',
} as const;

/** The most characters of an error message kept in a dead letter. */
export const deadLetterErrorCharsMax = 4096;

/** The dead-letter topic of `group` for events from `topic`. */
export function deadLetterTopic(topic: string, group: string): string {
  return `${topic}.${group}.dlq`;
}

/** Builds the dead-letter record of a delivery. */
export function deadLetterRecord(
  delivery: Delivery,
  group: string,
  reason: DeadLetterReason,
  error: string,
  attempts: number,
  now: number,
): OutgoingRecord {
  return {
    key: delivery.key,
    value: delivery.value,
    timestamp: now,
    headers: {
      ...delivery.headers,
      [header.reason]: reason,
      [header.error]: error.slice(0, deadLetterErrorCharsMax),
      [header.attempts]: String(attempts),
      [header.group]: group,
      [header.topic]: delivery.topic,
      [header.partition]: String(delivery.partition),
      [header.offset]: String(delivery.offset),
      [header.time]: String(now),
    },
  };
}

/** The marker record that settles dead letter `id` as retried or skipped. */
export function resolutionRecord(
  id: string,
  key: string,
  resolution: 'retried' | 'skipped',
  now: number,
): OutgoingRecord {
  return {
    key,
    value: new Uint8Array(0),
    timestamp: now,
    headers: { [header.resolution]: resolution, [header.resolves]: id },
  };
}

/** The original headers of a dead letter, without the `tidings-dlq-*` ones. */
function originalHeaders(headers: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers))
    if (!name.startsWith('tidings-dlq-')) out[name] = value;
  return out;
}

function parseDeadLetter(record: StoredRecord): DeadLetter {
  const headers = originalHeaders(record.headers);
  let envelope: Envelope | undefined;
  try {
    envelope = decodeEnvelope({ headers, value: record.value });
  } catch {
    envelope = undefined;
  }
  const h = record.headers;
  return {
    id: `${record.partition}:${record.offset}`,
    group: h[header.group] ?? '',
    topic: h[header.topic] ?? '',
    deadLetterTopic: record.topic,
    partition: Number(h[header.partition]),
    offset: Number(h[header.offset]),
    key: record.key,
    reason: (h[header.reason] ?? ErrorCode.HANDLER_FAILED) as DeadLetterReason,
    error: h[header.error] ?? '',
    attempts: Number(h[header.attempts] ?? 0),
    deadLetteredAt: Number(h[header.time] ?? record.timestamp),
    envelope,
    headers,
    value: record.value,
  };
}

/** The most records read from one dead-letter partition per page. */
const readPageSize = 500;

/**
 * The unresolved dead letters of `group` for `topic`, oldest first per partition, at most `limit`. Reads the
 * dead-letter topic page by page; an absent topic means none.
 */
export async function listDeadLetters(
  transport: Transport,
  topic: string,
  group: string,
  limit: number,
): Promise<DeadLetter[]> {
  const dlqTopic = deadLetterTopic(topic, group);
  if (!(await transport.admin.listTopics()).includes(dlqTopic)) return [];
  const description = await transport.admin.describeTopic(dlqTopic);
  const letters = new Map<string, DeadLetter>();
  const resolved = new Set<string>();
  for (const { partition, lowOffset, highOffset } of description.partitionOffsets) {
    for (let from = lowOffset; from < highOffset;) {
      const page = await transport.admin.read(dlqTopic, partition, from, readPageSize);
      if (page.length === 0) break;
      for (const record of page) {
        const resolves = record.headers[header.resolves];
        if (resolves !== undefined) resolved.add(resolves);
        else letters.set(`${record.partition}:${record.offset}`, parseDeadLetter(record));
      }
      from = page[page.length - 1]!.offset + 1;
    }
  }
  return [...letters.values()].filter((letter) => !resolved.has(letter.id)).slice(0, limit);
}

/** One unresolved dead letter by id; rejects with `NOT_FOUND` if it does not exist or was already resolved. */
export async function getDeadLetter(
  transport: Transport,
  topic: string,
  group: string,
  id: string,
): Promise<DeadLetter> {
  const letter = (await listDeadLetters(transport, topic, group, Number.MAX_SAFE_INTEGER)).find(
    (l) => l.id === id,
  );
  if (!letter) {
    throw new TidingsError(
      ErrorCode.NOT_FOUND,
      `no unresolved dead letter "${id}" in ${deadLetterTopic(topic, group)}; list them with bus.deadLetters.list`,
      { topic, group },
    );
  }
  return letter;
}

/**
 * Marks dead letter `letter` as retried or skipped by appending a marker to its dead-letter topic; it is no longer
 * listed. Resolves once the marker is durable. Used by `bus.deadLetters.skip` and by tools without a consumer.
 */
export async function resolveDeadLetter(
  transport: Transport,
  letter: DeadLetter,
  resolution: 'retried' | 'skipped',
  now: number = Date.now(),
): Promise<void> {
  await transport.publish(letter.deadLetterTopic, [resolutionRecord(letter.id, letter.key, resolution, now)]);
}

/** A dead letter with how it was settled, if it was. */
export interface DeadLetterHistoryEntry extends DeadLetter {
  /** `retried` (handled again successfully) or `skipped`; undefined while it is unresolved. */
  resolution: 'retried' | 'skipped' | undefined;
}

/**
 * Every dead letter of `group` for `topic`, resolved ones included with their resolution, oldest first per
 * partition, at most `limit` (read page by page). For audit tools such as `tidings trace`.
 */
export async function readDeadLetterHistory(
  transport: Transport,
  topic: string,
  group: string,
  limit: number,
): Promise<DeadLetterHistoryEntry[]> {
  const dlqTopic = deadLetterTopic(topic, group);
  if (!(await transport.admin.listTopics()).includes(dlqTopic)) return [];
  const description = await transport.admin.describeTopic(dlqTopic);
  const letters = new Map<string, DeadLetterHistoryEntry>();
  const resolutions = new Map<string, 'retried' | 'skipped'>();
  for (const { partition, lowOffset, highOffset } of description.partitionOffsets) {
    for (let from = lowOffset; from < highOffset && letters.size < limit;) {
      const page = await transport.admin.read(dlqTopic, partition, from, readPageSize);
      if (page.length === 0) break;
      for (const record of page) {
        const resolves = record.headers[header.resolves];
        const resolution = record.headers[header.resolution];
        if (resolves !== undefined) {
          if (resolution === 'retried' || resolution === 'skipped') resolutions.set(resolves, resolution);
        } else if (letters.size < limit) {
          letters.set(`${record.partition}:${record.offset}`, {
            ...parseDeadLetter(record),
            resolution: undefined,
          });
        }
      }
      from = page[page.length - 1]!.offset + 1;
    }
  }
  return [...letters.values()].map((letter) => ({ ...letter, resolution: resolutions.get(letter.id) }));
}
