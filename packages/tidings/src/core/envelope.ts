/**
 * The Tidings envelope: CloudEvents 1.0 context attributes plus the extensions Tidings relies on. It is what a
 * handler sees as `ctx.envelope` and what travels on every transport (see `codec.ts` for the two wire modes).
 */
export interface Envelope<TData = unknown> {
  /** Unique per event (a UUIDv7 unless the publisher gave one). With `source`, identifies the event. */
  id: string;
  /** The producing service, as a URI reference (`tidings://<service>` unless configured). */
  source: string;
  /** The event or command type, e.g. `OrderPlaced`. */
  type: string;
  specversion: '1.0';
  /** When the fact happened, RFC 3339. Tidings always sets it; other CloudEvents producers may leave it out. */
  time?: string;
  /** The aggregate key: which order, account or device this event is about. */
  subject?: string;
  /** Always `application/json` for events Tidings encodes. */
  datacontenttype?: string;
  /** URI of the schema `data` adheres to, when known. */
  dataschema?: string;
  /** W3C trace context of the publishing span. */
  traceparent?: string;
  tracestate?: string;
  /** The id shared by every event of one business flow; set to the first event's id when absent. */
  correlationid?: string;
  /** The id of the event (or command) whose handling published this one. */
  causationid?: string;
  /** The key that chose the partition; equals `subject` for Tidings events. */
  partitionkey?: string;
  /** The version of the event type's schema that `data` was written with (a positive integer). */
  schemaversion?: number;
  /**
   * CloudEvents extension attributes Tidings does not define itself, keyed by attribute name. Decoding keeps every
   * unknown extension here and encoding writes them back, so events from other producers pass through intact.
   * Names must match `/^[a-z0-9]{1,20}$/` and must not be a CloudEvents or Tidings attribute name; values must be a
   * string, a boolean or a 32-bit integer. In binary mode every value travels as a string and decodes as one.
   */
  extensions?: Record<string, string | number | boolean>;
  /** The payload. */
  data: TData;
}

/** The CloudEvents extension attributes Tidings defines, in wire order. */
export const tidingsExtensions = [
  'traceparent',
  'tracestate',
  'correlationid',
  'causationid',
  'partitionkey',
  'schemaversion',
] as const;

/** Every context attribute Tidings reads or writes (required and optional), without `data`. */
export const envelopeAttributes = [
  'id',
  'source',
  'type',
  'specversion',
  'time',
  'subject',
  'datacontenttype',
  'dataschema',
  ...tidingsExtensions,
] as const;

export type EnvelopeAttribute = (typeof envelopeAttributes)[number];
