/**
 * Checks of everything a caller hands the RabbitMQ transport: options, names, records, start positions. Each check
 * throws a `TidingsError` that says what was wrong and what to do.
 */
import { ErrorCode, TidingsError, type ErrorDetails } from '../core/errors.js';
import type { OutgoingRecord, StartPosition, SubscribeOptions } from '../core/transport.js';

/** Bounds on everything a caller can size. */
export const limits = {
  partitions: 1_000,
  prefetch: 10_000,
  topicNameLength: 200,
  groupNameLength: 200,
  /** RabbitMQ's own ceiling on a message body (`max_message_size`, 128 MiB by default). */
  maxRecordBytes: 128 * 1024 * 1024,
  /** Headers travel in one AMQP content-header frame, which must fit in the negotiated frame size (128 KiB). */
  maxHeaderBytes: 64 * 1024,
} as const;

/** Header names the transport keeps for itself; a record may not carry them. */
export const reservedHeaderPrefixes = ['x-tidings-', 'x-stream-'] as const;

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
  if (typeof value !== 'string' || value.length === 0 || value.length > maxLength) {
    throw invalid(
      `A ${kind} name must be a non-empty string of at most ${maxLength} characters, got ${describeValue(value)}.`,
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
    `${where} got start position ${describeValue(value)}; use 'earliest', 'latest', { offset: n } or { timestamp: ms }.`,
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

/** Validates one outgoing record and returns its size in bytes (value + key + header names and values). */
export function checkRecord(
  topic: string,
  record: OutgoingRecord,
  index: number,
  maxRecordBytes: number,
): number {
  const bad = (what: string) =>
    new TidingsError(
      ErrorCode.VALIDATION_FAILED,
      `Record ${index} published to topic '${topic}' ${what}; nothing was written. Fix the record and publish again.`,
      { topic, index },
    );
  if (typeof record !== 'object' || record === null) throw bad(`is ${describeValue(record)}, not an object`);
  if (typeof record.key !== 'string')
    throw bad(`has key ${describeValue(record.key)}; the key must be a string`);
  if (!(record.value instanceof Uint8Array)) {
    throw bad(`has value ${describeValue(record.value)}; the value must be a Uint8Array`);
  }
  if (record.timestamp !== undefined && !(Number.isFinite(record.timestamp) && record.timestamp >= 0)) {
    throw bad(`has timestamp ${describeValue(record.timestamp)}; it must be ms since the epoch, or absent`);
  }
  const headers: unknown = record.headers;
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) {
    throw bad(`has headers ${describeValue(headers)}; headers must be an object of strings`);
  }
  let headerBytes = Buffer.byteLength(record.key, 'utf8');
  for (const [name, value] of Object.entries(headers)) {
    if (typeof value !== 'string') {
      throw bad(`has header '${name}' = ${describeValue(value)}; header values must be strings`);
    }
    const lower = name.toLowerCase();
    if (reservedHeaderPrefixes.some((prefix) => lower.startsWith(prefix))) {
      throw bad(
        `has header '${name}'; names starting with 'x-tidings-' or 'x-stream-' are reserved by the transport`,
      );
    }
    headerBytes += Buffer.byteLength(name, 'utf8') + Buffer.byteLength(value, 'utf8');
  }
  const bytes = record.value.byteLength + headerBytes;
  if (bytes > maxRecordBytes) {
    throw tooLarge(
      topic,
      record.key,
      index,
      bytes,
      maxRecordBytes,
      `the RabbitMQ transport's maxRecordBytes limit`,
    );
  }
  if (headerBytes > limits.maxHeaderBytes) {
    throw tooLarge(
      topic,
      record.key,
      index,
      headerBytes,
      limits.maxHeaderBytes,
      'the limit on key plus headers (they travel in one AMQP header frame)',
    );
  }
  return bytes;
}

function tooLarge(
  topic: string,
  key: string,
  index: number,
  bytes: number,
  limit: number,
  what: string,
): TidingsError {
  return new TidingsError(
    ErrorCode.EVENT_TOO_LARGE,
    `Record ${index} published to topic '${topic}' (key '${key}') is ${bytes} bytes, over ${what} of ${limit}; ` +
      `nothing was written. Make the event smaller (store large payloads elsewhere and publish a reference) or ` +
      `raise maxRecordBytes.`,
    { topic, index, sizeBytes: bytes, maxRecordBytes: limit },
  );
}
