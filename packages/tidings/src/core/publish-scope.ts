/**
 * Guarded calls into an {@link Instrumentation}'s publish seam, for the callers that must never fail because of it:
 * the bus, the transactional outbox (at enqueue) and the outbox relay. Whatever the instrumentation throws is
 * logged as a warning and ignored: the event is stored or published as if there were no instrumentation.
 */
import type { Envelope } from './envelope.js';
import type { Instrumentation, PublishInfo, PublishOutcome, PublishScope } from './instrumentation.js';
import type { Logger } from './logger.js';

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
