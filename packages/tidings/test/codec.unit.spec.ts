import { describe, it, expect } from 'vitest';
import { CloudEvent, HTTP } from 'cloudevents';
import type { Message } from 'cloudevents';
import { decodeEnvelope, encodedSize, encodeEnvelope } from '../src/core/codec.js';
import type { EncodedEnvelope, WireMode } from '../src/core/codec.js';
import type { Envelope } from '../src/core/envelope.js';
import { isTidingsError } from '../src/core/errors.js';
import type { ErrorCode, TidingsError } from '../src/core/errors.js';

const utf8 = new TextEncoder();
const text = new TextDecoder();
const modes: readonly WireMode[] = ['binary', 'structured'];

interface OrderPlaced {
  orderId: string;
  total: number;
  lines: { sku: string; name: string; qty: number }[];
  note: string | null;
}

/** Every attribute Tidings knows, set; data with non-ASCII text to catch byte/char confusion. */
const full = {
  id: '0190a6f0-8b2c-7d4e-9f01-23456789abcd',
  source: 'tidings://shop',
  type: 'OrderPlaced',
  specversion: '1.0' as const,
  time: '2024-05-01T12:34:56.789Z',
  subject: 'order-42',
  datacontenttype: 'application/json',
  dataschema: 'https://schemas.example.com/OrderPlaced/3.json',
  traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
  tracestate: 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7',
  correlationid: '0190a6f0-0000-7000-8000-000000000001',
  causationid: '0190a6f0-0000-7000-8000-000000000002',
  partitionkey: 'order-42',
  schemaversion: 3,
  data: {
    orderId: 'order-42',
    total: 99.5,
    lines: [{ sku: 'CAFE-1', name: 'Café crème ☕ 😀', qty: 2 }],
    note: null,
  },
} satisfies Envelope<OrderPlaced>;

/** Only what every event has. */
const minimal: Envelope = {
  id: 'evt-1',
  source: 'tidings://billing',
  type: 'InvoiceSent',
  specversion: '1.0',
  time: '2024-05-01T12:00:00Z',
  datacontenttype: 'application/json',
  data: undefined,
};

/** How a transport hands the SDK a received record: text body, string headers. */
function sdkEvent(encoded: EncodedEnvelope): CloudEvent<unknown> {
  const received = HTTP.toEvent({ headers: { ...encoded.headers }, body: text.decode(encoded.value) });
  if (Array.isArray(received) || !(received instanceof CloudEvent))
    throw new Error('expected a single CloudEvent');
  return received as CloudEvent<unknown>;
}

/** How a transport carries what the SDK serialised: header values as strings, the body as bytes. */
function fromSdkMessage(message: Message): { headers: Record<string, string>; value: Uint8Array } {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(message.headers)) {
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : String(value);
  }
  const body = message.body;
  let value: Uint8Array;
  if (body === undefined || body === null) value = new Uint8Array(0);
  else if (body instanceof Uint8Array) value = new Uint8Array(body);
  else if (typeof body === 'string') value = utf8.encode(body);
  else value = utf8.encode(JSON.stringify(body));
  return { headers, value };
}

function decodeError(record: { headers: Record<string, string>; value: Uint8Array }): TidingsError {
  try {
    decodeEnvelope(record);
  } catch (error) {
    expect(isTidingsError(error, 'DECODE_FAILED')).toBe(true);
    return error as TidingsError;
  }
  throw new Error('expected decodeEnvelope to throw');
}

function encodeError(envelope: Envelope, mode: WireMode, code: ErrorCode): TidingsError {
  try {
    encodeEnvelope(envelope, mode);
  } catch (error) {
    expect(isTidingsError(error, code)).toBe(true);
    return error as TidingsError;
  }
  throw new Error('expected encodeEnvelope to throw');
}

/** A valid binary record whose headers the caller may override (undefined removes one). */
function binaryRecord(
  overrides: Record<string, string | undefined> = {},
  body = '{"ok":true}',
): { headers: Record<string, string>; value: Uint8Array } {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'ce-specversion': '1.0',
    'ce-id': 'evt-9',
    'ce-source': 'urn:test',
    'ce-type': 'Tested',
    'ce-time': '2024-05-01T12:00:00Z',
  };
  for (const [name, value] of Object.entries(overrides)) {
    if (value === undefined) delete headers[name];
    else headers[name] = value;
  }
  return { headers, value: utf8.encode(body) };
}

/** A valid structured record whose members the caller may override (undefined removes one). */
function structuredRecord(overrides: Record<string, unknown> = {}): {
  headers: Record<string, string>;
  value: Uint8Array;
} {
  const event: Record<string, unknown> = {
    specversion: '1.0',
    id: 'evt-9',
    source: 'urn:test',
    type: 'Tested',
    time: '2024-05-01T12:00:00Z',
    data: { ok: true },
  };
  for (const [name, value] of Object.entries(overrides)) {
    if (value === undefined) delete event[name];
    else event[name] = value;
  }
  return {
    headers: { 'content-type': 'application/cloudevents+json; charset=utf-8' },
    value: utf8.encode(JSON.stringify(event)),
  };
}

describe('encodeEnvelope: what Tidings writes, the cloudevents SDK reads', () => {
  it('binary mode: HTTP.toEvent parses it, validate() passes, every attribute and extension is intact', () => {
    const encoded = encodeEnvelope({ ...full, extensions: { tenant: 'acme', region: 'eu1' } }, 'binary');

    const ce = sdkEvent(encoded);

    expect(ce.validate()).toBe(true);
    expect(ce.specversion).toBe('1.0');
    expect(ce.id).toBe(full.id);
    expect(ce.source).toBe(full.source);
    expect(ce.type).toBe(full.type);
    expect(ce.time).toBe(full.time);
    expect(ce.subject).toBe(full.subject);
    expect(ce.datacontenttype).toBe('application/json');
    expect(ce.dataschema).toBe(full.dataschema);
    expect(ce['traceparent']).toBe(full.traceparent);
    expect(ce['tracestate']).toBe(full.tracestate);
    expect(ce['correlationid']).toBe(full.correlationid);
    expect(ce['causationid']).toBe(full.causationid);
    expect(ce['partitionkey']).toBe(full.partitionkey);
    // The binary binding carries no types: the SDK reads every extension header as a string.
    expect(ce['schemaversion']).toBe('3');
    expect(ce['tenant']).toBe('acme');
    expect(ce['region']).toBe('eu1');
    expect(ce.data).toEqual(full.data);
  });

  it('structured mode: HTTP.toEvent parses it, validate() passes, every attribute and extension is intact', () => {
    const encoded = encodeEnvelope(
      { ...full, extensions: { tenant: 'acme', priority: 7, replayed: false } },
      'structured',
    );

    expect(encoded.headers).toEqual({ 'content-type': 'application/cloudevents+json; charset=utf-8' });
    const ce = sdkEvent(encoded);

    expect(ce.validate()).toBe(true);
    expect(ce.specversion).toBe('1.0');
    expect(ce.id).toBe(full.id);
    expect(ce.source).toBe(full.source);
    expect(ce.type).toBe(full.type);
    expect(ce.time).toBe(full.time);
    expect(ce.subject).toBe(full.subject);
    expect(ce.datacontenttype).toBe('application/json');
    expect(ce.dataschema).toBe(full.dataschema);
    expect(ce['traceparent']).toBe(full.traceparent);
    expect(ce['tracestate']).toBe(full.tracestate);
    expect(ce['correlationid']).toBe(full.correlationid);
    expect(ce['causationid']).toBe(full.causationid);
    expect(ce['partitionkey']).toBe(full.partitionkey);
    expect(ce['schemaversion']).toBe(3);
    expect(ce['tenant']).toBe('acme');
    expect(ce['priority']).toBe(7);
    expect(ce['replayed']).toBe(false);
    expect(ce.data).toEqual(full.data);
  });

  it.each(modes)('%s mode: an event without optional attributes or data is a valid CloudEvent', (mode) => {
    const ce = sdkEvent(encodeEnvelope(minimal, mode));

    expect(ce.validate()).toBe(true);
    expect(ce.id).toBe(minimal.id);
    expect(ce.type).toBe(minimal.type);
    expect(ce.subject).toBeUndefined();
    expect(ce['schemaversion']).toBeUndefined();
  });

  it('binary mode writes canonical lower-case HTTP-binding header names and JSON data as the value', () => {
    const encoded = encodeEnvelope({ ...full, extensions: { tenant: 'acme' } }, 'binary');

    expect(encoded.headers).toEqual({
      'content-type': 'application/json',
      'ce-specversion': '1.0',
      'ce-id': full.id,
      'ce-source': full.source,
      'ce-type': full.type,
      'ce-time': full.time,
      'ce-subject': full.subject,
      'ce-dataschema': full.dataschema,
      'ce-traceparent': full.traceparent,
      'ce-tracestate': full.tracestate,
      'ce-correlationid': full.correlationid,
      'ce-causationid': full.causationid,
      'ce-partitionkey': full.partitionkey,
      'ce-schemaversion': '3',
      'ce-tenant': 'acme',
    });
    expect(JSON.parse(text.decode(encoded.value))).toEqual(full.data);
  });

  it('binary mode: data undefined is an empty value; datacontenttype defaults to application/json', () => {
    const { datacontenttype: _omitted, ...withoutContentType } = minimal;

    const encoded = encodeEnvelope(withoutContentType, 'binary');

    expect(encoded.value.byteLength).toBe(0);
    expect(encoded.headers['content-type']).toBe('application/json');
  });
});

describe('decodeEnvelope: what the cloudevents SDK writes, Tidings reads', () => {
  const sdkAttributes = {
    id: full.id,
    source: full.source,
    type: full.type,
    time: full.time,
    subject: 'order-42',
    datacontenttype: 'application/json',
    dataschema: 'https://schemas.example.com/OrderPlaced/3.json',
    traceparent: full.traceparent,
    tracestate: full.tracestate,
    correlationid: full.correlationid,
    causationid: full.causationid,
    partitionkey: full.partitionkey,
    tenant: 'acme',
    data: full.data,
  };

  it('HTTP.binary: attributes, Tidings extensions, unknown extensions and data are intact', () => {
    // The SDK writes extension header values with their JS type (a number here), so send it as a string, the
    // way an HTTP client or broker would.
    const message = HTTP.binary(new CloudEvent({ ...sdkAttributes, schemaversion: 3 }));

    const envelope = decodeEnvelope(fromSdkMessage(message));

    expect(envelope).toStrictEqual({ ...full, extensions: { tenant: 'acme' } });
  });

  it('HTTP.structured: attributes, Tidings extensions, unknown extensions (typed) and data are intact', () => {
    const message = HTTP.structured(
      new CloudEvent({ ...sdkAttributes, schemaversion: 3, priority: 7, replayed: true }),
    );

    const envelope = decodeEnvelope(fromSdkMessage(message));

    expect(envelope).toStrictEqual({ ...full, extensions: { tenant: 'acme', priority: 7, replayed: true } });
  });

  it("HTTP.binary with the SDK's defaults: its content-type becomes datacontenttype; time is kept", () => {
    const event = new CloudEvent({ source: 'urn:sdk', type: 'Pinged', data: { n: 1 } });

    const envelope = decodeEnvelope(fromSdkMessage(HTTP.binary(event)));

    expect(envelope).toStrictEqual({
      id: event.id,
      source: 'urn:sdk',
      type: 'Pinged',
      specversion: '1.0',
      time: event.time,
      datacontenttype: 'application/json; charset=utf-8',
      data: { n: 1 },
    });
  });

  it.each([
    ['binary', HTTP.binary],
    ['structured', HTTP.structured],
  ] as const)('HTTP.%s without data decodes as data: undefined', (_mode, serialise) => {
    const event = new CloudEvent({ source: 'urn:sdk', type: 'Pinged' });

    const envelope = decodeEnvelope(fromSdkMessage(serialise(event)));

    expect(envelope.data).toBeUndefined();
    expect(envelope.id).toBe(event.id);
    expect(envelope.time).toBe(event.time);
  });
});

describe('round trip: decodeEnvelope(encodeEnvelope(e)) equals e', () => {
  it.each(modes)('%s mode: every attribute, with string extensions', (mode) => {
    const envelope: Envelope = { ...full, extensions: { tenant: 'acme', region: 'eu1' } };

    expect(decodeEnvelope(encodeEnvelope(envelope, mode))).toStrictEqual(envelope);
  });

  it('structured mode: number and boolean extensions keep their JSON types', () => {
    const envelope: Envelope = { ...full, extensions: { tenant: 'acme', priority: -7, replayed: true } };

    expect(decodeEnvelope(encodeEnvelope(envelope, 'structured'))).toStrictEqual(envelope);
  });

  it('binary mode: number and boolean extensions come back as strings (the binding carries no types)', () => {
    const envelope: Envelope = { ...minimal, extensions: { priority: 7, replayed: true } };

    expect(decodeEnvelope(encodeEnvelope(envelope, 'binary')).extensions).toStrictEqual({
      priority: '7',
      replayed: 'true',
    });
  });

  it.each(modes)('%s mode: only the required attributes, no data', (mode) => {
    expect(decodeEnvelope(encodeEnvelope(minimal, mode))).toStrictEqual(minimal);
  });

  it.each(modes)('%s mode: an absent datacontenttype decodes as application/json', (mode) => {
    const { datacontenttype: _omitted, ...withoutContentType } = minimal;

    expect(decodeEnvelope(encodeEnvelope(withoutContentType, mode))).toStrictEqual(minimal);
  });

  it.each(
    modes.flatMap((mode) =>
      [null, 0, 42.5, false, '', 'plain text', [], [1, 'two', null], { nested: { deep: ['x'] } }, '😀 ü'].map(
        (data) => [mode, JSON.stringify(data), data] as const,
      ),
    ),
  )('%s mode: data %s', (mode, _label, data) => {
    const envelope: Envelope = { ...minimal, data };

    expect(decodeEnvelope(encodeEnvelope(envelope, mode))).toStrictEqual(envelope);
  });

  it.each(modes)('%s mode: a +json datacontenttype and an offset time are kept as written', (mode) => {
    const envelope: Envelope = {
      ...minimal,
      datacontenttype: 'application/vnd.acme.invoice+json; charset=utf-8',
      time: '2024-05-01T14:00:00.123456+02:00',
      data: { amount: 10 },
    };

    expect(decodeEnvelope(encodeEnvelope(envelope, mode))).toStrictEqual(envelope);
  });
});

describe('decodeEnvelope: failures throw DECODE_FAILED, not retryable, saying what is wrong', () => {
  it('a record that is neither binary nor structured', () => {
    const error = decodeError({ headers: { 'content-type': 'application/json' }, value: utf8.encode('{}') });

    expect(error.retryable).toBe(false);
    expect(error.message).toMatch(/not a CloudEvent.*ce-specversion.*application\/cloudevents\+json/);
  });

  it('a record without any headers', () => {
    expect(decodeError({ headers: {}, value: new Uint8Array(0) }).message).toMatch(/content-type is missing/);
  });

  it('a batch', () => {
    const error = decodeError({
      headers: { 'content-type': 'application/cloudevents-batch+json' },
      value: utf8.encode('[]'),
    });

    expect(error.message).toMatch(/batch.*one event per record/);
  });

  it.each(['id', 'source', 'type'])('binary mode: ce-%s missing', (name) => {
    const error = decodeError(binaryRecord({ [`ce-${name}`]: undefined }));

    expect(error.retryable).toBe(false);
    expect(error.message).toContain(`"${name}" is missing`);
    expect(error.message).toMatch(/fix the producer/);
  });

  it.each(['binary', 'structured'] as const)(
    '%s mode: an event without time (optional in CloudEvents) decodes',
    (mode) => {
      const record =
        mode === 'binary' ? binaryRecord({ 'ce-time': undefined }) : structuredRecord({ time: undefined });
      expect(decodeEnvelope(record).time).toBeUndefined();
    },
  );

  it('binary mode: ce-id empty', () => {
    expect(decodeError(binaryRecord({ 'ce-id': '' })).message).toContain('"id" is missing or empty');
  });

  it.each(['specversion', 'id', 'source', 'type'])('structured mode: %s missing', (name) => {
    const error = decodeError(structuredRecord({ [name]: undefined }));

    expect(error.retryable).toBe(false);
    expect(error.message).toContain(`"${name}" is missing`);
    expect(error.message).toMatch(/structured mode/);
  });

  it('structured mode: an attribute of the wrong JSON type', () => {
    const error = decodeError(structuredRecord({ id: 42 }));

    expect(error.message).toMatch(/"id" is 42, not a string/);
  });

  it.each([
    ['binary', binaryRecord({ 'ce-specversion': '0.3' })],
    ['structured', structuredRecord({ specversion: '0.3' })],
  ])('%s mode: specversion other than 1.0', (_mode, record) => {
    const error = decodeError(record);

    expect(error.message).toMatch(/specversion is "0\.3".*CloudEvents 1\.0 only/);
  });

  it('binary mode: invalid JSON in the value, naming where', () => {
    const error = decodeError(binaryRecord({}, '{"ok":'));

    expect(error.message).toMatch(/binary-mode value \(the event data\) is not valid JSON/);
    expect(error.message).toContain('id "evt-9", type "Tested"');
    expect(error.details.eventId).toBe('evt-9');
    expect(error.details.eventType).toBe('Tested');
    expect(error.cause).toBeInstanceOf(SyntaxError);
  });

  it('structured mode: invalid JSON in the value, naming where', () => {
    const error = decodeError({
      headers: { 'content-type': 'application/cloudevents+json' },
      value: utf8.encode('{"specversion":"1.0",'),
    });

    expect(error.message).toMatch(/structured-mode value \(the whole event\) is not valid JSON/);
    expect(error.cause).toBeInstanceOf(SyntaxError);
  });

  it('structured mode: a value that is JSON but not an object', () => {
    const error = decodeError({
      headers: { 'content-type': 'application/cloudevents+json' },
      value: utf8.encode('[{"id":"1"}]'),
    });

    expect(error.message).toMatch(/is JSON array, not an object/);
  });

  it('a value that is not UTF-8', () => {
    const record = binaryRecord();

    const error = decodeError({ ...record, value: new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]) });

    expect(error.message).toMatch(/not valid UTF-8/);
  });

  it.each([
    ['binary', binaryRecord({ 'content-type': 'text/plain' }, 'hello')],
    ['structured', structuredRecord({ datacontenttype: 'application/xml', data: '<a/>' })],
  ])('%s mode: a non-JSON datacontenttype', (_mode, record) => {
    const error = decodeError(record);

    expect(error.message).toMatch(/datacontenttype ".*" is not JSON/);
    expect(error.message).toContain('only application/json and */*+json');
  });

  it('structured mode: data_base64', () => {
    const error = decodeError(structuredRecord({ data: undefined, data_base64: 'aGVsbG8=' }));

    expect(error.message).toMatch(/data_base64.*does not support.*JSON in the "data" member/);
  });

  it.each(['0', '-1', '1.5', 'abc', '007', '', '99999999999'])('binary mode: schemaversion %j', (version) => {
    const error = decodeError(binaryRecord({ 'ce-schemaversion': version }));

    expect(error.message).toMatch(/schemaversion .* is not a positive integer/);
  });

  it.each([0, -2, 1.5, 'x', true, { v: 1 }])('structured mode: schemaversion %j', (version) => {
    const error = decodeError(structuredRecord({ schemaversion: version }));

    expect(error.message).toMatch(/schemaversion .* is not a positive integer/);
  });

  it('structured mode: schemaversion as a decimal string is accepted', () => {
    expect(decodeEnvelope(structuredRecord({ schemaversion: '12' })).schemaversion).toBe(12);
  });

  it.each(['yesterday', '2024-13-01T00:00:00Z', '2024-05-01 12:00:00', '2024-05-01T12:00:00', '1714564800'])(
    'bad time %j',
    (time) => {
      for (const record of [binaryRecord({ 'ce-time': time }), structuredRecord({ time })]) {
        expect(decodeError(record).message).toMatch(/time ".*" is not an RFC 3339 timestamp/);
      }
    },
  );

  it('structured mode: an extension whose value is not a CloudEvents type', () => {
    const error = decodeError(structuredRecord({ tenant: { name: 'acme' } }));

    expect(error.message).toMatch(/extension attribute "tenant" has the value an object/);
  });

  it('the same header twice in different case with different values', () => {
    const error = decodeError(binaryRecord({ 'CE-ID': 'other' }));

    expect(error.message).toMatch(/header "ce-id" appears twice/);
  });
});

describe('decodeEnvelope: header names are matched case-insensitively', () => {
  it('binary mode with every header name in another case', () => {
    const encoded = encodeEnvelope({ ...full, extensions: { tenant: 'acme' } }, 'binary');
    const shouted: Record<string, string> = {};
    for (const [name, value] of Object.entries(encoded.headers)) {
      shouted[name.replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase())] = value;
    }
    expect(shouted['Ce-Id']).toBe(full.id);

    expect(decodeEnvelope({ headers: shouted, value: encoded.value })).toStrictEqual({
      ...full,
      extensions: { tenant: 'acme' },
    });
  });

  it('structured mode with Content-Type and an upper-case media type', () => {
    const encoded = encodeEnvelope(full, 'structured');

    const envelope = decodeEnvelope({
      headers: { 'Content-Type': 'Application/CloudEvents+JSON; charset=UTF-8' },
      value: encoded.value,
    });

    expect(envelope).toStrictEqual(full);
  });

  it('the same header twice in different case with the same value is fine', () => {
    expect(decodeEnvelope(binaryRecord({ 'CE-ID': 'evt-9' })).id).toBe('evt-9');
  });
});

describe('decodeEnvelope: what is and is not an extension', () => {
  it('binary mode ignores non-ce headers and ce- headers that are not valid attribute names', () => {
    const envelope = decodeEnvelope(
      binaryRecord({
        'x-request-id': 'r1',
        'ce-tenant': 'acme',
        'ce-bad_name': 'x',
        'ce-averyveryverylongextensionname': 'x',
        'ce-data': 'x',
        'ce-datacontenttype': 'text/plain',
      }),
    );

    expect(envelope.extensions).toStrictEqual({ tenant: 'acme' });
    expect(envelope.datacontenttype).toBe('application/json');
  });

  it('structured mode ignores ce- headers, null members and members that are not attribute names', () => {
    const record = structuredRecord({ tenant: 'acme', gone: null, $schema: 'x', Upper: 'x' });

    const envelope = decodeEnvelope({ ...record, headers: { ...record.headers, 'ce-id': 'not-this-one' } });

    expect(envelope.id).toBe('evt-9');
    expect(envelope.extensions).toStrictEqual({ tenant: 'acme' });
  });

  it('no extensions means no extensions object', () => {
    expect(decodeEnvelope(binaryRecord())).not.toHaveProperty('extensions');
    expect(decodeEnvelope(structuredRecord())).not.toHaveProperty('extensions');
  });
});

describe('encodeEnvelope: invalid envelopes throw at encode, before anything is written', () => {
  it.each([['Tenant'], ['my-ext'], ['tenant_id'], [''], ['a'.repeat(21)]])(
    'extension name %j is rejected with INVALID_CONFIG',
    (name) => {
      for (const mode of modes) {
        const error = encodeError({ ...minimal, extensions: { [name]: 'x' } }, mode, 'INVALID_CONFIG');

        expect(error.message).toMatch(/is not a valid CloudEvents attribute name.*1 to 20 lower-case/);
      }
    },
  );

  it('a 20-character extension name is accepted', () => {
    const name = 'a'.repeat(20);

    expect(encodeEnvelope({ ...minimal, extensions: { [name]: 'x' } }, 'binary').headers[`ce-${name}`]).toBe(
      'x',
    );
  });

  it.each(['subject', 'traceparent', 'schemaversion', 'data', 'id'])(
    'an extension named like an attribute (%s) is rejected',
    (name) => {
      const error = encodeError({ ...minimal, extensions: { [name]: 'x' } }, 'structured', 'INVALID_CONFIG');

      expect(error.message).toMatch(/has the name of a CloudEvents or Tidings attribute/);
    },
  );

  it.each([1.5, 2 ** 31, Number.NaN])(
    'an extension value %s that is not a 32-bit integer is rejected',
    (value) => {
      const error = encodeError({ ...minimal, extensions: { score: value } }, 'binary', 'INVALID_CONFIG');

      expect(error.message).toMatch(/must be a string, a boolean or a 32-bit integer/);
    },
  );

  it.each([0, -1, 1.5])('schemaversion %s is rejected', (schemaversion) => {
    const error = encodeError({ ...minimal, schemaversion }, 'binary', 'INVALID_CONFIG');

    expect(error.message).toMatch(/schemaversion .* is not a positive integer/);
  });

  it('a non-JSON datacontenttype is rejected', () => {
    const error = encodeError({ ...minimal, datacontenttype: 'text/plain' }, 'binary', 'INVALID_CONFIG');

    expect(error.message).toMatch(/datacontenttype "text\/plain" is not JSON/);
  });

  it.each(modes)('%s mode: data that JSON cannot serialise is VALIDATION_FAILED', (mode) => {
    const error = encodeError({ ...minimal, data: { amount: 10n } }, mode, 'VALIDATION_FAILED');

    expect(error.message).toMatch(/InvoiceSent evt-1: its data is not JSON-serialisable/);
    expect(error.cause).toBeInstanceOf(TypeError);
  });
});

describe('encodedSize', () => {
  it('counts the value bytes plus the UTF-8 bytes of every header name and value', () => {
    const encoded: EncodedEnvelope = {
      headers: { 'ce-id': 'ab', 'ce-subject': 'café' },
      value: utf8.encode('{}'),
    };

    // 'ce-id' 5 + 'ab' 2 + 'ce-subject' 10 + 'café' 5 (é is 2 bytes) + '{}' 2
    expect(encodedSize(encoded)).toBe(24);
  });

  it.each(modes)('%s mode: equals the bytes actually encoded', (mode) => {
    const encoded = encodeEnvelope({ ...full, extensions: { tenant: 'acmé' } }, mode);
    let expected = encoded.value.byteLength;
    for (const [name, value] of Object.entries(encoded.headers)) {
      expected += utf8.encode(name).byteLength + utf8.encode(value).byteLength;
    }

    expect(encodedSize(encoded)).toBe(expected);
    expect(encodedSize(encoded)).toBeGreaterThan(encoded.value.byteLength);
  });

  it('an empty binary value with headers only', () => {
    const encoded = encodeEnvelope(minimal, 'binary');

    expect(encoded.value.byteLength).toBe(0);
    expect(encodedSize(encoded)).toBe(
      Object.entries(encoded.headers).reduce((sum, [name, value]) => sum + name.length + value.length, 0),
    );
  });
});
