/**
 * OpenTelemetry SDK set-up for the tracing and metrics tests: an in-memory span exporter, a metric reader that
 * collects on demand, a context manager, and a logger that keeps what it was given.
 */
import { context } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { MeterProvider, MetricReader, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
} from '@opentelemetry/sdk-trace-base';
import type { Logger } from 'tidings';

/** Registers the AsyncLocalStorage context manager once (spans made in a handler descend from its span). */
export function useContextManager(): void {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
}

/** A tracer provider whose finished spans can be read back. */
export function createTracing(): { provider: BasicTracerProvider; exporter: InMemorySpanExporter } {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  return { provider, exporter };
}

/** A reader that collects when asked. */
class OnDemandReader extends MetricReader {
  protected onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
  protected onShutdown(): Promise<void> {
    return Promise.resolve();
  }
}

/** A meter provider and a function returning each metric's data points, by metric name. */
export function createMetrics(): {
  provider: MeterProvider;
  collect(): Promise<Map<string, Array<{ attributes: Record<string, unknown>; value: unknown }>>>;
} {
  const reader = new OnDemandReader();
  const provider = new MeterProvider({ readers: [reader] });
  return {
    provider,
    async collect() {
      const { resourceMetrics } = (await reader.collect()) as { resourceMetrics: ResourceMetrics };
      const out = new Map<string, Array<{ attributes: Record<string, unknown>; value: unknown }>>();
      for (const scope of resourceMetrics.scopeMetrics)
        for (const metric of scope.metrics)
          out.set(
            metric.descriptor.name,
            metric.dataPoints.map((p) => ({ attributes: p.attributes, value: p.value })),
          );
      return out;
    },
  };
}

/** Sums a counter's data points matching `filter`. */
export function sum(
  points: Array<{ attributes: Record<string, unknown>; value: unknown }> | undefined,
  filter: Record<string, unknown> = {},
): number {
  return (points ?? [])
    .filter((p) => Object.entries(filter).every(([k, v]) => p.attributes[k] === v))
    .reduce((total, p) => total + (p.value as number), 0);
}

/** A logger that records each line with its bound fields. */
export function createCapturingLogger(): {
  logger: Logger;
  lines: Array<{ level: string; message: string; fields: Record<string, unknown> }>;
} {
  const lines: Array<{ level: string; message: string; fields: Record<string, unknown> }> = [];
  const make = (bindings: Record<string, unknown>): Logger => {
    const write = (level: string) => (fields: Record<string, unknown>, message: string) =>
      lines.push({ level, message, fields: { ...bindings, ...fields } });
    return {
      debug: write('debug'),
      info: write('info'),
      warn: write('warn'),
      error: write('error'),
      child: (more) => make({ ...bindings, ...more }),
    };
  };
  return { logger: make({}), lines };
}

/** A finished span as JSON, for children that report spans to their parent test. */
export function spanJson(span: ReadableSpan): SpanJson {
  return {
    name: span.name,
    kind: span.kind,
    traceId: span.spanContext().traceId,
    spanId: span.spanContext().spanId,
    parentSpanId: span.parentSpanContext?.spanId,
    attributes: span.attributes,
    links: span.links.map((l) => ({ traceId: l.context.traceId, spanId: l.context.spanId })),
  };
}

export interface SpanJson {
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
  attributes: Record<string, unknown>;
  links: Array<{ traceId: string; spanId: string }>;
}
