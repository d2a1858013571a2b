import { z } from 'zod';
import { defineEvent } from 'tidings';

/** The shop's facts. Every event of one order shares the `orders` topic and the order id as key, so they stay in order. */
export const OrderPlaced = defineEvent('OrderPlaced', {
  schema: z.object({
    orderId: z.string(),
    customer: z.string(),
    items: z.array(z.object({ sku: z.string(), quantity: z.number().int().positive() })).min(1),
    total: z.number().positive(),
  }),
  key: 'orderId',
  topic: 'orders',
});

export const PaymentReceived = defineEvent('PaymentReceived', {
  schema: z.object({ orderId: z.string(), amount: z.number().positive() }),
  key: 'orderId',
  topic: 'orders',
});

export const OrderShipped = defineEvent('OrderShipped', {
  schema: z.object({ orderId: z.string(), carrier: z.string() }),
  key: 'orderId',
  topic: 'orders',
});

export type OrderPlacedData = z.infer<typeof OrderPlaced.schema>;
