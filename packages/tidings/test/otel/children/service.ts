// One service process of the cross-process tracing tests, traced with the OpenTelemetry SDK's in-memory exporter.
// It prints each finished span as a line `span <json>` on stdout, then `done`, and exits.
//   node --import tsx --conditions=tidings-source service.ts producer|consumer log <dataDir>
//   node --import tsx --conditions=tidings-source service.ts producer|consumer nats   (prefix in the environment)
// producer: publishes one OrderPlaced (prints `published <id>`). consumer: group billing handles OrderPlaced and
// publishes PaymentRequested; group ledger handles that; prints `ready` once both groups are running.
import { z } from 'zod';
import { createBus, defineEvent, silentLogger, type Transport } from 'tidings';
import { createLogTransport } from 'tidings/log';
import { createOtelInstrumentation } from 'tidings/otel';
import { waitUntil } from 'tidings/testing';
import { createTransport as createNatsTestTransport } from '../../conformance/children/nats.js';
import { createTracing, spanJson, useContextManager } from '../support.js';

const OrderPlaced = defineEvent('OrderPlaced', {
  schema: z.object({ orderId: z.string() }),
  key: 'orderId',
  topic: 'otel-orders',
});
const PaymentRequested = defineEvent('PaymentRequested', {
  schema: z.object({ orderId: z.string() }),
  key: 'orderId',
  topic: 'otel-payments',
});

const [role, kind, dataDir] = process.argv.slice(2);
let transport: Transport;
if (kind === 'log' && dataDir !== undefined) transport = createLogTransport({ dataDir });
else if (kind === 'nats') transport = createNatsTestTransport();
else {
  console.error('usage: service.ts producer|consumer log <dataDir> | service.ts producer|consumer nats');
  process.exit(2);
}

useContextManager();
const { provider, exporter } = createTracing();
const bus = createBus({
  service: role === 'producer' ? 'orders' : 'billing',
  transport,
  logger: silentLogger,
  instrumentation: createOtelInstrumentation({ tracerProvider: provider, metrics: false }),
});

if (role === 'producer') {
  const receipt = await bus.publish(OrderPlaced, { orderId: 'o-1' });
  console.log(`published ${receipt.id}`);
} else {
  let handled = 0;
  bus.handle('billing', [OrderPlaced], async ({ data }, ctx) => {
    await ctx.publish(PaymentRequested, { orderId: data.orderId });
  });
  bus.handle('ledger', [PaymentRequested], () => {
    handled++;
  });
  console.log('ready');
  await waitUntil(() => handled === 1, { timeoutMs: 60_000, message: 'ledger did not handle the payment' });
  // The ledger's span ends once its delivery settles, just after the handler returned.
  await waitUntil(() => exporter.getFinishedSpans().length >= 3, { timeoutMs: 10_000 });
}
await bus.close();
await transport.close();
for (const span of exporter.getFinishedSpans()) console.log(`span ${JSON.stringify(spanJson(span))}`);
console.log('done');
