/**
 * Parsing option values: counts, durations, sizes, positions in a topic (`--from`, `--to`), dead-letter ids and
 * JSON. Each parser throws a usage error that quotes the bad value and shows a good one.
 */
import type { StartPosition } from 'tidings';
import { usageError } from './errors.js';

/** A non-negative whole number of at most 15 digits (safe as a JavaScript number). */
const wholeNumber = /^\d{1,15}$/;

/** Parses a whole number of at least `min`, for option `name` (e.g. `--limit`). */
export function parseInteger(value: string, name: string, min = 0): number {
  const n = wholeNumber.test(value.trim()) ? Number(value.trim()) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min) {
    throw usageError(`${name} must be a whole number${min > 0 ? ` of at least ${min}` : ''}, got "${value}"`);
  }
  return n;
}

const durationUnitsMs: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/** Parses a duration such as `500ms`, `30s`, `15m`, `12h`, `7d`, `2w`, or a plain number of milliseconds. */
export function parseDuration(value: string, name: string): number {
  const match = /^(\d{1,12})\s*(ms|s|m|h|d|w)?$/.exec(value.trim());
  const ms = match ? Number(match[1]) * (durationUnitsMs[match[2] ?? 'ms'] ?? Number.NaN) : Number.NaN;
  if (!Number.isSafeInteger(ms) || ms <= 0) {
    throw usageError(`${name} must be a positive duration such as 30m, 12h or 7d, got "${value}"`);
  }
  return ms;
}

const sizeUnits: Readonly<Record<string, number>> = {
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
};

/** Parses a size such as `512`, `64KiB`, `100MB`, `1GiB` (binary units; `MB` is read as MiB). */
export function parseBytes(value: string, name: string): number {
  const match = /^(\d{1,15})\s*([a-z]{1,3})?$/i.exec(value.trim());
  const bytes = match
    ? Number(match[1]) * (sizeUnits[(match[2] ?? 'b').toLowerCase()] ?? Number.NaN)
    : Number.NaN;
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw usageError(`${name} must be a positive size such as 64MiB or 1GiB, got "${value}"`);
  }
  return bytes;
}

/** `YYYY-MM-DD`, optionally with a time of day and a zone (`Z`, `+02:00`); a time without a zone is local. */
const isoTime =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?)?\s*(?:[Zz]|[+-]\d{2}:?\d{2})?$/;

/** Parses an ISO 8601 date or date-time into ms since the epoch, or undefined if `value` is not one. */
export function parseIsoTime(value: string): number | undefined {
  const match = isoTime.exec(value.trim());
  if (!match) return undefined;
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map((part) => Number(part ?? 0)) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth || hour > 23 || minute > 59 || second > 59)
    return undefined;
  const ms = Date.parse(value.trim().replace(' ', 'T'));
  return Number.isFinite(ms) ? ms : undefined;
}

/** Where to start reading in each partition of a topic. */
export type ReadPosition =
  | { kind: 'earliest' }
  | { kind: 'latest' }
  /** The same offset in every partition. */
  | { kind: 'offset'; offset: number }
  /** Only the listed partitions, each from its own offset. */
  | { kind: 'partitions'; offsets: ReadonlyMap<number, number> }
  /** The first record stored at or after this time, in every partition. */
  | { kind: 'time'; timestamp: number };

const positionHelp =
  'use earliest, latest, an offset (42), <partition>:<offset> (0:42, several joined by commas) ' +
  'or an ISO time (2025-05-01T12:00:00Z)';

/** Parses a `--from` value for reading a topic. */
export function parseReadPosition(value: string, name: string): ReadPosition {
  const text = value.trim();
  if (text === 'earliest' || text === 'latest') return { kind: text };
  if (wholeNumber.test(text)) return { kind: 'offset', offset: Number(text) };
  if (/^\d+:\d+(,\d+:\d+)*$/.test(text)) {
    const offsets = new Map<number, number>();
    for (const pair of text.split(',')) {
      const [partition, offset] = pair.split(':').map(Number) as [number, number];
      if (!Number.isSafeInteger(partition) || !Number.isSafeInteger(offset)) break;
      if (offsets.has(partition)) throw usageError(`${name} "${value}" names partition ${partition} twice`);
      offsets.set(partition, offset);
    }
    if (offsets.size === text.split(',').length) return { kind: 'partitions', offsets };
  }
  const timestamp = parseIsoTime(text);
  if (timestamp !== undefined) return { kind: 'time', timestamp };
  throw usageError(`${name} "${value}" is not a position; ${positionHelp}`);
}

/** Parses a `--to` value for resetting a group: a position that applies to every partition. */
export function parseStartPosition(value: string, name: string): StartPosition {
  const position = parseReadPosition(value, name);
  switch (position.kind) {
    case 'earliest':
    case 'latest':
      return position.kind;
    case 'offset':
      return { offset: position.offset };
    case 'time':
      return { timestamp: position.timestamp };
    case 'partitions':
      throw usageError(
        `${name} "${value}" names partitions, but a reset moves every partition of the topic; ` +
          'use earliest, latest, one offset or an ISO time',
      );
  }
}

/** A dead letter's id, `<partition>:<offset>` in its dead-letter topic. */
export function parseDeadLetterId(value: string): string {
  if (!/^\d{1,9}:\d{1,15}$/.test(value.trim())) {
    throw usageError(
      `"${value}" is not a dead-letter id; ids look like 0:12 (partition:offset), as 'tidings dead-letters list' shows`,
    );
  }
  return value.trim();
}

/** Parses JSON text, or throws a usage error naming `what` and the parser's complaint. */
export function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw usageError(`${what} is not valid JSON (${reason}); quote it for the shell, e.g. --data '{"id":1}'`);
  }
}
