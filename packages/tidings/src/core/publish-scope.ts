/**
 * Guarded calls into an {@link Instrumentation}'s publish seam, for the callers that must never fail because of it:
 * the bus, the transactional outbox (at enqueue) and the outbox relay. Whatever the instrumentation throws is
 * logged as a warning and ignored: the event is stored or published as if there were no instrumentation.
 */
import type { Envelope } from './envelope.js';
import type { Instrumentation, PublishInfo, PublishOutcome, PublishScope } from './instrumentation.js';
import type { Logger } from './logger.js';

/** What a publish scope is opened with besides the envelope's own fields. */
export type PublishSite = Pick<PublishInfo, 'service' | 'operation' | 'system' | 'topic' | 'key'> & {
  readonly relayed?: true;
};

/**
 * The {@link PublishInfo} of `envelope` published (or stored, or relayed) at `site`: type, id, correlation,
 * causation and trace context come from the envelope (its correlation id defaults to its id).
 */
export function publishInfoOf(envelope: Envelope, site: PublishSite): PublishInfo {
  return {
    ...site,
    type: envelope.type,
    id: envelope.id,
    correlationId: envelope.correlationid ?? envelope.id,
    causationId: envelope.causationid,
    traceparent: envelope.traceparent,
    tracestate: envelope.tracestate,
  };
}

/**
 * Calls `instrumentation.publish(info)`. Returns its scope, or `undefined` when it has no `publish`, returned none,
 * or threw (logged on `logger` as a warning).
 */
export function openPublishScope(
  instrumentation: Instrumentation,
  info: PublishInfo,
  logger: Logger,
): PublishScope | undefined {
  try {
    return instrumentation.publish?.(info);
  } catch (error) {
    logger.warn(
      { service: info.service, eventId: info.id, eventType: info.type, err: error },
      `the instrumentation failed to start the ${info.operation} of ${info.type}; ignored`,
    );
    return undefined;
  }
}

/**
 * Writes the scope's trace context into `envelope` when it has one: `traceparent` replaced, `tracestate` replaced
 * or removed. Leaves the envelope alone otherwise (a carried `traceparent` then travels unchanged).
 */
export function applyTraceContext(envelope: Envelope, scope: PublishScope | undefined): void {
  if (scope?.traceparent === undefined) return;
  envelope.traceparent = scope.traceparent;
  if (scope.tracestate === undefined) delete envelope.tracestate;
  else envelope.tracestate = scope.tracestate;
}

/** Ends a publish scope (a no-op without one); anything `end` throws is logged as a warning and ignored. */
export function endPublishScope(
  scope: PublishScope | undefined,
  outcome: PublishOutcome,
  logger: Logger,
  service: string,
): void {
  if (scope === undefined) return;
  try {
    scope.end(outcome);
  } catch (error) {
    logger.warn({ service, err: error }, 'the instrumentation failed to end a publish; ignored');
  }
}
