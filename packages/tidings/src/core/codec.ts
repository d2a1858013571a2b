/**
 * The wire codec: turns an {@link Envelope} into the headers and bytes a transport carries, and back.
 *
 * Two CloudEvents 1.0 content modes are supported, both with JSON data only:
 * - binary: context attributes as `ce-*` headers (names per the CloudEvents HTTP binding), `content-type` carries
 *   `datacontenttype`, the value is the UTF-8 JSON of `data`;
 * - structured: one `content-type: application/cloudevents+json` header, the value is the UTF-8 JSON of the whole
 *   event (JSON event format).
 *
 * Transports whose binding names headers differently (Kafka's `ce_`) translate these canonical names themselves.
 * Header values are written as they are, without the HTTP binding's percent-encoding (the cloudevents SDK neither
 * writes nor reads it).
 */
import { envelopeAttributes, tidingsExtensions } from './envelope.js';
import type { Envelope } from './envelope.js';
import { ErrorCode, TidingsError } from './errors.js';
import type { TidingsErrorOptions } from './errors.js';

/** How the envelope travels: attributes as headers (`binary`) or the whole event as one JSON body (`structured`). */
export type WireMode = 'binary' | 'structured';

/** The encoded form a transport carries: canonical lower-case header names and the record value. */
export interface EncodedEnvelope {
  headers: Record<string, string>;
  value: Uint8Array;
}

type ExtensionValue = string | number | boolean;

/** The extension attributes Tidings defines whose value is a string (schemaversion is the one integer). */
const stringExtensions = [
  'traceparent',
  'tracestate',
  'correlationid',
  'causationid',
  'partitionkey',
] as const;

const DEFAULT_DATA_CONTENT_TYPE = 'application/json';
const STRUCTURED_CONTENT_TYPE = 'application/cloudevents+json; charset=utf-8';
const STRUCTURED_PREFIX = 'application/cloudevents+json';
const BATCH_PREFIX = 'application/cloudevents-batch+json';
const HEADER_PREFIX = 'ce-';
const INT32_MIN = -2_147_483_648;
const INT32_MAX = 2_147_483_647;

/** CloudEvents attribute naming: lower-case ASCII letters and digits, at most 20 characters. */
const extensionName = /^[a-z0-9]{1,20}$/;
/** RFC 3339 `date-time` (the calendar check is left to `Date.parse`). */
const rfc3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$/;
/** A structured-syntax `+json` media type, e.g. `application/vnd.acme.order+json` (input lower-cased). */
const jsonSuffixMediaType = /^[a-z0-9][a-z0-9!#$&^_.+-]*\/[a-z0-9][a-z0-9!#$&^_.+-]*\+json$/;
/** A positive decimal integer without sign or leading zeros, at most 10 digits (the int32 range is checked after). */
const positiveDecimal = /^[1-9][0-9]{0,9}$/;

/** Names an extension may not take: every attribute Tidings maps to an envelope field, plus the data members. */
const reservedNames: ReadonlySet<string> = new Set<string>([...envelopeAttributes, 'data', 'data_base64']);

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Encodes an envelope for a transport.
 *
 * Binary mode writes `content-type` (the envelope's `datacontenttype`, default `application/json`), `ce-specversion`,
 * `ce-id`, `ce-source`, `ce-type`, `ce-time`, then each optional attribute that is set (`ce-subject`,
 * `ce-dataschema`, the Tidings extensions with `ce-schemaversion` as a decimal string, then `extensions`); the value
 * is the UTF-8 JSON of `data`, empty when `data` is `undefined`. Structured mode writes only `content-type:
 * application/cloudevents+json; charset=utf-8` and the UTF-8 JSON of the whole event, `datacontenttype` included
 * (default `application/json`) and `schemaversion` as a JSON number.
 *
 * What this returns, {@link decodeEnvelope} turns back into an equal envelope, with two documented differences: an
 * absent `datacontenttype` decodes as `application/json`, and in binary mode number and boolean `extensions` values
 * decode as strings (the binding carries no types).
 *
 * Pure and synchronous; the returned headers object and value are new on every call.
 *
 * @throws {TidingsError} `INVALID_CONFIG` when an extension name does not match `/^[a-z0-9]{1,20}$/` or shadows a
 *   CloudEvents or Tidings attribute, when an extension value is not a string, boolean or 32-bit integer, when
 *   `schemaversion` is not a positive 32-bit integer, or when `datacontenttype` is not a JSON media type.
 * @throws {TidingsError} `VALIDATION_FAILED` when `data` cannot be serialised as JSON (a `BigInt`, a cycle).
 */
export function encodeEnvelope(envelope: Envelope, mode: WireMode): EncodedEnvelope {
  if (envelope.schemaversion !== undefined) assertSchemaVersion(envelope);
  if (envelope.datacontenttype !== undefined) assertJsonDataContentType(envelope);
  if (mode === 'binary') return encodeBinary(envelope);
  if (mode === 'structured') return encodeStructured(envelope);
  throw new TidingsError(
    ErrorCode.INVALID_CONFIG,
    `Unknown wire mode ${JSON.stringify(mode)}; use 'binary' or 'structured'.`,
  );
}

function encodeBinary(envelope: Envelope): EncodedEnvelope {
  const headers: Record<string, string> = {
    'content-type': envelope.datacontenttype ?? DEFAULT_DATA_CONTENT_TYPE,
    'ce-specversion': envelope.specversion,
    'ce-id': envelope.id,
    'ce-source': envelope.source,
    'ce-type': envelope.type,
  };
  if (envelope.time !== undefined) headers['ce-time'] = envelope.time;
  if (envelope.subject !== undefined) headers['ce-subject'] = envelope.subject;
  if (envelope.dataschema !== undefined) headers['ce-dataschema'] = envelope.dataschema;
  if (envelope.traceparent !== undefined) headers['ce-traceparent'] = envelope.traceparent;
  if (envelope.tracestate !== undefined) headers['ce-tracestate'] = envelope.tracestate;
  if (envelope.correlationid !== undefined) headers['ce-correlationid'] = envelope.correlationid;
  if (envelope.causationid !== undefined) headers['ce-causationid'] = envelope.causationid;
  if (envelope.partitionkey !== undefined) headers['ce-partitionkey'] = envelope.partitionkey;
  if (envelope.schemaversion !== undefined) headers['ce-schemaversion'] = String(envelope.schemaversion);
  if (envelope.extensions !== undefined) {
    for (const [name, value] of Object.entries(envelope.extensions)) {
      assertExtension(envelope, name, value);
      headers[HEADER_PREFIX + name] = String(value);
    }
  }
  const json = stringify(envelope, envelope.data);
  return { headers, value: json === undefined ? new Uint8Array(0) : encoder.encode(json) };
}

function encodeStructured(envelope: Envelope): EncodedEnvelope {
  const event: Record<string, unknown> = {
    specversion: envelope.specversion,
    id: envelope.id,
    source: envelope.source,
    type: envelope.type,
  };
  if (envelope.time !== undefined) event['time'] = envelope.time;
  if (envelope.subject !== undefined) event['subject'] = envelope.subject;
  event['datacontenttype'] = envelope.datacontenttype ?? DEFAULT_DATA_CONTENT_TYPE;
  if (envelope.dataschema !== undefined) event['dataschema'] = envelope.dataschema;
  for (const name of tidingsExtensions) {
    const value = envelope[name];
    if (value !== undefined) event[name] = value;
  }
  if (envelope.extensions !== undefined) {
    for (const [name, value] of Object.entries(envelope.extensions)) {
      assertExtension(envelope, name, value);
      event[name] = value;
    }
  }
  if (envelope.data !== undefined) event['data'] = envelope.data;
  const json = stringify(envelope, event) ?? '{}';
  return { headers: { 'content-type': STRUCTURED_CONTENT_TYPE }, value: encoder.encode(json) };
}

function stringify(envelope: Envelope, value: unknown): string | undefined {
  try {
    return JSON.stringify(value);
  } catch (cause) {
    throw new TidingsError(
      ErrorCode.VALIDATION_FAILED,
      `Cannot encode event ${envelope.type} ${envelope.id}: its data is not JSON-serialisable (${describe(cause)}). ` +
        'Give the event plain JSON data (no BigInt, no cycles), or convert it in the event schema.',
      { retryable: false, cause, eventId: envelope.id, eventType: envelope.type },
    );
  }
}

function assertExtension(envelope: Envelope, name: string, value: unknown): asserts value is ExtensionValue {
  if (!extensionName.test(name)) {
    throw invalidEnvelope(
      envelope,
      `extension name ${JSON.stringify(name)} is not a valid CloudEvents attribute name. ` +
        'Use 1 to 20 lower-case ASCII letters and digits, e.g. "tenantid".',
    );
  }
  if (reservedNames.has(name)) {
    throw invalidEnvelope(
      envelope,
      `extension ${JSON.stringify(name)} has the name of a CloudEvents or Tidings attribute. ` +
        `Set the envelope field \`${name}\` instead, or rename the extension.`,
    );
  }
  if (!isExtensionValue(value)) {
    throw invalidEnvelope(
      envelope,
      `extension ${JSON.stringify(name)} has the value ${describeValue(value)}; CloudEvents extension values ` +
        'must be a string, a boolean or a 32-bit integer. Convert the value to a string.',
    );
  }
}

function assertSchemaVersion(envelope: Envelope): void {
  const version = envelope.schemaversion;
  if (!Number.isInteger(version) || version === undefined || version < 1 || version > INT32_MAX) {
    throw invalidEnvelope(
      envelope,
      `schemaversion ${describeValue(version)} is not a positive integer. ` +
        "Set it to the version of the event type's schema (1, 2, ...).",
    );
  }
}

function assertJsonDataContentType(envelope: Envelope): void {
  const contentType = envelope.datacontenttype;
  if (
    contentType === undefined ||
    contentType === DEFAULT_DATA_CONTENT_TYPE ||
    isJsonContentType(contentType)
  ) {
    return;
  }
  throw invalidEnvelope(
    envelope,
    `datacontenttype ${JSON.stringify(contentType)} is not JSON, but Tidings always encodes data as JSON. ` +
      'Leave datacontenttype unset, or use application/json or a */*+json media type.',
  );
}

function invalidEnvelope(envelope: Envelope, problem: string): TidingsError {
  return new TidingsError(
    ErrorCode.INVALID_CONFIG,
    `Cannot encode event ${envelope.type} ${envelope.id}: ${problem}`,
    {
      retryable: false,
      eventId: envelope.id,
      eventType: envelope.type,
    },
  );
}

/**
 * Decodes a record a transport received into an envelope.
 *
 * The mode is detected from the headers, whose names are matched case-insensitively: a `content-type` starting with
 * `application/cloudevents+json` means structured (any `ce-*` headers are then ignored); otherwise a
 * `ce-specversion` header means binary. In binary mode `content-type` is `datacontenttype`, `ce-schemaversion` is
 * parsed as a decimal integer, and every other `ce-<name>` header with a valid attribute name that Tidings does not
 * know goes to `extensions` as a string; an empty value decodes as `data: undefined`. In structured mode unknown
 * top-level members go to `extensions` with their JSON types; a missing `data` decodes as `undefined`; JSON `null`
 * attributes count as absent. Names that are not valid CloudEvents attribute names (`/^[a-z0-9]{1,20}$/`) are not
 * attributes and are ignored, so any decoded envelope can be encoded again.
 *
 * The result always has `datacontenttype` (`application/json` when the record has none) and never has an
 * `extensions` object when there are none. The attribute strings are kept exactly as received (`time` is checked,
 * not normalised).
 *
 * @throws {TidingsError} `DECODE_FAILED` (not retryable) when the record is not a CloudEvent in either mode, is a
 *   batch, lacks `id`, `source`, `type` or `specversion`, has a `specversion` other than `1.0`, has a `time`
 *   that is not RFC 3339, a `schemaversion` that is not a positive integer, an attribute of the wrong JSON type, a
 *   non-JSON `datacontenttype`, `data_base64`, a value that is not UTF-8 JSON, or conflicting header spellings.
 */
export function decodeEnvelope(record: {
  headers: Readonly<Record<string, string>>;
  value: Uint8Array;
}): Envelope {
  const headers = lowerCaseHeaders(record.headers);
  const contentType = headers['content-type'];
  if (contentType !== undefined) {
    const mediaType = contentType.trimStart().toLowerCase();
    if (mediaType.startsWith(STRUCTURED_PREFIX)) return decodeStructured(record.value);
    if (mediaType.startsWith(BATCH_PREFIX)) {
      throw decodeFailed(
        'record is a CloudEvents batch (content-type application/cloudevents-batch+json), which Tidings does not ' +
          'support. Publish one event per record, in binary or structured mode.',
      );
    }
  }
  if (headers['ce-specversion'] !== undefined) return decodeBinary(headers, record.value);
  throw decodeFailed(
    `record is not a CloudEvent: it has no ce-specversion header (binary mode) and its content-type is ` +
      `${contentType === undefined ? 'missing' : JSON.stringify(contentType)}, not application/cloudevents+json ` +
      '(structured mode). Publish it with Tidings or another CloudEvents 1.0 producer.',
  );
}

function lowerCaseHeaders(headers: Readonly<Record<string, string>>): Record<string, string> {
  // Fast path: Tidings and most brokers already deliver lower-case names; then the record's own object serves (its
  // prototype is Object.prototype or null, and no attribute name collides with an Object.prototype member).
  if (allLowerCase(headers)) return headers;
  // A null prototype, so that a header named `__proto__` or `constructor` is just a header.
  const lower = Object.create(null) as Record<string, string>;
  for (const name of Object.keys(headers)) {
    const value = headers[name];
    if (value === undefined) continue;
    const key = name.toLowerCase();
    const previous = lower[key];
    if (previous !== undefined && previous !== value) {
      throw decodeFailed(
        `header ${JSON.stringify(key)} appears twice, spelled with different case and different values ` +
          `(${JSON.stringify(previous)} and ${JSON.stringify(value)}). Fix the producer or the broker so that ` +
          'each header is sent once.',
      );
    }
    lower[key] = value;
  }
  return lower;
}

function allLowerCase(headers: Readonly<Record<string, string>>): boolean {
  if (Object.getPrototypeOf(headers) !== Object.prototype && Object.getPrototypeOf(headers) !== null)
    return false;
  for (const name in headers) {
    if (!Object.hasOwn(headers, name) || name === '__proto__' || name !== name.toLowerCase()) return false;
  }
  return true;
}

function decodeBinary(headers: Record<string, string>, value: Uint8Array): Envelope {
  const where = 'binary mode';
  const specversion = headers['ce-specversion'];
  assertSpecVersion(specversion, where);
  const id = requiredHeader(headers, 'id');
  const context: DecodeContext = { where, id };
  const type = requiredHeader(headers, 'type', context);
  context.type = type;
  const source = requiredHeader(headers, 'source', context);
  const time = headers['ce-time'];
  if (time !== undefined) assertTime(time, context);
  const datacontenttype = headers['content-type'] ?? DEFAULT_DATA_CONTENT_TYPE;
  assertJsonContentType(datacontenttype, context);

  const envelope: Envelope = { id, source, type, specversion: '1.0', datacontenttype, data: undefined };
  if (time !== undefined) envelope.time = time;
  const subject = headers['ce-subject'];
  if (subject !== undefined) envelope.subject = subject;
  const dataschema = headers['ce-dataschema'];
  if (dataschema !== undefined) envelope.dataschema = dataschema;
  for (const name of stringExtensions) {
    const header = headers[HEADER_PREFIX + name];
    if (header !== undefined) envelope[name] = header;
  }
  const schemaversion = headers['ce-schemaversion'];
  if (schemaversion !== undefined) envelope.schemaversion = parseSchemaVersion(schemaversion, context);

  let extensions: Record<string, ExtensionValue> | undefined;
  for (const header of Object.keys(headers)) {
    if (!header.startsWith(HEADER_PREFIX)) continue;
    const name = header.slice(HEADER_PREFIX.length);
    if (reservedNames.has(name) || !extensionName.test(name)) continue;
    extensions ??= {};
    extensions[name] = headers[header] ?? '';
  }
  if (extensions !== undefined) envelope.extensions = extensions;

  if (value.byteLength > 0)
    envelope.data = parseJson(value, 'the binary-mode value (the event data)', context);
  return envelope;
}

function decodeStructured(value: Uint8Array): Envelope {
  const where = 'structured mode';
  const parsed = parseJson(value, 'the structured-mode value (the whole event)', { where });
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw decodeFailed(
      `the structured-mode value is JSON ${Array.isArray(parsed) ? 'array' : describeValue(parsed)}, not an ` +
        'object. A structured CloudEvent is one JSON object with the attributes and data as members.',
    );
  }
  const event = parsed as Record<string, unknown>;
  const specversion = event['specversion'];
  assertSpecVersion(specversion ?? undefined, where);
  const id = requiredMember(event, 'id', { where });
  const context: DecodeContext = { where, id };
  const type = requiredMember(event, 'type', context);
  context.type = type;
  const source = requiredMember(event, 'source', context);
  if (event['data_base64'] !== undefined && event['data_base64'] !== null) {
    throw decodeFailed(
      'event carries data_base64 (binary data), which Tidings does not support. Publish the data as JSON in the ' +
        '"data" member instead.',
      context,
    );
  }
  const time = optionalMember(event, 'time', context);
  if (time !== undefined) assertTime(time, context);
  const datacontenttype = optionalMember(event, 'datacontenttype', context) ?? DEFAULT_DATA_CONTENT_TYPE;
  assertJsonContentType(datacontenttype, context);

  const envelope: Envelope = { id, source, type, specversion: '1.0', datacontenttype, data: undefined };
  if (time !== undefined) envelope.time = time;
  const subject = optionalMember(event, 'subject', context);
  if (subject !== undefined) envelope.subject = subject;
  const dataschema = optionalMember(event, 'dataschema', context);
  if (dataschema !== undefined) envelope.dataschema = dataschema;
  for (const name of stringExtensions) {
    const member = optionalMember(event, name, context);
    if (member !== undefined) envelope[name] = member;
  }
  const schemaversion = event['schemaversion'];
  if (schemaversion !== undefined && schemaversion !== null) {
    envelope.schemaversion =
      typeof schemaversion === 'number'
        ? checkSchemaVersion(schemaversion, context)
        : typeof schemaversion === 'string'
          ? parseSchemaVersion(schemaversion, context)
          : badSchemaVersion(schemaversion, context);
  }

  let extensions: Record<string, ExtensionValue> | undefined;
  for (const name of Object.keys(event)) {
    if (reservedNames.has(name) || !extensionName.test(name)) continue;
    const member = event[name];
    if (member === null || member === undefined) continue;
    if (!isExtensionValue(member)) {
      throw decodeFailed(
        `extension attribute ${JSON.stringify(name)} has the value ${describeValue(member)}; CloudEvents ` +
          'extension values must be strings, booleans or 32-bit integers. Fix the producer, or move the value ' +
          'into data.',
        context,
      );
    }
    extensions ??= {};
    extensions[name] = member;
  }
  if (extensions !== undefined) envelope.extensions = extensions;

  if (Object.hasOwn(event, 'data')) envelope.data = event['data'];
  return envelope;
}

/** What is known about the record so far, for error messages and details. */
interface DecodeContext {
  where: string;
  id?: string;
  type?: string;
}

function decodeFailed(problem: string, context?: DecodeContext, cause?: unknown): TidingsError {
  const options: TidingsErrorOptions = { retryable: false };
  if (cause !== undefined) options.cause = cause;
  let subject = 'record';
  if (context !== undefined) {
    subject = `${context.where} record`;
    if (context.id !== undefined) {
      options.eventId = context.id;
      subject += ` (id ${JSON.stringify(context.id)}`;
      if (context.type !== undefined) subject += `, type ${JSON.stringify(context.type)}`;
      subject += ')';
    }
    if (context.type !== undefined) options.eventType = context.type;
  }
  return new TidingsError(
    ErrorCode.DECODE_FAILED,
    `Cannot decode ${subject} as a CloudEvent: ${problem}`,
    options,
  );
}

function assertSpecVersion(specversion: unknown, where: string): void {
  if (specversion === '1.0') return;
  if (specversion === undefined || specversion === '') {
    throw decodeFailed(
      'the required attribute "specversion" is missing. Every CloudEvent needs id, source, type and specversion; ' +
        'fix the producer.',
      { where },
    );
  }
  throw decodeFailed(
    `specversion is ${JSON.stringify(specversion)}, but Tidings reads CloudEvents 1.0 only. Have the producer ` +
      'emit specversion "1.0".',
    { where },
  );
}

function missingAttribute(name: string, context: DecodeContext): TidingsError {
  return decodeFailed(
    `the attribute "${name}" is missing or empty, and it is required. Every CloudEvent needs id, source, type and ` +
      'specversion; fix the producer.',
    context,
  );
}

function requiredHeader(headers: Record<string, string>, name: string, context?: DecodeContext): string {
  const value = headers[HEADER_PREFIX + name];
  if (value === undefined || value === '') throw missingAttribute(name, context ?? { where: 'binary mode' });
  return value;
}

function requiredMember(event: Record<string, unknown>, name: string, context: DecodeContext): string {
  const value = optionalMember(event, name, context);
  if (value === undefined || value === '') throw missingAttribute(name, context);
  return value;
}

function optionalMember(
  event: Record<string, unknown>,
  name: string,
  context: DecodeContext,
): string | undefined {
  const value = event[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  throw decodeFailed(
    `the attribute "${name}" is ${describeValue(value)}, not a string. Fix the producer to write it as a JSON ` +
      'string.',
    context,
  );
}

function assertTime(time: string, context: DecodeContext): void {
  if (rfc3339.test(time) && !Number.isNaN(Date.parse(time))) return;
  throw decodeFailed(
    `time ${JSON.stringify(time)} is not an RFC 3339 timestamp such as "2024-05-01T12:00:00Z". Fix the producer ` +
      'to write an RFC 3339 date-time in UTC or with an offset.',
    context,
  );
}

function isJsonContentType(contentType: string): boolean {
  const semicolon = contentType.indexOf(';');
  const mediaType = (semicolon === -1 ? contentType : contentType.slice(0, semicolon)).trim().toLowerCase();
  return mediaType === DEFAULT_DATA_CONTENT_TYPE || jsonSuffixMediaType.test(mediaType);
}

function assertJsonContentType(contentType: string, context: DecodeContext): void {
  if (contentType === DEFAULT_DATA_CONTENT_TYPE || isJsonContentType(contentType)) return;
  throw decodeFailed(
    `datacontenttype ${JSON.stringify(contentType)} is not JSON. Tidings decodes only application/json and ` +
      '*/*+json data; publish the data as JSON, or read this topic without the Tidings codec.',
    context,
  );
}

function parseSchemaVersion(text: string, context: DecodeContext): number {
  if (!positiveDecimal.test(text)) return badSchemaVersion(text, context);
  return checkSchemaVersion(Number(text), context);
}

function checkSchemaVersion(version: number, context: DecodeContext): number {
  if (Number.isInteger(version) && version >= 1 && version <= INT32_MAX) return version;
  return badSchemaVersion(version, context);
}

function badSchemaVersion(version: unknown, context: DecodeContext): never {
  throw decodeFailed(
    `schemaversion ${describeValue(version)} is not a positive integer. It must be the version of the event ` +
      "type's schema (1, 2, ...); fix the producer.",
    context,
  );
}

function parseJson(value: Uint8Array, what: string, context: DecodeContext): unknown {
  let text: string;
  try {
    text = decoder.decode(value);
  } catch (cause) {
    throw decodeFailed(`${what} is not valid UTF-8. The producer must write UTF-8 JSON.`, context, cause);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (cause) {
    throw decodeFailed(
      `${what} is not valid JSON (${describe(cause)}). The producer must write UTF-8 JSON.`,
      context,
      cause,
    );
  }
}

function isExtensionValue(value: unknown): value is ExtensionValue {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return true;
    case 'number':
      return Number.isInteger(value) && value >= INT32_MIN && value <= INT32_MAX;
    default:
      return false;
  }
}

function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') {
    return JSON.stringify(value);
  }
  return typeof value;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The size of an encoded envelope in bytes, as transports and size limits count it: the value's bytes plus the
 * UTF-8 bytes of every header name and value. Framing overhead (separators, lengths) is not included.
 */
export function encodedSize(encoded: EncodedEnvelope): number {
  let size = encoded.value.byteLength;
  for (const name of Object.keys(encoded.headers)) {
    size += Buffer.byteLength(name, 'utf8') + Buffer.byteLength(encoded.headers[name] ?? '', 'utf8');
  }
  return size;
}
