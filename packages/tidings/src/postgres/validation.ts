/**
 * Input checks of the PostgreSQL transport: the shared transport checks, plus the one rule PostgreSQL adds: `text`
 * and `jsonb` cannot hold the character U+0000, in names, keys or headers.
 */
import {
  checkName as checkAnyName,
  checkRecord,
  checkSubscribeOptions as checkAnySubscribeOptions,
  invalidRecord,
  limits,
  recordTooLarge,
  type CheckedSubscribeOptions,
} from '../core/transport-checks.js';
import type { OutgoingRecord, SubscribeOptions } from '../core/transport.js';

export {
  checkInteger,
  checkNumber,
  checkStartPosition,
  describeValue,
  invalid,
  limits,
  type CheckedSubscribeOptions,
} from '../core/transport-checks.js';

const rules = { ...limits, forbidNul: true } as const;

/** Checks a topic or group name: non-empty, at most `maxLength` characters, no U+0000. */
export function checkName(
  value: unknown,
  kind: 'topic' | 'group',
  maxLength: number,
): asserts value is string {
  checkAnyName(value, kind, maxLength, true);
}

/** Checks and defaults the options of `subscribe`, refusing U+0000 in group and topic names. */
export function checkSubscribeOptions(options: SubscribeOptions): CheckedSubscribeOptions {
  return checkAnySubscribeOptions(options, rules);
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
  checkRecord(topic, record, index);
  const { key, value, headers } = record;
  if (key.includes('\u0000')) {
    throw invalidRecord(topic, index, 'has a key containing U+0000, which PostgreSQL text cannot store');
  }
  let bytes = value.byteLength + Buffer.byteLength(key, 'utf8');
  const copy: Record<string, string> = {};
  for (const name of Object.keys(headers)) {
    const headerValue = headers[name] as string;
    if (name.includes('\u0000') || headerValue.includes('\u0000')) {
      throw invalidRecord(
        topic,
        index,
        `has header '${name}' containing U+0000, which PostgreSQL jsonb cannot store`,
      );
    }
    bytes += Buffer.byteLength(name, 'utf8') + Buffer.byteLength(headerValue, 'utf8');
    copy[name] = headerValue;
  }
  if (bytes > maxRecordBytes) {
    throw recordTooLarge("the PostgreSQL transport's", topic, key, index, bytes, maxRecordBytes);
  }
  return {
    key,
    headersJson: JSON.stringify(copy),
    value: Buffer.from(value),
    timestamp: record.timestamp ?? now,
    bytes,
  };
}
