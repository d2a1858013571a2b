// OrderPlaced through three versions, each a compatible change with an upcaster from the one before, and a v4 that
// would break readers of stored events. In a real project only the current definition is exported (as current.ts
// does, for the schema CI gate); the example keeps every version to write events with each of them.
import { z } from 'zod';
import { defineEvent } from 'tidings';

// v1: the first shape.
const v1 = z.object({ orderId: z.string(), amount: z.number() });
export const OrderPlacedV1 = defineEvent('OrderPlaced', { schema: v1, key: 'orderId' });

// v2: a currency, with a default (compatible). Old events get EUR, the only currency the shop sold in then.
const v2 = v1.extend({ currency: z.enum(['EUR', 'USD']).default('EUR') });
const fromV1 = (event: z.infer<typeof v1>) => ({ ...event, currency: 'EUR' });
export const OrderPlacedV2 = defineEvent('OrderPlaced', {
  schema: v2,
  key: 'orderId',
  version: 2,
  upcast: { 1: fromV1 },
});

// v3: the sales channel, optional in the schema (compatible); the upcaster derives it for old events from the order
// number, which a default could not do.
const v3 = v2.extend({ channel: z.enum(['web', 'store']).optional() });
const fromV2 = (event: z.infer<typeof v2>) => ({
  ...event,
  channel: event.orderId.startsWith('s-') ? 'store' : 'web',
});
export const OrderPlacedV3 = defineEvent('OrderPlaced', {
  schema: v3,
  key: 'orderId',
  version: 3,
  upcast: { 1: fromV1, 2: fromV2 },
});

// v4 (refused): the amount as integer cents, required. Stored v3 events have no amountCents and a fractional
// amount: a BACKWARD-incompatible change, which the registry stops before anything is written.
const v4 = v3.omit({ amount: true }).extend({ amountCents: z.number().int() });
export const OrderPlacedV4 = defineEvent('OrderPlaced', {
  schema: v4,
  key: 'orderId',
  version: 4,
  upcast: {
    1: fromV1,
    2: fromV2,
    3: ({ amount, ...rest }: z.infer<typeof v3>) => ({ ...rest, amountCents: Math.round(amount * 100) }),
  },
});
