/**
 * Records as stream entries. An entry's fields: `_o` the offset (always first, so scripts read it as `fields[2]`),
 * `_k` the key, `_t` the timestamp in ms when it is not the entry id's time (the id's time is the running maximum of
 * the partition's timestamps, so `_t` appears only after a producer clock went back), one field per header under its
 * own name (CloudEvents binary mode: `ce-id`,
 * `ce-type`, ... are plain stream fields a non-Tidings consumer reads as they are; a header whose name starts with `_`
 * is stored with a second `_` in front), and `_v` the value, last.
 */
import type { OutgoingRecord, StoredRecord } from '../core/transport.js';
import { checkRecord, tooLarge } from './validation.js';

/** A record checked and encoded for the publish script. */
export interface PreparedRecord {
  readonly key: string;
  /** ms since the epoch, as a decimal string. */
  readonly timestamp: string;
  /** Bytes as `maxRecordBytes` counts them. */
  readonly size: number;
  /** Alternating field name, value. */
  readonly headers: string[];
  /** A private copy of the value. */
  readonly value: Buffer;
}

/**
 * Checks one outgoing record (`VALIDATION_FAILED`, `EVENT_TOO_LARGE`) and encodes it, copying the value so later
 * changes to the caller's buffer cannot leak in.
 */
export function prepareRecord(
  topic: string,
  record: OutgoingRecord,
  index: number,
  now: number,
  maxRecordBytes: number,
): PreparedRecord {
  checkRecord(topic, record, index);
  // One UTF-8 length of everything textual (one native call, not one per header name and value). The NUL between
  // pieces (one byte each, subtracted) keeps a lone surrogate at the end of one from pairing with the next.
  let text = record.key;
  const headers: string[] = [];
  for (const name in record.headers) {
    if (!Object.hasOwn(record.headers, name)) continue;
    const value = record.headers[name]!;
    text += '\0';
    text += name;
    text += '\0';
    text += value;
    headers.push(name.charCodeAt(0) === 95 ? `_${name}` : name, value);
  }
  const size = Buffer.byteLength(text, 'utf8') - headers.length + record.value.byteLength;
  if (size > maxRecordBytes) throw tooLarge(topic, record.key, index, size, maxRecordBytes);
  return {
    key: record.key,
    timestamp: String(record.timestamp ?? now),
    size,
    headers,
    value: Buffer.from(record.value),
  };
}

/** A stored record as read from a stream, with its entry id. */
export interface Entry extends StoredRecord {
  readonly id: string;
}

const underscore = 95;
const o = 111;
const k = 107;
const t = 116;
const v = 118;

/** Decodes a stream entry (`[id, [field, value, ...]]` as Buffers) of partition `partition` of `topic`. */
export function decodeEntry(
  topic: string,
  partition: number,
  id: Buffer | string,
  fields: readonly Buffer[],
): Entry {
  let offset = -1;
  let key = '';
  let timestamp = -1;
  let value: Uint8Array = new Uint8Array(0);
  let headersFrom = -1;
  let headersTo = -1;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const name = fields[i]!;
    const data = fields[i + 1]!;
    if (name[0] === underscore && name.length === 2) {
      switch (name[1]) {
        case o:
          offset = Number(data.toString('latin1'));
          continue;
        case k:
          key = data.toString('utf8');
          continue;
        case t:
          timestamp = Number(data.toString('latin1'));
          continue;
        case v:
          value = new Uint8Array(data);
          continue;
        default:
          break;
      }
    }
    if (headersFrom < 0) headersFrom = i;
    headersTo = i + 2;
  }
  const entryId = typeof id === 'string' ? id : id.toString('latin1');
  if (timestamp < 0) timestamp = idMs(entryId);
  return {
    id: entryId,
    topic,
    partition,
    offset,
    key,
    headers: headersFrom < 0 ? {} : decodeHeaders(fields, headersFrom, headersTo),
    value,
    timestamp,
  };
}

/**
 * The headers among `fields[from, to)`. The reply parser hands out the fields as views into one reply buffer, in
 * order: when they are (and all ASCII, as CloudEvents attributes are), one string conversion serves them all, which
 * is much cheaper than one per name and value. Otherwise each field is decoded as UTF-8.
 */
function decodeHeaders(fields: readonly Buffer[], from: number, to: number): Record<string, string> {
  const headers: Record<string, string> = {};
  const first = fields[from]!;
  const last = fields[to - 1]!;
  const base = first.byteOffset;
  const end = last.byteOffset + last.length;
  let text: string | undefined;
  if (end > base && end - base <= 64 * 1024) {
    let contiguous = true;
    for (let i = from; i < to; i++) {
      const field = fields[i]!;
      if (field.buffer !== first.buffer || field.byteOffset < base || field.byteOffset + field.length > end) {
        contiguous = false;
        break;
      }
    }
    if (contiguous) {
      const whole = Buffer.from(first.buffer, base, end - base).toString('latin1');
      if (!nonAscii.test(whole)) text = whole;
    }
  }
  for (let i = from; i < to; i += 2) {
    const name = fields[i]!;
    const data = fields[i + 1]!;
    let header: string;
    let value: string;
    if (text !== undefined) {
      const at = name.byteOffset - base;
      header = text.substring(name[0] === underscore ? at + 1 : at, at + name.length);
      const valueAt = data.byteOffset - base;
      value = text.substring(valueAt, valueAt + data.length);
    } else {
      header = name[0] === underscore ? name.toString('utf8', 1) : name.toString('utf8');
      value = data.toString('utf8');
    }
    headers[header] = value;
  }
  return headers;
}

const nonAscii = /[\u0080-\uffff]/;

/** The ms part of an entry id. */
export function idMs(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
}
