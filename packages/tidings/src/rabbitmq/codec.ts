/**
 * How a record travels as an AMQP 0-9-1 message. The value is the body. The key, the record's timestamp in ms and a
 * publish id ride in `x-tidings-*` headers; every record header (CloudEvents binary mode `ce-*` attributes included)
 * is an AMQP header of the same name, so a plain AMQP consumer reads them natively. The CloudEvents attributes that
 * AMQP has properties for are mirrored there as well: `ce-id` → `message-id`, `ce-type` → `type`,
 * `ce-datacontenttype` → `content-type`, the time → `timestamp` (seconds).
 */
import type { ConsumeMessage, Options } from 'amqplib';
import type { StoredRecord } from '../core/transport.js';

export const header = {
  key: 'x-tidings-key',
  timestamp: 'x-tidings-ts',
  publishId: 'x-tidings-pid',
  streamOffset: 'x-stream-offset',
} as const;

export function encodeProperties(
  key: string,
  headers: Readonly<Record<string, string>>,
  timestamp: number,
  publishId: string,
): Options.Publish {
  const table: Record<string, unknown> = { ...headers };
  table[header.key] = key;
  table[header.timestamp] = String(timestamp);
  table[header.publishId] = publishId;
  const properties: Options.Publish = {
    headers: table,
    persistent: true,
    timestamp: Math.floor(timestamp / 1000),
  };
  const id = headers['ce-id'];
  if (id !== undefined) properties.messageId = id;
  const type = headers['ce-type'];
  if (type !== undefined) properties.type = type;
  const contentType = headers['ce-datacontenttype'];
  if (contentType !== undefined) properties.contentType = contentType;
  return properties;
}

/** The stream offset of a message consumed from a stream, or undefined if it carries none. */
export function streamOffsetOf(message: ConsumeMessage): number | undefined {
  const offset: unknown = (message.properties.headers as Record<string, unknown> | undefined)?.[
    header.streamOffset
  ];
  return typeof offset === 'number' ? offset : typeof offset === 'bigint' ? Number(offset) : undefined;
}

export function publishIdOf(message: ConsumeMessage): string | undefined {
  const value: unknown = (message.properties.headers as Record<string, unknown> | undefined)?.[
    header.publishId
  ];
  return typeof value === 'string' ? value : Buffer.isBuffer(value) ? value.toString('utf8') : undefined;
}

/** Decodes a message consumed from a partition stream. Messages not written by Tidings decode with an empty key. */
export function decodeRecord(
  topic: string,
  partition: number,
  offset: number,
  message: ConsumeMessage,
): StoredRecord {
  const table = (message.properties.headers ?? {}) as Record<string, unknown>;
  const headers: Record<string, string> = {};
  let key = '';
  let timestamp: number | undefined;
  for (const [name, raw] of Object.entries(table)) {
    const value = headerString(raw);
    if (value === undefined) continue;
    if (name === header.key) key = value;
    else if (name === header.timestamp) timestamp = Number(value);
    else if (name.startsWith('x-tidings-') || name.startsWith('x-stream-')) continue;
    else headers[name] = value;
  }
  if (timestamp === undefined || !Number.isFinite(timestamp)) {
    const seconds: unknown = message.properties.timestamp;
    timestamp = typeof seconds === 'number' ? seconds * 1000 : 0;
  }
  return {
    topic,
    partition,
    offset,
    key,
    headers: Object.freeze(headers),
    value: new Uint8Array(message.content.buffer, message.content.byteOffset, message.content.byteLength),
    timestamp,
  };
}

/** The record's timestamp without decoding the whole message. */
export function timestampOf(message: ConsumeMessage): number {
  const raw = headerString(
    (message.properties.headers as Record<string, unknown> | undefined)?.[header.timestamp],
  );
  const value = raw === undefined ? NaN : Number(raw);
  if (Number.isFinite(value)) return value;
  const seconds: unknown = message.properties.timestamp;
  return typeof seconds === 'number' ? seconds * 1000 : 0;
}

function headerString(raw: unknown): string | undefined {
  if (typeof raw === 'string') return raw;
  if (Buffer.isBuffer(raw)) return raw.toString('utf8');
  if (typeof raw === 'number' || typeof raw === 'boolean' || typeof raw === 'bigint') return String(raw);
  return undefined;
}
