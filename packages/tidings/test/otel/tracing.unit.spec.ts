/**
 * Tracing and metrics in one process, with the OpenTelemetry SDK's in-memory exporter and an on-demand metric
 * reader: three hops form one trace, spans follow the messaging semantic conventions, retries and failures are
 * recorded, log lines carry the trace id, and a bus without instrumentation leaves envelopes untouched.
 */
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import {
  ATTR_MESSAGING_CONSUMER_GROUP_NAME,
  ATTR_MESSAGING_DESTINATION_NAME,
  ATTR_MESSAGING_DESTINATION_PARTITION_ID,
  ATTR_MESSAGING_MESSAGE_CONVERSATION_ID,
  ATTR_MESSAGING_MESSAGE_ID,
  ATTR_MESSAGING_OPERATION_NAME,
  ATTR_MESSAGING_OPERATION_TYPE,
  ATTR_MESSAGING_SYSTEM,
  METRIC_MESSAGING_PROCESS_DURATION,
} from '@opentelemetry/semantic-conventions/incubating';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  createBus,
  createMemoryTransport,
  defineEvent,
  silentLogger,
  type Bus,
  type Envelope,
} from 'tidings';
import { createOtelInstrumentation, formatTraceparent, metricNames, parseTraceparent } from 'tidings/otel';
import { waitUntil } from 'tidings/testing';
import { createCapturingLogger, createMetrics, createTracing, sum, useContextManager } from './support.js';

const OrderPlaced = defineEvent('OrderPlaced', {
  schema: z.object({ orderId: z.string() }),
  key: 'orderId',
  topic: 'orders',
});
const PaymentRequested = defineEvent('PaymentRequested', {
  schema: z.object({ orderId: z.string() }),
  key: 'orderId',
  topic: 'payments',
});
const ShipmentScheduled = defineEvent('ShipmentScheduled', {
  schema: z.object({ orderId: z.string() }),
  key: 'orderId',
  topic: 'shipments',
});

beforeAll(() => useContextManager());

let bus: Bus | undefined;
afterEach(async () => {
  await bus?.close();
  bus = undefined;
});

const byName = (spans: ReadableSpan[], name: string, group?: string) => {
  const found = spans.find(
    (s) =>
      s.name === name && (group === undefined || s.attributes[ATTR_MESSAGING_CONSUMER_GROUP_NAME] === group),
  );
  if (!found) throw new Error(`no span "${name}" among ${spans.map((s) => s.name).join(', ')}`);
  return found;
};

/** Publishes OrderPlaced; billing publishes PaymentRequested; shipping publishes ShipmentScheduled; notify ends. */
async function threeHops(options: Parameters<typeof createOtelInstrumentation>[0]) {
  const transport = createMemoryTransport();
  const capture = createCapturingLogger();
  bus = createBus({
    service: 'shop',
    transport,
    logger: capture.logger,
    instrumentation: createOtelInstrumentation(options),
  });
  const seen: Envelope[] = [];
  bus.handle('billing', [OrderPlaced], async ({ data }, ctx) => {
    seen.push(ctx.envelope);
    ctx.logger.info({}, 'billing the order');
    await ctx.publish(PaymentRequested, { orderId: data.orderId });
  });
  bus.handle('shipping', [PaymentRequested], async ({ data }, ctx) => {
    seen.push(ctx.envelope);
    await ctx.publish(ShipmentScheduled, { orderId: data.orderId });
  });
  bus.handle('notify', [ShipmentScheduled], (_message, ctx) => {
    seen.push(ctx.envelope);
  });
  const receipt = await bus.publish(OrderPlaced, { orderId: 'o-1' });
  return { receipt, seen, capture };
}

describe('tidings/otel tracing in one process', () => {
  it('makes three hops one trace of producer and consumer spans, each consumer a child of its producer', async () => {
    const { provider, exporter } = createTracing();
    const { receipt, seen, capture } = await threeHops({ tracerProvider: provider, metrics: false });
    await waitUntil(() => exporter.getFinishedSpans().length === 6, { message: 'six spans' });
    const spans = exporter.getFinishedSpans();

    expect(new Set(spans.map((s) => s.spanContext().traceId)).size).toBe(1);
    const publishOrders = byName(spans, 'publish orders');
    const processOrders = byName(spans, 'process orders');
    const publishPayments = byName(spans, 'publish payments');
    const processPayments = byName(spans, 'process payments');
    const publishShipments = byName(spans, 'publish shipments');
    const processShipments = byName(spans, 'process shipments');
    const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;
    expect(parentOf(publishOrders)).toBeUndefined();
    expect(parentOf(processOrders)).toBe(publishOrders.spanContext().spanId);
    expect(parentOf(publishPayments)).toBe(processOrders.spanContext().spanId);
    expect(parentOf(processPayments)).toBe(publishPayments.spanContext().spanId);
    expect(parentOf(publishShipments)).toBe(processPayments.spanContext().spanId);
    expect(parentOf(processShipments)).toBe(publishShipments.spanContext().spanId);
    // The consumer span also links to the producer span (the conventions' creation context).
    expect(processOrders.links.map((l) => l.context.spanId)).toEqual([publishOrders.spanContext().spanId]);

    for (const span of spans.filter((s) => s.name.startsWith('publish '))) {
      expect(span.kind).toBe(SpanKind.PRODUCER);
      expect(span.attributes[ATTR_MESSAGING_OPERATION_TYPE]).toBe('send');
      expect(span.attributes[ATTR_MESSAGING_OPERATION_NAME]).toBe('publish');
    }
    for (const span of spans.filter((s) => s.name.startsWith('process '))) {
      expect(span.kind).toBe(SpanKind.CONSUMER);
      expect(span.attributes[ATTR_MESSAGING_OPERATION_TYPE]).toBe('process');
      expect(span.attributes[ATTR_MESSAGING_OPERATION_NAME]).toBe('process');
      expect(span.attributes['tidings.outcome']).toBe('processed');
    }
    expect(publishOrders.attributes).toMatchObject({
      [ATTR_MESSAGING_SYSTEM]: 'tidings',
      [ATTR_MESSAGING_DESTINATION_NAME]: 'orders',
      [ATTR_MESSAGING_MESSAGE_ID]: receipt.id,
      [ATTR_MESSAGING_MESSAGE_CONVERSATION_ID]: receipt.id,
      [ATTR_MESSAGING_DESTINATION_PARTITION_ID]: String(receipt.partition),
      'tidings.message.type': 'OrderPlaced',
      'tidings.message.key': 'o-1',
    });
    expect(processOrders.attributes).toMatchObject({
      [ATTR_MESSAGING_CONSUMER_GROUP_NAME]: 'billing',
      [ATTR_MESSAGING_DESTINATION_NAME]: 'orders',
      [ATTR_MESSAGING_DESTINATION_PARTITION_ID]: String(receipt.partition),
      [ATTR_MESSAGING_MESSAGE_ID]: receipt.id,
      'tidings.message.offset': receipt.offset,
    });

    // W3C trace context in every envelope: the producer span's; correlation carried, causation chained.
    expect(seen).toHaveLength(3);
    expect(seen[0]!.traceparent).toBe(
      `00-${publishOrders.spanContext().traceId}-${publishOrders.spanContext().spanId}-01`,
    );
    expect(seen[1]!.traceparent).toContain(publishPayments.spanContext().spanId);
    expect(seen.map((e) => e.correlationid)).toEqual([receipt.id, receipt.id, receipt.id]);
    expect(seen[2]!.causationid).toBe(seen[1]!.id);

    // The handler's log line carries the trace id and the event id.
    const line = capture.lines.find((l) => l.message === 'billing the order');
    expect(line?.fields).toMatchObject({
      traceId: publishOrders.spanContext().traceId,
      spanId: processOrders.spanContext().spanId,
      eventId: receipt.id,
      group: 'billing',
    });
  });

  it("with consumerSpanParent 'link', starts a trace per delivery that links to the producer span", async () => {
    const { provider, exporter } = createTracing();
    await threeHops({ tracerProvider: provider, metrics: false, consumerSpanParent: 'link' });
    await waitUntil(() => exporter.getFinishedSpans().length === 6);
    const spans = exporter.getFinishedSpans();
    const publishOrders = byName(spans, 'publish orders');
    const processOrders = byName(spans, 'process orders');
    expect(processOrders.parentSpanContext).toBeUndefined();
    expect(processOrders.spanContext().traceId).not.toBe(publishOrders.spanContext().traceId);
    expect(processOrders.links[0]?.context.spanId).toBe(publishOrders.spanContext().spanId);
    // The follow-up publish still descends from the consumer span that made it.
    expect(byName(spans, 'publish payments').parentSpanContext?.spanId).toBe(
      processOrders.spanContext().spanId,
    );
  });

  it('records failed attempts, then marks a dead-lettered delivery as an error, and counts every outcome', async () => {
    const { provider, exporter } = createTracing();
    const metrics = createMetrics();
    const transport = createMemoryTransport();
    bus = createBus({
      service: 'shop',
      transport,
      logger: silentLogger,
      instrumentation: createOtelInstrumentation({
        tracerProvider: provider,
        meterProvider: metrics.provider,
        lag: { transport },
      }),
    });
    let failedOnce = false;
    const consumer = bus.handle(
      'flaky',
      [OrderPlaced],
      ({ data }) => {
        if (data.orderId === 'bad') throw new Error('always fails');
        if (data.orderId === 'retry-once' && !failedOnce) {
          failedOnce = true;
          throw new Error('fails once');
        }
      },
      { retry: { maxAttempts: 3, initialDelayMs: 1, jitter: 0 } },
    );
    const receipts = [
      await bus.publish(OrderPlaced, { orderId: 'ok' }),
      await bus.publish(OrderPlaced, { orderId: 'retry-once' }),
      await bus.publish(OrderPlaced, { orderId: 'bad' }),
    ];
    await consumer.waitFor(receipts);
    await waitUntil(
      () => exporter.getFinishedSpans().filter((s) => s.name === 'process orders').length === 3,
    );

    const processSpans = exporter.getFinishedSpans().filter((s) => s.name === 'process orders');
    const bad = processSpans.find((s) => s.attributes['tidings.message.key'] === 'bad')!;
    expect(bad.status.code).toBe(SpanStatusCode.ERROR);
    expect(bad.attributes['tidings.outcome']).toBe('deadLettered');
    expect(bad.attributes['tidings.handler.attempts']).toBe(3);
    expect(bad.events.filter((e) => e.name === 'tidings.attempt_failed')).toHaveLength(3);
    expect(bad.events.filter((e) => e.name === 'exception')).toHaveLength(3);
    const once = processSpans.find((s) => s.attributes['tidings.message.key'] === 'retry-once')!;
    expect(once.attributes['tidings.outcome']).toBe('processed');
    expect(once.attributes['tidings.handler.attempts']).toBe(2);
    expect(once.status.code).toBe(SpanStatusCode.UNSET);

    const collected = await metrics.collect();
    const group = { [ATTR_MESSAGING_CONSUMER_GROUP_NAME]: 'flaky' };
    expect(sum(collected.get(metricNames.published), { [ATTR_MESSAGING_DESTINATION_NAME]: 'orders' })).toBe(
      3,
    );
    expect(sum(collected.get(metricNames.processed), group)).toBe(2);
    expect(sum(collected.get(metricNames.retried), group)).toBe(3); // 1 for retry-once, 2 for bad
    expect(sum(collected.get(metricNames.failed), group)).toBe(1);
    expect(sum(collected.get(metricNames.deadLettered), group)).toBe(1);
    expect(sum(collected.get(metricNames.parked), group)).toBe(0);
    const durations = collected.get(METRIC_MESSAGING_PROCESS_DURATION) ?? [];
    expect(durations.reduce((n, p) => n + (p.value as { count: number }).count, 0)).toBe(3);
    expect(
      durations.find((p) => p.attributes['error.type'] === 'Error')?.attributes[
        ATTR_MESSAGING_CONSUMER_GROUP_NAME
      ],
    ).toBe('flaky');
    const lag = collected.get(metricNames.lag) ?? [];
    expect(lag.length).toBeGreaterThan(0);
    expect(lag.every((p) => p.attributes[ATTR_MESSAGING_CONSUMER_GROUP_NAME] === 'flaky')).toBe(true);
    expect(lag.reduce((n, p) => n + (p.value as number), 0)).toBe(0);
    expect(new Set(lag.map((p) => p.attributes[ATTR_MESSAGING_DESTINATION_PARTITION_ID])).size).toBe(
      lag.length,
    );
  });

  it('counts parked deliveries and those that wait behind a parked key', async () => {
    const metrics = createMetrics();
    bus = createBus({
      service: 'shop',
      transport: createMemoryTransport(),
      logger: silentLogger,
      instrumentation: createOtelInstrumentation({ meterProvider: metrics.provider, tracing: false }),
    });
    const consumer = bus.handle(
      'warehouse',
      [OrderPlaced],
      ({ data }) => {
        if (data.orderId === 'poison') throw new Error('no such SKU');
      },
      { onFailure: 'park', retry: false },
    );
    const first = await bus.publish(OrderPlaced, { orderId: 'poison' });
    const second = await bus.publish(OrderPlaced, { orderId: 'poison' });
    await consumer.waitFor([first, second]);
    const collected = await metrics.collect();
    expect(sum(collected.get(metricNames.parked))).toBe(2);
    expect(sum(collected.get(metricNames.failed))).toBe(1);
  });

  it('a bus without instrumentation carries the trace context it was given and adds none', async () => {
    bus = createBus({ service: 'shop', transport: createMemoryTransport(), logger: silentLogger });
    const got: Envelope[] = [];
    const consumer = bus.handle('plain', [OrderPlaced], (_m, ctx) => void got.push(ctx.envelope));
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const receipts = [
      await bus.publish(OrderPlaced, { orderId: 'a' }),
      await bus.publish(OrderPlaced, { orderId: 'b' }, { traceparent, tracestate: 'k=v' }),
    ];
    await consumer.waitFor(receipts);
    expect(got[0]!.traceparent).toBeUndefined();
    expect(got[1]).toMatchObject({ traceparent, tracestate: 'k=v' });
  });

  it('writes no traceparent when no OpenTelemetry SDK is registered (the no-op tracer), and keeps a carried one', async () => {
    // The global tracer provider is the API's no-op here: its spans have an all-zero, invalid context.
    bus = createBus({
      service: 'shop',
      transport: createMemoryTransport(),
      logger: silentLogger,
      instrumentation: createOtelInstrumentation({ metrics: false }),
    });
    const got: Envelope[] = [];
    const consumer = bus.handle('plain', [OrderPlaced], (_m, ctx) => void got.push(ctx.envelope));
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const receipts = [
      await bus.publish(OrderPlaced, { orderId: 'a' }),
      await bus.publish(OrderPlaced, { orderId: 'b' }, { traceparent }),
    ];
    await consumer.waitFor(receipts);
    expect(got[0]!.traceparent).toBeUndefined();
    expect(got[1]!.traceparent).toBe(traceparent);
  });

  it('continues a trace carried in publish options when no span is active', async () => {
    const { provider, exporter } = createTracing();
    bus = createBus({
      service: 'shop',
      transport: createMemoryTransport(),
      logger: silentLogger,
      instrumentation: createOtelInstrumentation({ tracerProvider: provider, metrics: false }),
    });
    await bus.publish(
      OrderPlaced,
      { orderId: 'a' },
      { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
    );
    const [span] = exporter.getFinishedSpans();
    expect(span?.spanContext().traceId).toBe('0af7651916cd43dd8448eb211c80319c');
    expect(span?.parentSpanContext?.spanId).toBe('b7ad6b7169203331');
  });

  it('parses only valid W3C traceparents, and formats them back', () => {
    const valid = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const context = parseTraceparent(valid, 'congo=t61rcWkgMzE');
    expect(context).toMatchObject({
      traceId: '0af7651916cd43dd8448eb211c80319c',
      isRemote: true,
      traceFlags: 1,
    });
    expect(context?.traceState?.get('congo')).toBe('t61rcWkgMzE');
    expect(formatTraceparent(context!)).toBe(valid);
    for (const bad of [
      undefined,
      '',
      'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      '00-00000000000000000000000000000000-b7ad6b7169203331-01',
      '00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01',
      '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra',
      '00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01',
    ])
      expect(parseTraceparent(bad, undefined), String(bad)).toBeUndefined();
  });

  it("writes the consumer's own log lines with the event id and trace id", async () => {
    const { provider, exporter } = createTracing();
    const capture = createCapturingLogger();
    bus = createBus({
      service: 'shop',
      transport: createMemoryTransport(),
      logger: capture.logger,
      instrumentation: createOtelInstrumentation({ tracerProvider: provider, metrics: false }),
    });
    const consumer = bus.handle(
      'broken',
      [OrderPlaced],
      () => {
        throw new Error('down');
      },
      { retry: false },
    );
    const receipt = await bus.publish(OrderPlaced, { orderId: 'a' });
    await consumer.waitFor(receipt);
    const line = capture.lines.find((l) => l.message === 'event dead-lettered');
    const span = exporter.getFinishedSpans().find((s) => s.name === 'process orders');
    expect(line?.fields).toMatchObject({
      eventId: receipt.id,
      traceId: span?.spanContext().traceId,
      group: 'broken',
    });
  });

  it('rejects a bad consumerSpanParent with INVALID_CONFIG', () => {
    expect(() => createOtelInstrumentation({ consumerSpanParent: 'sibling' as 'child' })).toThrow(
      /consumerSpanParent/,
    );
  });
});
