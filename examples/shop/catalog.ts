import type { OrderPlacedData } from './events.js';

/** The order the demo's warehouse cannot fulfil: its SKU does not exist, so every attempt fails. */
export const POISON_ORDER = 'order-0007';

/** Deterministic demo orders: 7 customers, 5 SKUs, one poison order. */
export function demoOrder(n: number): OrderPlacedData {
  const orderId = `order-${String(n).padStart(4, '0')}`;
  const sku = orderId === POISON_ORDER ? 'SKU-DOES-NOT-EXIST' : `SKU-${(n % 5) + 1}`;
  return {
    orderId,
    customer: `customer-${n % 7}`,
    items: [{ sku, quantity: (n % 3) + 1 }],
    total: 10 + ((n * 37) % 1000),
  };
}

/** Events the order service publishes for orders `from`..`to`-1: OrderPlaced, PaymentReceived, and OrderShipped for even orders. */
export function eventsFor(from: number, to: number): number {
  let events = 0;
  for (let n = from; n < to; n++) events += n % 2 === 0 ? 3 : 2;
  return events;
}
