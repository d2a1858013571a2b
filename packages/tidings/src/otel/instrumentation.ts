/**
 * `createOtelInstrumentation`: OpenTelemetry tracing and metrics for a bus, through the core's instrumentation seam.
 */
import {
  context as otelContext,
  isSpanContextValid,
  metrics as otelMetrics,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Link,
  type MeterProvider,
  type Span,
  type TracerProvider,
} from '@opentelemetry/api';
import { describeError, ErrorCode, TidingsError } from '../core/errors.js';
import type {
  DeliveryInfo,
  DeliveryOutcome,
  DeliveryScope,
  Instrumentation,
  PublishInfo,
  PublishOutcome,
  PublishScope,
} from '../core/instrumentation.js';
import { attr, errorType, messagingSystem } from './attributes.js';
import { createTidingsMetrics, type LagSource, type TidingsMetrics } from './metrics.js';
import { formatTraceparent, parseTraceparent } from './trace-context.js';

/** The instrumentation scope name of the tracer and meter. */
export const instrumentationName = 'tidings';

/**
 * How a consumer span relates to the producer span of the message it processes.
 *
 * - `'child'` (default): the consumer span is a child of the producer span *and* links to it, so one trace follows
 *   an event across every service it touches, as most trace viewers show best.
 * - `'link'`: the consumer span starts a new trace and only links to the producer span, as the messaging
 *   conventions recommend when one trace per flow would grow too large (long-lived flows, big fan-out).
 */
export type ConsumerSpanParent = 'child' | 'link';

/** Options of {@link createOtelInstrumentation}. */
export interface OtelInstrumentationOptions {
  /** Where spans go. Default: the global tracer provider (`trace.getTracerProvider()`). */
  tracerProvider?: TracerProvider;
  /** Where metrics go. Default: the global meter provider (`metrics.getMeterProvider()`). */
  meterProvider?: MeterProvider;
  /** See {@link ConsumerSpanParent}. Default `'child'`. */
  consumerSpanParent?: ConsumerSpanParent;
  /** Record spans. Default true. */
  tracing?: boolean;
  /** Record metrics. Default true. */
  metrics?: boolean;
  /** Report consumer lag per group and partition as the `tidings.consumer.lag` gauge. Default: no lag gauge. */
  lag?: LagSource;
}

/** Seconds elapsed since `start` (a `performance.now()` reading). */
const secondsSince = (start: number) => (performance.now() - start) / 1000;

/**
 * Creates an instrumentation that traces and measures a bus; pass it as `createBus({ instrumentation })`.
 *
 * Tracing: each publish or send is a span of kind PRODUCER named `publish <topic>` (`send <topic>` for commands),
 * and its W3C trace context is written into the envelope's `traceparent` / `tracestate`. Its parent is the active
 * span (inside a handler: the consumer span, when a context manager is registered), else the trace context carried
 * by `ctx.publish`. Given to `createOutbox({ instrumentation })`, each enqueue is a PRODUCER span `create <topic>`
 * (`messaging.operation.type` `create`, `messaging.system` `tidings`), parented the same way, whose context is
 * stored with the event; the relay's publish of it is a PRODUCER span `publish <topic>` that is a child of (and
 * links to) that stored context, whatever span is active in the relay, and the envelope keeps the `create` span's
 * context, so consumers are children of the `create` span. Each delivery is a span of kind CONSUMER named `process <topic>`, around every attempt of the
 * handler (failed attempts are recorded as exceptions), parented as {@link ConsumerSpanParent} says and active while
 * the handler runs. Attributes follow the OpenTelemetry messaging semantic conventions (see `attr`).
 *
 * Metrics: see `metricNames`.
 *
 * Throws `INVALID_CONFIG` for a bad option.
 */
export function createOtelInstrumentation(options: OtelInstrumentationOptions = {}): Instrumentation {
  const parentMode = options.consumerSpanParent ?? 'child';
  if (parentMode !== 'child' && parentMode !== 'link') {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `createOtelInstrumentation: "consumerSpanParent" must be 'child' or 'link', got ${String(parentMode)}`,
    );
  }
  const tracer =
    options.tracing === false
      ? undefined
      : (options.tracerProvider ?? trace.getTracerProvider()).getTracer(instrumentationName);
  const metrics =
    options.metrics === false
      ? undefined
      : createTidingsMetrics(
          (options.meterProvider ?? otelMetrics.getMeterProvider()).getMeter(instrumentationName),
          options.lag,
        );

  return {
    publish: (info) => publishScope(info, tracer, metrics),
    deliver: (info) => deliveryScope(info, tracer, metrics, parentMode),
  };
}

function publishScope(
  info: PublishInfo,
  tracer: ReturnType<TracerProvider['getTracer']> | undefined,
  metrics: TidingsMetrics | undefined,
): PublishScope {
  const start = performance.now();
  const system = messagingSystem(info.system);
  const common: Attributes = {
    [attr.system]: system,
    [attr.operationName]: info.operation,
    [attr.destinationName]: info.topic,
  };
  let span: Span | undefined;
  if (tracer !== undefined) {
    let parent: Context;
    let links: Link[] | undefined;
    if (info.relayed === true) {
      // A relayed event's own (stored) context is the parent, never the span the relay loop happens to run in.
      const stored = parseTraceparent(info.traceparent, info.tracestate);
      parent = stored === undefined ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, stored);
      if (stored !== undefined) links = [{ context: stored }];
    } else {
      // Parent: the active span, else the trace context the caller carried (ctx.publish without a context manager).
      parent = otelContext.active();
      if (trace.getSpanContext(parent) === undefined) {
        const carried = parseTraceparent(info.traceparent, info.tracestate);
        if (carried !== undefined) parent = trace.setSpanContext(parent, carried);
      }
    }
    span = tracer.startSpan(
      `${info.operation} ${info.topic}`,
      {
        kind: SpanKind.PRODUCER,
        ...(links === undefined ? {} : { links }),
        attributes: {
          ...common,
          [attr.operationType]: info.operation === 'create' ? 'create' : 'send',
          [attr.messageId]: info.id,
          [attr.conversationId]: info.correlationId,
          [attr.messageType]: info.type,
          [attr.messageKey]: info.key,
          [attr.service]: info.service,
          ...(info.causationId === undefined ? {} : { [attr.causationId]: info.causationId }),
        },
      },
      parent,
    );
  }
  // Without a registered SDK the tracer is a no-op whose spans have an invalid (all-zero) context: such a context is
  // never written into the envelope, so what the publisher carried (if anything) travels unchanged.
  const found = span?.spanContext();
  const spanContext = found !== undefined && isSpanContextValid(found) ? found : undefined;
  const traceState = spanContext?.traceState?.serialize();
  return {
    traceparent: spanContext === undefined ? undefined : formatTraceparent(spanContext),
    tracestate: traceState === undefined || traceState === '' ? undefined : traceState,
    end(outcome: PublishOutcome) {
      const attributes: Attributes = { ...common, [attr.messageType]: info.type };
      // A `create` (an outbox row written) is neither published nor a failed publish: only its duration is recorded.
      const counted = info.operation !== 'create';
      if (outcome.ok) {
        if (outcome.ack !== undefined) {
          span?.setAttribute(attr.partitionId, String(outcome.ack.partition));
          span?.setAttribute(attr.offset, outcome.ack.offset);
        }
        if (counted) metrics?.published.add(1, attributes);
      } else {
        const type = errorType(outcome.error);
        attributes[attr.errorType] = type;
        span?.setAttribute(attr.errorType, type);
        recordError(span, outcome.error);
        if (counted) metrics?.publishFailed.add(1, attributes);
      }
      metrics?.publishDuration.record(secondsSince(start), attributes);
      span?.end();
    },
  };
}

function deliveryScope(
  info: DeliveryInfo,
  tracer: ReturnType<TracerProvider['getTracer']> | undefined,
  metrics: TidingsMetrics | undefined,
  parentMode: ConsumerSpanParent,
): DeliveryScope {
  const start = performance.now();
  metrics?.seenGroups.add(info.group);
  const common: Attributes = {
    [attr.system]: messagingSystem(info.system),
    [attr.operationName]: 'process',
    [attr.destinationName]: info.topic,
    [attr.consumerGroup]: info.group,
  };
  const envelope = info.envelope;
  let span: Span | undefined;
  let active: Context = ROOT_CONTEXT;
  if (tracer !== undefined) {
    const producer = parseTraceparent(envelope?.traceparent, envelope?.tracestate);
    const links: Link[] = producer === undefined ? [] : [{ context: producer }];
    const parent =
      producer !== undefined && parentMode === 'child'
        ? trace.setSpanContext(ROOT_CONTEXT, producer)
        : ROOT_CONTEXT;
    span = tracer.startSpan(
      `process ${info.topic}`,
      {
        kind: SpanKind.CONSUMER,
        links,
        attributes: {
          ...common,
          [attr.operationType]: 'process',
          [attr.partitionId]: String(info.partition),
          [attr.offset]: info.offset,
          [attr.messageKey]: info.key,
          [attr.deliveryCount]: info.deliveryCount,
          [attr.service]: info.service,
          ...(envelope === undefined
            ? {}
            : {
                [attr.messageId]: envelope.id,
                [attr.messageType]: envelope.type,
                ...(envelope.correlationid === undefined
                  ? {}
                  : { [attr.conversationId]: envelope.correlationid }),
                ...(envelope.causationid === undefined ? {} : { [attr.causationId]: envelope.causationid }),
              }),
        },
      },
      parent,
    );
    active = trace.setSpan(parent, span);
  }
  const spanContext = span?.spanContext();
  return {
    run: (fn) => (span === undefined ? fn() : otelContext.with(active, fn)),
    attemptFailed(attempt, error) {
      span?.recordException(error instanceof Error ? error : describeError(error));
      span?.addEvent('tidings.attempt_failed', {
        [attr.attempts]: attempt,
        [attr.errorType]: errorType(error),
      });
    },
    ...(spanContext === undefined
      ? {}
      : { logFields: { traceId: spanContext.traceId, spanId: spanContext.spanId } }),
    end(outcome: DeliveryOutcome) {
      const attributes: Attributes = {
        ...common,
        ...(envelope === undefined ? {} : { [attr.messageType]: envelope.type }),
      };
      countOutcome(metrics, outcome, attributes);
      if (outcome.error !== undefined && outcome.status !== 'processed') {
        attributes[attr.errorType] = errorType(outcome.error);
      }
      metrics?.processDuration.record(secondsSince(start), attributes);
      if (span !== undefined) {
        span.setAttribute(attr.outcome, outcome.status);
        span.setAttribute(attr.attempts, outcome.attempts);
        if (outcome.status === 'parked' || outcome.status === 'deadLettered') {
          if (outcome.error !== undefined) span.setAttribute(attr.errorType, errorType(outcome.error));
          span.setStatus({
            code: SpanStatusCode.ERROR,
            message:
              outcome.error === undefined
                ? outcome.status
                : `${outcome.status}: ${describeError(outcome.error)}`.slice(0, 1000),
          });
        }
        span.end();
      }
    },
  };
}

function countOutcome(
  metrics: TidingsMetrics | undefined,
  outcome: DeliveryOutcome,
  attributes: Attributes,
): void {
  if (metrics === undefined) return;
  if (outcome.attempts > 1) metrics.retried.add(outcome.attempts - 1, attributes);
  switch (outcome.status) {
    case 'processed':
      metrics.processed.add(1, attributes);
      break;
    case 'duplicate':
      metrics.duplicates.add(1, attributes);
      break;
    case 'parked':
      if (outcome.attempts > 0) metrics.failed.add(1, attributes);
      metrics.parked.add(1, attributes);
      break;
    case 'deadLettered':
      if (outcome.attempts > 0) metrics.failed.add(1, attributes);
      metrics.deadLettered.add(1, attributes);
      break;
    case 'abandoned':
      break;
  }
}

function recordError(span: Span | undefined, error: unknown): void {
  if (span === undefined) return;
  span.recordException(error instanceof Error ? error : describeError(error));
  span.setStatus({ code: SpanStatusCode.ERROR, message: describeError(error).slice(0, 1000) });
}
