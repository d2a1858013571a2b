// The Tidings shop demo: an order service and five consumer groups, a consumer outage and catch-up, a late group
// that backfills from the start, and a poison event that is parked, shown and skipped.
// Run it with `npm start` (options: `npm start -- --help`).
import { parseArgs } from 'node:util';
import {
  createBus,
  createMemoryInbox,
  createMemoryTransport,
  silentLogger,
  type Consumer,
  type Receipt,
} from 'tidings';
import { OrderPlaced, OrderShipped, PaymentReceived, type OrderPlacedData } from './events.js';

const { values: args } = parseArgs({
  options: {
    orders: { type: 'string', default: '40' },
    quiet: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(`Usage: npm start -- [options]

A small shop on Tidings: an order service publishes OrderPlaced, PaymentReceived and OrderShipped; email,
analytics, warehouse, loyalty and fraud detection each consume in their own group.

Options:
  --orders N   orders to place (default 40, at least 10)
  --quiet      print only the summary
  -h, --help   show this help`);
  process.exit(0);
}
const orderCount = Number(args.orders);
if (!Number.isInteger(orderCount) || orderCount < 10 || orderCount > 100_000) {
  console.error(`--orders must be a whole number from 10 to 100000, got "${args.orders}"`);
  process.exit(2);
}
const say = (line: string) => {
  if (!args.quiet) console.log(line);
};

const transport = createMemoryTransport();
const bus = createBus({ service: 'order-service', transport, logger: silentLogger });
const checks: Array<{ name: string; ok: boolean }> = [];
const check = (name: string, ok: boolean) => checks.push({ name, ok });

// --- consumers ----------------------------------------------------------------------------------------------------
const emailsSent: string[] = [];
const revenue = { total: 0 };
const stock = new Map<string, number>();
const points = new Map<string, number>();
const flagged: string[] = [];
const POISON_ORDER = 'order-0007';

function startEmail(): Consumer {
  return bus.handle('email', [OrderPlaced, OrderShipped], ({ type, data }) => {
    emailsSent.push(`${type}:${data.orderId}`);
  });
}
let email = startEmail();
const analytics = bus.handle('analytics', [PaymentReceived], ({ data }) => {
  revenue.total += data.amount;
});
const warehouse = bus.handle(
  'warehouse',
  [OrderPlaced],
  ({ data }) => {
    if (data.orderId === POISON_ORDER)
      throw new Error(`SKU "${data.items[0]?.sku}" does not exist in the warehouse`);
    for (const item of data.items) stock.set(item.sku, (stock.get(item.sku) ?? 0) - item.quantity);
  },
  { onFailure: 'park', retry: { maxAttempts: 3, initialDelayMs: 5 } },
);
const loyaltyInbox = createMemoryInbox();
const loyalty = bus.handle(
  'loyalty',
  [PaymentReceived],
  ({ data, key }) => {
    points.set(key, (points.get(key) ?? 0) + Math.floor(data.amount));
  },
  { inbox: loyaltyInbox },
);
const fraud = bus.handle('fraud-detection', [OrderPlaced], ({ data }) => {
  if (data.total > 900) flagged.push(data.orderId);
});

// --- the order service ----------------------------------------------------------------------------------------------
function order(n: number): OrderPlacedData {
  const orderId = `order-${String(n).padStart(4, '0')}`;
  const sku = orderId === POISON_ORDER ? 'SKU-DOES-NOT-EXIST' : `SKU-${(n % 5) + 1}`;
  return {
    orderId,
    customer: `customer-${n % 7}`,
    items: [{ sku, quantity: (n % 3) + 1 }],
    total: 10 + ((n * 37) % 1000),
  };
}

async function placeOrders(from: number, to: number): Promise<Receipt[]> {
  const receipts: Receipt[] = [];
  for (let n = from; n < to; n++) {
    const placed = order(n);
    receipts.push(await bus.publish(OrderPlaced, placed));
    receipts.push(await bus.publish(PaymentReceived, { orderId: placed.orderId, amount: placed.total }));
    if (n % 2 === 0)
      receipts.push(await bus.publish(OrderShipped, { orderId: placed.orderId, carrier: 'parcel-co' }));
  }
  return receipts;
}

const started = performance.now();
const half = Math.floor(orderCount / 2);
say(`order-service: placing orders 1..${half}`);
let receipts = await placeOrders(1, half + 1);
await Promise.all([email, analytics, warehouse, loyalty, fraud].map((c) => c.waitFor(receipts)));
say(`email: ${emailsSent.length} emails sent so far`);

say('email: going down for maintenance (its group keeps its committed offset)');
await email.close();
const emailsBeforeOutage = emailsSent.length;
const emailProcessedBeforeOutage = email.stats().processed;
say(`order-service: placing orders ${half + 1}..${orderCount} while email is down`);
receipts = await placeOrders(half + 1, orderCount + 1);
const emailLagDuringOutage = (await transport.admin.describeGroup('email')).lag.reduce(
  (sum, p) => sum + p.lag,
  0,
);
say(`email: down, lag ${emailLagDuringOutage} events, nothing lost`);
check('email lagged while it was down', emailLagDuringOutage > 0);

// A producer retries a publish whose acknowledgement it missed: same event id. The loyalty inbox drops it.
const retried = await bus.publish(
  PaymentReceived,
  { orderId: 'order-0001', amount: order(1).total },
  { id: receipts[1]!.id },
);
receipts.push(retried);

email = startEmail();
say('email: back up, catching up from its committed offset');
await Promise.all([email, analytics, warehouse, loyalty, fraud].map((c) => c.waitFor(receipts)));
say(`email: caught up, ${emailsSent.length - emailsBeforeOutage} emails sent after the outage`);

// A late group joins and backfills from the start of the log.
const recommendations = new Map<string, Set<string>>();
const recs = bus.handle(
  'recommendations',
  [OrderPlaced],
  ({ data }) => {
    const bought = recommendations.get(data.customer) ?? new Set<string>();
    for (const item of data.items) bought.add(item.sku);
    recommendations.set(data.customer, bought);
  },
  { startFrom: 'earliest' },
);
await recs.waitFor(receipts);
say(`recommendations: joined late, replayed the history of ${recommendations.size} customers`);

// The poison order is parked in the warehouse group: its key waits, every other order flowed.
const [parked] = await bus.parked.list('warehouse');
say(`warehouse: parked key ${parked?.key} after ${parked?.attempts} attempts: ${parked?.error}`);
check('the poison order is parked in the warehouse', parked?.key === POISON_ORDER);
const skipped = await bus.parked.skip({ group: 'warehouse', topic: 'orders', key: POISON_ORDER });
say(`warehouse: skipped the poison event; ${skipped.remaining} remain parked`);

// --- summary --------------------------------------------------------------------------------------------------------
const consumers = { email, analytics, warehouse, loyalty, 'fraud-detection': fraud, recommendations: recs };
const rows: string[][] = [['group', 'processed', 'lag', 'duplicates suppressed', 'parked']];
let totalLag = 0;
for (const [group, consumer] of Object.entries(consumers)) {
  const stats = consumer.stats();
  if (group === 'email') stats.processed += emailProcessedBeforeOutage; // both runs of the email service
  const lag = (await transport.admin.describeGroup(group)).lag.reduce((sum, p) => sum + p.lag, 0);
  totalLag += lag;
  rows.push([group, String(stats.processed), String(lag), String(stats.duplicates), String(stats.parked)]);
}
const widths = rows[0]!.map((_, col) => Math.max(...rows.map((row) => row[col]!.length)));
console.log('');
for (const row of rows)
  console.log(
    row.map((cell, col) => (col === 0 ? cell.padEnd(widths[col]!) : cell.padStart(widths[col]!))).join('  '),
  );
console.log('');

const shippedCount = Math.floor(orderCount / 2); // even-numbered orders ship
check('every group is at lag 0', totalLag === 0);
check(
  'email caught up with every OrderPlaced and OrderShipped',
  emailsSent.length >= orderCount + shippedCount,
);
check('loyalty suppressed the duplicate payment', loyalty.stats().duplicates === 1);
check('recommendations backfilled every customer', recommendations.size === 7);
check(
  'nothing was dead-lettered',
  (await bus.deadLetters.list({ group: 'warehouse', topic: 'orders' })).length === 0,
);

await bus.close();
await transport.close();
const failed = checks.filter((c) => !c.ok);
for (const c of failed) console.log(`check failed: ${c.name}`);
say(`finished in ${Math.round(performance.now() - started)} ms`);
if (failed.length > 0) {
  console.log('demo failed');
  process.exit(1);
}
console.log('demo ok');
