/**
 * Input checks of the PostgreSQL transport, worded as the in-memory transport words them (same limits, same codes),
 * plus the one rule PostgreSQL adds: `text` and `jsonb` cannot hold the character U+0000.
 */
import { ErrorCode, TidingsError, type ErrorDetails } from '../core/errors.js';
import type { OutgoingRecord, StartPosition, SubscribeOptions } from '../core/transport.js';

export const limits = {
  partitions: 10_000,
  prefetch: 100_000,
  topicNameLength: 249,
  groupNameLength: 249,
} as const;

export function invalid(message: string, details: ErrorDetails = {}): TidingsError {
  return new TidingsError(ErrorCode.INVALID_CONFIG, message, details);
}

export function describeValue(value: unknown): string {
  if (typeof value === 'string')
    return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
  if (value === null || value === undefined || typeof value !== 'object') return String(value);
  if (Array.isArray(value)) return 'an array';
  return `an object (${(value as { constructor?: { name?: string } }).constructor?.name ?? 'no prototype'})`;
}

export function checkInteger(value: unknown, what: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(`${what} must be an integer from ${min} to ${max}, got ${describeValue(value)}.`);
  }
  return value;
}

export function checkNumber(value: unknown, what: string, min: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
    throw invalid(`${what} must be a finite number >= ${min}, got ${describeValue(value)}.`);
  }
  return value;
}

export function checkName(
  value: unknown,
  kind: 'topic' | 'group',
  maxLength: number,
): asserts value is string {
  if (
    typeof value !== 'string' ||
    value.length === 0 ||
    value.length > maxLength ||
    value.includes('\u0000')
  ) {
    throw invalid(
      `A ${kind} name must be a non-empty string of at most ${maxLength} characters without U+0000, got ` +
        `${describeValue(value)}.`,
    );
  }
}

export function checkStartPosition(value: unknown, where: string): StartPosition {
  if (value === 'earliest' || value === 'latest') return value;
  if (typeof value === 'object' && value !== null) {
    const position = value as { offset?: unknown; timestamp?: unknown };
    if ('offset' in position && !('timestamp' in position)) {
      return { offset: checkInteger(position.offset, `${where}: offset`, 0, Number.MAX_SAFE_INTEGER) };
    }
    if ('timestamp' in position && !('offset' in position)) {
      return { timestamp: checkNumber(position.timestamp, `${where}: timestamp`, Number.MIN_SAFE_INTEGER) };
    }
  }
  throw invalid(
    `${where} got start position ${describeValue(value)}; use 'earliest', 'latest', { offset: n } or ` +
      `{ timestamp: ms }.`,
  );
}

export interface CheckedSubscribeOptions {
  group: string;
  topics: string[];
  startFrom: StartPosition;
  prefetch: number;
  signal: AbortSignal | undefined;
}

export function checkSubscribeOptions(options: SubscribeOptions): CheckedSubscribeOptions {
  if (typeof options !== 'object' || options === null) {
    throw invalid(`subscribe needs an options object with group and topics, got ${describeValue(options)}.`);
  }
  checkName(options.group, 'group', limits.groupNameLength);
  const group = options.group;
  if (!Array.isArray(options.topics) || options.topics.length === 0) {
    throw invalid(
      `subscribe for group '${group}' needs a non-empty array of topics, got ${describeValue(options.topics)}.`,
      { group },
    );
  }
  const topics: readonly string[] = options.topics;
  for (const topic of topics) checkName(topic, 'topic', limits.topicNameLength);
  const startFrom =
    options.startFrom === undefined
      ? 'latest'
      : checkStartPosition(options.startFrom, `subscribe for group '${group}'`);
  const prefetch =
    options.prefetch === undefined
      ? 256
      : checkInteger(options.prefetch, `prefetch of a subscription of group '${group}'`, 1, limits.prefetch);
  const signal = options.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw invalid(
      `signal of a subscription of group '${group}' must be an AbortSignal, got ${describeValue(signal)}.`,
      {
        group,
      },
    );
  }
  return { group, topics: [...new Set(topics)], startFrom, prefetch, signal };
}

/** A record checked and copied for writing: later changes to the caller's objects cannot leak in. */
export interface PreparedRecord {
  readonly key: string;
  /** The headers as JSON text, for the `jsonb` column. */
  readonly headersJson: string;
  readonly value: Buffer;
  readonly timestamp: number;
  /** Value plus UTF-8 bytes of key and header names and values: what `maxRecordBytes` and `retentionBytes` count. */
  readonly bytes: number;
}

/** Checks the shape and size of one outgoing record and copies it. Throws `VALIDATION_FAILED` or `EVENT_TOO_LARGE`. */
export function prepareRecord(
  topic: string,
  record: OutgoingRecord,
  index: number,
  now: number,
  maxRecordBytes: number,
): PreparedRecord {
  if (typeof record !== 'object' || record === null) {
    throw badRecord(topic, index, `is ${describeValue(record)}, not an object`);
  }
  const key: unknown = record.key;
  if (typeof key !== 'string')
    throw badRecord(topic, index, `has key ${describeValue(key)}; the key must be a string`);
  if (key.includes('\u0000')) {
    throw badRecord(topic, index, 'has a key containing U+0000, which PostgreSQL text cannot store');
  }
  const value: unknown = record.value;
  if (!(value instanceof Uint8Array)) {
    throw badRecord(topic, index, `has value ${describeValue(value)}; the value must be a Uint8Array`);
  }
  const timestamp: unknown = record.timestamp;
  if (
    timestamp !== undefined &&
    !(
      typeof timestamp === 'number' &&
      Number.isFinite(timestamp) &&
      timestamp >= 0 &&
      timestamp <= Number.MAX_SAFE_INTEGER
    )
  ) {
    throw badRecord(
      topic,
      index,
      `has timestamp ${describeValue(timestamp)}; it must be ms since the epoch, or absent`,
    );
  }
  const headers: unknown = record.headers;
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) {
    throw badRecord(
      topic,
      index,
      `has headers ${describeValue(headers)}; headers must be an object of strings`,
    );
  }
  let bytes = value.byteLength + Buffer.byteLength(key, 'utf8');
  const copy: Record<string, string> = {};
  for (const name of Object.keys(headers)) {
    const headerValue = (headers as Record<string, unknown>)[name];
    if (typeof headerValue !== 'string') {
      throw badRecord(
        topic,
        index,
        `has header '${name}' = ${describeValue(headerValue)}; header values must be strings`,
      );
    }
    if (name.includes('\u0000') || headerValue.includes('\u0000')) {
      throw badRecord(
        topic,
        index,
        `has header '${name}' containing U+0000, which PostgreSQL jsonb cannot store`,
      );
    }
    bytes += Buffer.byteLength(name, 'utf8') + Buffer.byteLength(headerValue, 'utf8');
    copy[name] = headerValue;
  }
  if (bytes > maxRecordBytes) {
    throw new TidingsError(
      ErrorCode.EVENT_TOO_LARGE,
      `Record ${index} published to topic '${topic}' (key '${key}') is ${bytes} bytes, over the PostgreSQL ` +
        `transport's maxRecordBytes limit of ${maxRecordBytes}; nothing was written. Make the event smaller (store ` +
        `large payloads elsewhere and publish a reference) or raise maxRecordBytes.`,
      { topic, index, sizeBytes: bytes, maxRecordBytes },
    );
  }
  return {
    key,
    headersJson: JSON.stringify(copy),
    value: Buffer.from(value),
    timestamp: timestamp ?? now,
    bytes,
  };
}

function badRecord(topic: string, index: number, what: string): TidingsError {
  return new TidingsError(
    ErrorCode.VALIDATION_FAILED,
    `Record ${index} published to topic '${topic}' ${what}; nothing was written. Fix the record and publish again.`,
    { topic, index },
  );
}
