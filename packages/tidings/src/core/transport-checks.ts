/**
 * Input checks shared by the transports that validate records and subscriptions themselves (the embedded log,
 * Redis, PostgreSQL, RabbitMQ), worded as the in-memory transport words them (same codes, same messages), so every
 * transport rejects the same input the same way. A transport with tighter rules passes its own {@link NameRules}.
 */
import { ErrorCode, TidingsError, type ErrorDetails } from './errors.js';
import type { OutgoingRecord, StartPosition, SubscribeOptions } from './transport.js';

export const limits = {
  partitions: 10_000,
  prefetch: 100_000,
  topicNameLength: 249,
  groupNameLength: 249,
} as const;

/** What a transport accepts in names and subscriptions. */
export interface NameRules {
  readonly prefetch: number;
  readonly topicNameLength: number;
  readonly groupNameLength: number;
  /** Refuse U+0000 in names (PostgreSQL `text` cannot store it). Default false. */
  readonly forbidNul?: boolean;
}

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
  forbidNul = false,
): asserts value is string {
  if (
    typeof value !== 'string' ||
    value.length === 0 ||
    value.length > maxLength ||
    (forbidNul && value.includes('\u0000'))
  ) {
    throw invalid(
      `A ${kind} name must be a non-empty string of at most ${maxLength} characters` +
        `${forbidNul ? ' without U+0000' : ''}, got ${describeValue(value)}.`,
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

export function checkSubscribeOptions(
  options: SubscribeOptions,
  rules: NameRules = limits,
): CheckedSubscribeOptions {
  if (typeof options !== 'object' || options === null) {
    throw invalid(`subscribe needs an options object with group and topics, got ${describeValue(options)}.`);
  }
  const forbidNul = rules.forbidNul ?? false;
  checkName(options.group, 'group', rules.groupNameLength, forbidNul);
  const group = options.group;
  if (!Array.isArray(options.topics) || options.topics.length === 0) {
    throw invalid(
      `subscribe for group '${group}' needs a non-empty array of topics, got ${describeValue(options.topics)}.`,
      { group },
    );
  }
  const topics: readonly string[] = options.topics;
  for (const topic of topics) checkName(topic, 'topic', rules.topicNameLength, forbidNul);
  const startFrom =
    options.startFrom === undefined
      ? 'latest'
      : checkStartPosition(options.startFrom, `subscribe for group '${group}'`);
  const prefetch =
    options.prefetch === undefined
      ? 256
      : checkInteger(options.prefetch, `prefetch of a subscription of group '${group}'`, 1, rules.prefetch);
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

/**
 * Checks the shape of one outgoing record and returns its size as the contract counts it: the value's length plus the
 * UTF-8 bytes of the key and of every header name and value. Each transport compares the size with its own limit
 * (see {@link recordTooLarge}). Throws `VALIDATION_FAILED` naming the record and what is wrong with it.
 */
export function checkRecord(topic: string, record: OutgoingRecord, index: number): number {
  if (typeof record !== 'object' || record === null) {
    throw invalidRecord(topic, index, `is ${describeValue(record)}, not an object`);
  }
  if (typeof record.key !== 'string') {
    throw invalidRecord(topic, index, `has key ${describeValue(record.key)}; the key must be a string`);
  }
  if (!(record.value instanceof Uint8Array)) {
    throw invalidRecord(
      topic,
      index,
      `has value ${describeValue(record.value)}; the value must be a Uint8Array`,
    );
  }
  if (
    record.timestamp !== undefined &&
    !(
      Number.isFinite(record.timestamp) &&
      record.timestamp >= 0 &&
      record.timestamp <= Number.MAX_SAFE_INTEGER
    )
  ) {
    throw invalidRecord(
      topic,
      index,
      `has timestamp ${describeValue(record.timestamp)}; it must be ms since the epoch, or absent`,
    );
  }
  const headers: unknown = record.headers;
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) {
    throw invalidRecord(
      topic,
      index,
      `has headers ${describeValue(headers)}; headers must be an object of strings`,
    );
  }
  let bytes = record.value.byteLength + Buffer.byteLength(record.key, 'utf8');
  for (const name in headers) {
    const value = (headers as Record<string, unknown>)[name];
    if (!Object.hasOwn(headers, name)) continue;
    if (typeof value !== 'string') {
      throw invalidRecord(
        topic,
        index,
        `has header '${name}' = ${describeValue(value)}; header values must be strings`,
      );
    }
    bytes += Buffer.byteLength(name, 'utf8') + Buffer.byteLength(value, 'utf8');
  }
  return bytes;
}

/** The `VALIDATION_FAILED` error for record `index` of a publish to `topic`; `what` says what is wrong with it. */
export function invalidRecord(topic: string, index: number, what: string): TidingsError {
  return new TidingsError(
    ErrorCode.VALIDATION_FAILED,
    `Record ${index} published to topic '${topic}' ${what}; nothing was written. Fix the record and publish again.`,
    { topic, index },
  );
}

/**
 * The error for a record over `maxRecordBytes`; its size counts the value plus the UTF-8 bytes of the key and of
 * every header name and value. `transport` names the transport in the message ("the embedded log's"); `raiseHint`
 * adds what raising the limit allows.
 */
export function recordTooLarge(
  transport: string,
  topic: string,
  key: string,
  index: number,
  bytes: number,
  maxRecordBytes: number,
  raiseHint = '',
): TidingsError {
  return new TidingsError(
    ErrorCode.EVENT_TOO_LARGE,
    `Record ${index} published to topic '${topic}' (key '${key}') is ${bytes} bytes, over ${transport} ` +
      `maxRecordBytes limit of ${maxRecordBytes}; nothing was written. Make the event smaller (store large payloads ` +
      `elsewhere and publish a reference) or raise maxRecordBytes${raiseHint}.`,
    { topic, index, sizeBytes: bytes, maxRecordBytes },
  );
}
