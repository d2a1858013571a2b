/**
 * A Tidings record as a NATS message and back.
 *
 * The value is the message payload. Headers become native NATS headers (so the CloudEvents `ce-*` attributes of the
 * binary mode are readable by any NATS client), except those NATS cannot carry exactly: names outside printable
 * ASCII or containing `:`, names starting with `Nats-` (reserved by the server) or `Tidings-` (ours), and values with
 * CR, LF or leading/trailing white space (NATS trims them). Those travel together, JSON-encoded, in one
 * `Tidings-Escaped` header. The key travels in `Tidings-Key` (or in `Tidings-Escaped` if NATS cannot carry it
 * exactly); a producer-supplied timestamp in `Tidings-Time`. Without it a record's timestamp is the time the
 * server stored it.
 */
import type { JsMsg } from '@nats-io/jetstream';
import { MsgHdrsImpl, type MsgHdrs } from '@nats-io/transport-node';
import type { StoredRecord } from '../core/transport.js';

export const keyHeader = 'Tidings-Key';
export const timeHeader = 'Tidings-Time';
export const escapedHeader = 'Tidings-Escaped';

/** "NATS/1.0" + the final CRLF CRLF. */
const headerBlockFixedBytes = 12;
/** CRLF before each header line and ": " inside it. */
const headerLineFixedBytes = 4;

const nativeName = /^[!-9;-~]+$/;

function canCarryName(name: string): boolean {
  if (!nativeName.test(name)) return false;
  const lower = name.toLowerCase();
  return !lower.startsWith('nats-') && !lower.startsWith('tidings-');
}

function canCarryValue(value: string): boolean {
  return !value.includes('\r') && !value.includes('\n') && value.trim() === value;
}

export interface EncodedRecord {
  headers: MsgHdrs;
  /** Size of the NATS message as the server counts it against `max_payload`: header block plus payload. */
  wireBytes: number;
}

/** Builds the NATS headers of a record (see the module comment) and its size on the wire. */
export function encodeRecord(
  key: string,
  headers: Readonly<Record<string, string>>,
  value: Uint8Array,
  timestamp: number | undefined,
): EncodedRecord {
  // Built as the client's header object directly: every name and value is checked here already, and the client's
  // own setter re-validates and searches the names on every call.
  const native: Record<string, string[]> = Object.create(null) as Record<string, string[]>;
  let headerBytes = headerBlockFixedBytes;
  const add = (name: string, text: string) => {
    native[name] = [text];
    headerBytes += headerLineFixedBytes + name.length + Buffer.byteLength(text, 'utf8');
  };
  let escaped: { h?: Record<string, string>; k?: string } | undefined;
  if (canCarryValue(key)) add(keyHeader, key);
  else escaped = { k: key };
  for (const name in headers) {
    const text = headers[name]!;
    if (canCarryName(name) && canCarryValue(text)) add(name, text);
    else ((escaped ??= {}).h ??= Object.create(null) as Record<string, string>)[name] = text;
  }
  if (timestamp !== undefined) add(timeHeader, String(timestamp));
  if (escaped !== undefined) add(escapedHeader, JSON.stringify(escaped));
  return { headers: MsgHdrsImpl.fromRecord(native), wireBytes: headerBytes + value.byteLength };
}

interface DecodedHeaders {
  key: string;
  headers: Record<string, string>;
  timestamp: number | undefined;
}

/** Reads key, headers and producer timestamp back from a message's NATS headers. */
export function decodeHeaders(natsHeaders: Iterable<[string, string[]]> | undefined): DecodedHeaders {
  const decoded: DecodedHeaders = { key: '', headers: {}, timestamp: undefined };
  if (natsHeaders === undefined) return decoded;
  for (const [name, values] of natsHeaders) addHeader(decoded, name, values[0] ?? '');
  return decoded;
}

function addHeader(decoded: DecodedHeaders, name: string, text: string): void {
  if (name === keyHeader) decoded.key = text;
  else if (name === timeHeader) {
    const parsed = Number(text);
    if (Number.isFinite(parsed)) decoded.timestamp = parsed;
  } else if (name === escapedHeader) {
    try {
      const parsed = JSON.parse(text) as { h?: Record<string, string>; k?: string };
      if (typeof parsed.k === 'string') decoded.key = parsed.k;
      if (parsed.h !== undefined)
        for (const [n, v] of Object.entries(parsed.h)) setOwn(decoded.headers, n, v);
    } catch {
      // Not written by Tidings: keep it as an ordinary header.
      setOwn(decoded.headers, name, text);
    }
  } else if (!isNatsHeader(name) && !Object.hasOwn(decoded.headers, name)) {
    setOwn(decoded.headers, name, text);
  }
}

/** Sets an own property, `__proto__` included (plain assignment would set the prototype instead). */
function setOwn(target: Record<string, string>, name: string, value: string): void {
  if (name === '__proto__') {
    Object.defineProperty(target, name, { value, enumerable: true, writable: true, configurable: true });
  } else {
    target[name] = value;
  }
}

const headerDecoder = new TextDecoder();

/**
 * Decodes a header block (`NATS/1.0\r\nName: value\r\n...\r\n\r\n`) as the client does (first value of a name
 * wins, values trimmed), without building the client's header object: consuming is dominated by header decoding.
 */
function decodeHeaderBlock(block: Uint8Array): DecodedHeaders {
  const decoded: DecodedHeaders = { key: '', headers: {}, timestamp: undefined };
  const text = headerDecoder.decode(block);
  let start = text.indexOf('\r\n');
  while (start !== -1) {
    start += 2;
    const end = text.indexOf('\r\n', start);
    const line = end === -1 ? text.slice(start) : text.slice(start, end);
    const colon = line.indexOf(':');
    if (colon > 0) addHeader(decoded, line.slice(0, colon), line.slice(colon + 1).trim());
    start = end;
  }
  return decoded;
}

/**
 * The raw header block of a consumed message, read from the client's message object (`JsMsgImpl.msg`, a `MsgImpl`
 * keeping the received bytes and the header length), or undefined where that shape is not found.
 */
function headerBlockOf(message: unknown): Uint8Array | null | undefined {
  const msg = (message as { msg?: { _rdata?: unknown; _msg?: { hdr?: unknown } } }).msg;
  const data = msg?._rdata;
  const length = msg?._msg?.hdr;
  if (!(data instanceof Uint8Array) || typeof length !== 'number') return undefined;
  return length > -1 ? data.subarray(0, length) : null;
}

/** Key, headers and producer timestamp of a consumed message. */
export function decodeMessageHeaders(message: {
  headers: Iterable<[string, string[]]> | undefined;
}): DecodedHeaders {
  const block = headerBlockOf(message);
  if (block === null) return { key: '', headers: {}, timestamp: undefined };
  if (block !== undefined) return decodeHeaderBlock(block);
  return decodeHeaders(message.headers);
}

/** `Nats-*` (any case): headers the server sets or acts on, never a Tidings record's own. */
function isNatsHeader(name: string): boolean {
  const first = name.charCodeAt(0);
  return (first === 0x4e || first === 0x6e) && name.length >= 5 && name.slice(0, 5).toLowerCase() === 'nats-';
}

/** Builds the stored record of a message at stream sequence `seq` (offset `seq - 1`). */
export function toStoredRecord(
  topic: string,
  partition: number,
  seq: number,
  serverTimeMs: number,
  natsHeaders: Iterable<[string, string[]]> | undefined,
  data: Uint8Array,
): StoredRecord {
  return storedRecordOf(topic, partition, seq, serverTimeMs, decodeHeaders(natsHeaders), data);
}

/** Builds the stored record of a consumed message at a position read by {@link consumedPosition}. */
export function consumedRecord(
  topic: string,
  partition: number,
  message: JsMsg,
  position: ConsumedPosition = consumedPosition(message),
): StoredRecord {
  return storedRecordOf(
    topic,
    partition,
    position.seq,
    position.timeMs,
    decodeMessageHeaders(message),
    message.data,
  );
}

function storedRecordOf(
  topic: string,
  partition: number,
  seq: number,
  serverTimeMs: number,
  decoded: DecodedHeaders,
  data: Uint8Array,
): StoredRecord {
  return {
    topic,
    partition,
    offset: seq - 1,
    key: decoded.key,
    headers: decoded.headers,
    value: data,
    timestamp: decoded.timestamp ?? serverTimeMs,
  };
}

/** Where a consumed message is: its stream sequence and the server's time of it (ms since the epoch). */
export interface ConsumedPosition {
  seq: number;
  timeMs: number;
}

/**
 * Stream sequence and server time of a consumed message, read once from its JetStream reply subject
 * (`$JS.ACK.[<domain>.<account>.]<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<nanos>.<pending>[.<token>]`); the
 * nanoseconds are read as a string, so no precision is lost to a 53-bit float.
 */
export function consumedPosition(message: JsMsg): ConsumedPosition {
  const reply = (message as { reply?: unknown }).reply;
  if (typeof reply === 'string') {
    const tokens = reply.split('.');
    // 9 tokens: the old form; 11 or more: the new one, with domain and account hash.
    const base = tokens.length === 9 ? 0 : 2;
    const seq = Number(tokens[5 + base]);
    const nanos = tokens[7 + base];
    if (Number.isSafeInteger(seq) && nanos !== undefined && nanos.length > 6) {
      const timeMs = Number(nanos.slice(0, -6));
      if (Number.isSafeInteger(timeMs)) return { seq, timeMs };
    }
  }
  return { seq: message.seq, timeMs: messageTimeMs(message) };
}

/** The server's timestamp of a consumed message, in ms since the epoch. */
export function messageTimeMs(message: { timestampNanos: bigint }): number {
  return Number(message.timestampNanos / 1_000_000n);
}
