/**
 * `tidings/otel`: OpenTelemetry tracing and metrics for Tidings, built on `@opentelemetry/api` only (an optional
 * peer dependency). Pass `createOtelInstrumentation()` to `createBus({ instrumentation })`; register your SDK
 * (tracer and meter providers, and a context manager such as `AsyncLocalStorageContextManager`) as usual.
 * @module
 */
export {
  createOtelInstrumentation,
  instrumentationName,
  type ConsumerSpanParent,
  type OtelInstrumentationOptions,
} from './instrumentation.js';
export { metricNames, type LagSource } from './metrics.js';
export { attr as messagingAttributes, messagingSystem } from './attributes.js';
export { formatTraceparent, parseTraceparent } from './trace-context.js';
