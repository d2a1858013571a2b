/**
 * Tracing through the transactional outbox, on the real PostgreSQL server with the OpenTelemetry SDK's in-memory
 * exporter: a span active at enqueue → a `create` span stored with the event → the relay's `publish` span → the
 * consumer's `process` span, all one trace; and an instrumentation that throws never fails an enqueue.
 */
import { context, SpanKind, trace } from '@opentelemetry/api';
import {
  ATTR_MESSAGING_CONSUMER_GROUP_NAME,
  ATTR_MESSAGING_DESTINATION_NAME,
  ATTR_MESSAGING_DESTINATION_PARTITION_ID,
  ATTR_MESSAGING_MESSAGE_CONVERSATION_ID,
  ATTR_MESSAGING_MESSAGE_ID,
  ATTR_MESSAGING_OPERATION_NAME,
  ATTR_MESSAGING_OPERATION_TYPE,
  ATTR_MESSAGING_SYSTEM,
  MESSAGING_OPERATION_TYPE_VALUE_CREATE,
} from '@opentelemetry/semantic-conventions/incubating';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  createBus,
  createMemoryTransport,
  silentLogger,
  type Envelope,
  type Instrumentation,
  type PublishInfo,
} from 'tidings';
import { createOtelInstrumentation } from 'tidings/otel';
import { waitUntil } from 'tidings/testing';
import { OrderPlaced, openOutbox, type TestDb } from '../outbox/helpers.js';
import { createCapturingLogger, createTracing, useContextManager } from './support.js';

beforeAll(() => useContextManager());

const opened: TestDb[] = [];
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  for (const db of opened.splice(0)) await db.close();
});

const byName = (spans: ReadableSpan[], name: string) => {
  const found = spans.find((s) => s.name === name);
  if (!found) throw new Error(`no span "${name}" among ${spans.map((s) => s.name).join(', ')}`);
  return found;
};
const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;
const idOf = (span: ReadableSpan) => span.spanContext().spanId;

/** The envelopes stored in the outbox table, oldest first. */
async function storedEnvelopes(db: TestDb, table: string): Promise<Envelope[]> {
  const rows = await db.query(`SELECT envelope FROM ${table} ORDER BY seq`);
  return rows.map((row) => JSON.parse(String(row['envelope'])) as Envelope);
}

describe('tracing through the transactional outbox (PostgreSQL)', () => {
  it('continues the trace of the enqueuing request through the relay into the consumer', async () => {
    const { provider, exporter } = createTracing();
    const instrumentation = createOtelInstrumentation({ tracerProvider: provider, metrics: false });
    const { db, outbox } = await openOutbox(opened, 'postgres', { instrumentation, service: 'shop' });
    const tracer = provider.getTracer('test');

    const enqueued = await tracer.startActiveSpan('http request', { kind: SpanKind.SERVER }, async (span) => {
      try {
        return await db.tx((tx) => outbox.enqueue(tx, OrderPlaced, { orderId: 'o-1', n: 1 }));
      } finally {
        span.end();
      }
    });

    const transport = createMemoryTransport();
    const bus = createBus({ service: 'relayer', transport, logger: silentLogger, instrumentation });
    cleanups.push(() => bus.close());
    const seen: Envelope[] = [];
    bus.handle('billing', [OrderPlaced], (_message, ctx) => void seen.push(ctx.envelope));
    // Started inside an unrelated active span: the relay's publish spans must not descend from it.
    tracer.startActiveSpan('startup', (span) => {
      bus.startRelay(outbox, { pollIntervalMs: 5 });
      span.end();
    });
    await waitUntil(() => exporter.getFinishedSpans().some((s) => s.name === 'process orders'), {
      message: 'the consumer span',
    });

    const spans = exporter.getFinishedSpans();
    const http = byName(spans, 'http request');
    const create = byName(spans, 'create orders');
    const publish = byName(spans, 'publish orders');
    const process = byName(spans, 'process orders');
    const traceId = http.spanContext().traceId;
    for (const span of [create, publish, process]) expect(span.spanContext().traceId).toBe(traceId);
    expect([create.kind, publish.kind, process.kind]).toEqual([
      SpanKind.PRODUCER,
      SpanKind.PRODUCER,
      SpanKind.CONSUMER,
    ]);

    // create: a child of the request span, per the conventions' `create` operation.
    expect(parentOf(create)).toBe(idOf(http));
    expect(create.attributes).toMatchObject({
      [ATTR_MESSAGING_OPERATION_TYPE]: MESSAGING_OPERATION_TYPE_VALUE_CREATE,
      [ATTR_MESSAGING_OPERATION_NAME]: 'create',
      [ATTR_MESSAGING_SYSTEM]: 'tidings',
      [ATTR_MESSAGING_DESTINATION_NAME]: 'orders',
      [ATTR_MESSAGING_MESSAGE_ID]: enqueued.id,
      [ATTR_MESSAGING_MESSAGE_CONVERSATION_ID]: enqueued.id,
      'tidings.message.type': 'OrderPlaced',
      'tidings.message.key': 'o-1',
      'tidings.service': 'shop',
    });
    expect(create.attributes[ATTR_MESSAGING_DESTINATION_PARTITION_ID]).toBeUndefined();

    // publish: the relay's send, a child of (and linked to) the create span, not of the span active at startRelay.
    expect(parentOf(publish)).toBe(idOf(create));
    expect(publish.links.map((l) => l.context.spanId)).toEqual([idOf(create)]);
    expect(publish.attributes).toMatchObject({
      [ATTR_MESSAGING_OPERATION_TYPE]: 'send',
      [ATTR_MESSAGING_OPERATION_NAME]: 'publish',
      [ATTR_MESSAGING_SYSTEM]: 'tidings',
      [ATTR_MESSAGING_DESTINATION_NAME]: 'orders',
      [ATTR_MESSAGING_MESSAGE_ID]: enqueued.id,
      'tidings.service': 'relayer',
    });
    expect(publish.attributes[ATTR_MESSAGING_DESTINATION_PARTITION_ID]).toEqual(expect.any(String));

    // process: the stored envelope was published unchanged, so the consumer descends from the create span.
    expect(parentOf(process)).toBe(idOf(create));
    expect(process.links.map((l) => l.context.spanId)).toEqual([idOf(create)]);
    expect(process.attributes).toMatchObject({
      [ATTR_MESSAGING_OPERATION_TYPE]: 'process',
      [ATTR_MESSAGING_CONSUMER_GROUP_NAME]: 'billing',
      [ATTR_MESSAGING_MESSAGE_ID]: enqueued.id,
      'tidings.outcome': 'processed',
    });
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({ id: enqueued.id, traceparent: `00-${traceId}-${idOf(create)}-01` });
  });

  it('parents the create span on an explicit traceparent when no span is active, and stores its context', async () => {
    const { provider, exporter } = createTracing();
    const instrumentation = createOtelInstrumentation({ tracerProvider: provider, metrics: false });
    const { db, outbox } = await openOutbox(opened, 'postgres', { instrumentation });
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    expect(trace.getSpan(context.active())).toBeUndefined();
    await db.tx((tx) =>
      outbox.enqueueMany(tx, [
        { event: OrderPlaced, data: { orderId: 'a', n: 1 }, options: { traceparent } },
        { event: OrderPlaced, data: { orderId: 'b', n: 2 } },
      ]),
    );
    const spans = exporter.getFinishedSpans();
    expect(spans.map((s) => s.name)).toEqual(['create orders', 'create orders']);
    const [withCarried, withoutParent] = spans as [ReadableSpan, ReadableSpan];
    expect(withCarried.spanContext().traceId).toBe('0af7651916cd43dd8448eb211c80319c');
    expect(parentOf(withCarried)).toBe('b7ad6b7169203331');
    expect(parentOf(withoutParent)).toBeUndefined();
    const stored = await storedEnvelopes(db, db.table('outbox'));
    expect(stored.map((e) => e.traceparent)).toEqual(
      spans.map((s) => `00-${s.spanContext().traceId}-${idOf(s)}-01`),
    );
  });

  it('never fails an enqueue because the instrumentation threw from publish or from end', async () => {
    const capture = createCapturingLogger();
    const calls: PublishInfo[] = [];
    const throwsAtStart: Instrumentation = {
      publish(info) {
        calls.push(info);
        throw new Error('tracer exploded at start');
      },
    };
    const throwsAtEnd: Instrumentation = {
      publish(info) {
        calls.push(info);
        return {
          traceparent: '00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01',
          end() {
            throw new Error('tracer exploded at end');
          },
        };
      },
    };
    const first = await openOutbox(opened, 'postgres', {
      instrumentation: throwsAtStart,
      logger: capture.logger,
    });
    const a = await first.db.tx((tx) => first.outbox.enqueue(tx, OrderPlaced, { orderId: 'a', n: 1 }));
    const second = await openOutbox(opened, 'postgres', {
      instrumentation: throwsAtEnd,
      logger: capture.logger,
    });
    const [b, c] = await second.db.tx((tx) =>
      second.outbox.enqueueMany(tx, [
        { event: OrderPlaced, data: { orderId: 'b', n: 2 } },
        { event: OrderPlaced, data: { orderId: 'c', n: 3 } },
      ]),
    );

    expect(calls.map((info) => [info.operation, info.system, info.id])).toEqual([
      ['create', 'tidings', a.id],
      ['create', 'tidings', b!.id],
      ['create', 'tidings', c!.id],
    ]);
    const [storedA] = await storedEnvelopes(first.db, first.db.table('outbox'));
    expect(storedA).toMatchObject({ id: a.id });
    expect(storedA!.traceparent).toBeUndefined();
    const storedBc = await storedEnvelopes(second.db, second.db.table('outbox'));
    expect(storedBc.map((e) => [e.id, e.traceparent])).toEqual([
      [b!.id, '00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01'],
      [c!.id, '00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01'],
    ]);
    expect(capture.lines.map((l) => [l.level, l.message])).toEqual([
      ['warn', 'the instrumentation failed to start the create of OrderPlaced; ignored'],
      ['warn', 'the instrumentation failed to end a publish; ignored'],
      ['warn', 'the instrumentation failed to end a publish; ignored'],
    ]);

    // A relay whose bus instrumentation throws still publishes every stored event.
    const transport = createMemoryTransport();
    const bus = createBus({
      service: 'relayer',
      transport,
      logger: silentLogger,
      instrumentation: throwsAtStart,
    });
    cleanups.push(() => bus.close());
    const seen: string[] = [];
    const consumer = bus.handle('g', [OrderPlaced], (_message, ctx) => void seen.push(ctx.envelope.id));
    bus.startRelay(second.outbox, { pollIntervalMs: 5 });
    await waitUntil(() => seen.length === 2, { message: 'both relayed events handled' });
    expect(seen).toEqual([b!.id, c!.id]);
    expect(calls.slice(3).map((info) => [info.operation, info.relayed, info.id])).toEqual([
      ['publish', true, b!.id],
      ['publish', true, c!.id],
    ]);
    void consumer;
  });
});
