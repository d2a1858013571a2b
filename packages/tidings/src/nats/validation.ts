/**
 * Checks of caller input (names, records, positions, subscribe options): each rejects with a `TidingsError` that
 * names what was wrong and what to do.
 */
import { ErrorCode, TidingsError } from '../core/errors.js';
import type { OutgoingRecord, StartPosition, SubscribeOptions } from '../core/transport.js';
import { checkInteger, describeValue, invalid, natsDefaults, natsLimits } from './options.js';

export function checkName(value: unknown, kind: 'topic' | 'group'): asserts value is string {
  const maxLength = kind === 'topic' ? natsLimits.topicNameLength : natsLimits.groupNameLength;
  if (typeof value !== 'string' || value.length === 0 || value.length > maxLength) {
    throw invalid(
      `A ${kind} name must be a non-empty string of at most ${maxLength} characters, got ${describeValue(value)}.`,
    );
  }
}

export function checkNumber(value: unknown, what: string, min: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
    throw invalid(`${what} must be a finite number >= ${min}, got ${describeValue(value)}.`);
  }
  return value;
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
  checkName(options.group, 'group');
  const group = options.group;
  if (!Array.isArray(options.topics) || options.topics.length === 0) {
    throw invalid(
      `subscribe for group '${group}' needs a non-empty array of topics, got ${describeValue(options.topics)}.`,
      { group },
    );
  }
  const topics: readonly string[] = options.topics;
  for (const topic of topics) checkName(topic, 'topic');
  const startFrom =
    options.startFrom === undefined
      ? 'latest'
      : checkStartPosition(options.startFrom, `subscribe for group '${group}'`);
  const prefetch =
    options.prefetch === undefined
      ? natsDefaults.prefetch
      : checkInteger(
          options.prefetch,
          `prefetch of a subscription of group '${group}'`,
          1,
          natsLimits.prefetch,
        );
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
 * Validates one outgoing record and returns its size as the contract counts it: value length plus the UTF-8 bytes of
 * the key and of every header name and value.
 */
export function checkRecord(topic: string, record: OutgoingRecord, index: number): number {
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
  let bytes = record.value.byteLength + Buffer.byteLength(record.key, 'utf8');
  for (const [name, value] of Object.entries(headers)) {
    if (typeof value !== 'string') {
      throw bad(`has header '${name}' = ${describeValue(value)}; header values must be strings`);
    }
    bytes += Buffer.byteLength(name, 'utf8') + Buffer.byteLength(value, 'utf8');
  }
  return bytes;
}
