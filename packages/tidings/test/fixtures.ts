import { z } from 'zod';
import {
  createBus,
  createMemoryTransport,
  defineCommand,
  defineEvent,
  silentLogger,
  type BusOptions,
} from '../src/index.js';

/** Shared definitions for the core tests: an `orders` topic holding several event types of one aggregate. */
export const OrderPlaced = defineEvent('OrderPlaced', {
  schema: z.object({
    orderId: z.string(),
    seq: z.number().int().default(0),
    total: z.number().nonnegative(),
  }),
  key: 'orderId',
  topic: 'orders',
});

export const OrderShipped = defineEvent('OrderShipped', {
  schema: z.object({ orderId: z.string(), carrier: z.string() }),
  key: 'orderId',
  topic: 'orders',
});

export const PaymentReceived = defineEvent('PaymentReceived', {
  schema: z.object({ orderId: z.string(), amount: z.number() }),
  key: (payment) => payment.orderId,
  topic: 'payments',
});

export const ShipOrder = defineCommand('ShipOrder', {
  schema: z.object({ orderId: z.string() }),
  key: 'orderId',
});

/** A bus over a fresh in-memory transport, logging nothing. */
export function testBus(options: Partial<BusOptions> = {}) {
  const transport = options.transport ?? createMemoryTransport();
  const bus = createBus({ service: 'test', logger: silentLogger, ...options, transport });
  return { bus, transport };
}

/** Random delays in [0, maxMs) through real timers, to shuffle handler completion order. */
export function randomDelay(maxMs: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.floor(Math.random() * maxMs)));
}
