/**
 * Building an event's envelope from a definition, validated data and publish options: the one place that decides
 * the id, key, time, correlation and trace attributes of a new event. `bus.publish` uses it, and so does the
 * transactional outbox (`tidings/outbox`), which stores the built envelope so that a relay publishes it unchanged.
 */
import type { MessageDefinition } from './define.js';
import type { Envelope } from './envelope.js';
import { ErrorCode, TidingsError } from './errors.js';
import type { PublishOptions } from './handler.js';

/** What {@link buildEnvelope} needs besides the message itself. */
export interface EnvelopeContext {
  /** The CloudEvents `source`, e.g. `tidings://orders`. */
  source: string;
  /** Now, in ms since the epoch: the event's time unless the options give one. */
  now: number;
  /** What the caller does with the event, for error messages ("was not published"). Default `published`. */
  action?: 'published' | 'enqueued';
}

/** A built envelope with the key and time it was given. */
export interface BuiltEnvelope {
  envelope: Envelope;
  key: string;
  time: Date;
}

/**
 * Builds the envelope of a new event whose `data` has already been validated against the definition's schema.
 * `id` is the event id (the caller generates it first, so validation errors can name it). The key is
 * `options.key`, else the definition's key of `data`; the correlation id defaults to the id.
 *
 * @throws {TidingsError} `VALIDATION_FAILED` when the key is empty.
 */
export function buildEnvelope(
  definition: MessageDefinition,
  id: string,
  data: unknown,
  options: Omit<PublishOptions, 'signal'>,
  context: EnvelopeContext,
): BuiltEnvelope {
  const key = options.key ?? definition.keyOf(data);
  if (typeof key !== 'string' || key.length === 0) {
    throw new TidingsError(
      ErrorCode.VALIDATION_FAILED,
      `${definition.type} was not ${context.action ?? 'published'}: its key is empty; check the definition's "key"`,
      { eventType: definition.type, retryable: false },
    );
  }
  const time = options.time ?? new Date(context.now);
  const envelope: Envelope = {
    id,
    source: context.source,
    type: definition.type,
    specversion: '1.0',
    time: time.toISOString(),
    subject: key,
    datacontenttype: 'application/json',
    correlationid: options.correlationId ?? id,
    partitionkey: key,
    schemaversion: definition.version,
    data,
    ...(options.causationId === undefined ? {} : { causationid: options.causationId }),
    ...(options.traceparent === undefined ? {} : { traceparent: options.traceparent }),
    ...(options.tracestate === undefined ? {} : { tracestate: options.tracestate }),
  };
  return { envelope, key, time };
}
