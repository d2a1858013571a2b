// The README's tour, as a program that CI type-checks and runs. Run it: npm run quickstart -w examples
import { z } from 'zod';
import { createBus, createMemoryTransport, defineEvent, type Receipt } from 'tidings';

// 1. Events are facts, named in the past tense, typed by any Standard Schema, keyed by their aggregate.
const OrderPlaced = defineEvent('OrderPlaced', {
  schema: z.object({ orderId: z.string(), customer: z.string(), total: z.number().positive() }),
  key: 'orderId', // same order, same partition, same order of events
  topic: 'orders',
});
const OrderConfirmed = defineEvent('OrderConfirmed', {
  schema: z.object({ orderId: z.string() }),
  key: 'orderId',
  topic: 'orders',
});

// 2. A bus over a transport. Services that share the transport share the events.
const transport = createMemoryTransport();
const bus = createBus({ service: 'shop', transport });

// 3. Each consumer group gets every event; within a group, one key is handled strictly in order.
const emails: string[] = [];
const email = bus.handle('email', [OrderPlaced, OrderConfirmed], ({ type, data }) => {
  emails.push(`${type} ${data.orderId}`);
});

let confirmation: Receipt | undefined;
const confirmations = bus.handle(
  'confirmations',
  [OrderPlaced],
  async ({ data }, ctx) => {
    // ctx.publish links the follow-up to its cause: same correlation id, causation id = this event's id.
    confirmation = await ctx.publish(OrderConfirmed, { orderId: data.orderId });
  },
  { retry: { maxAttempts: 3 }, onFailure: 'park' },
);

// 4. publish resolves once the event is durable on the transport, with where it landed.
const receipt = await bus.publish(OrderPlaced, { orderId: 'o-1', customer: 'ada', total: 42 });
console.log(`published ${receipt.id} to ${receipt.topic}[${receipt.partition}]@${receipt.offset}`);

// 5. Bad data never reaches the log: publish rejects with a typed error before writing anything.
try {
  await bus.publish(OrderPlaced, { orderId: 'o-2', customer: 'bob', total: -1 });
} catch (error) {
  console.log(`rejected: ${(error as { code: string }).code}`);
}

// 6. Tests and scripts wait for a position, never for a fixed time.
await confirmations.waitFor(receipt);
await email.waitFor([receipt, confirmation!]);
console.log(`email saw: ${emails.join(', ')}`);

await bus.close();
await transport.close();
if (emails.join(',') !== 'OrderPlaced o-1,OrderConfirmed o-1') throw new Error('unexpected emails');
console.log('quickstart ok');
