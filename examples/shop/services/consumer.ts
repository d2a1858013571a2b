// One consumer service of the demo, by name: email, analytics, warehouse, loyalty, fraud-detection or
// recommendations. Each runs in its own process, in its own consumer group, on the shared embedded log.
import { closeOnSignals, createBus, type Consumer } from 'tidings';
import { POISON_ORDER } from '../catalog.js';
import { OrderPlaced, OrderShipped, PaymentReceived } from '../events.js';
import type { FromService, ToService } from '../protocol.js';

const group = process.argv[2] ?? '';
const bus = createBus({ service: group });
const send = (message: FromService) => process.send?.(message);
const say = (line: string) => send({ kind: 'log', line: `${group}: ${line}` });

function start(): Consumer {
  switch (group) {
    case 'email':
      return bus.handle('email', [OrderPlaced, OrderShipped], ({ type, data }) => {
        void type;
        void data; // a real service would send a mail here
      });
    case 'analytics': {
      const revenueByCustomerOrder = new Map<string, number>();
      let ordersPlaced = 0;
      return bus.handle('analytics', [OrderPlaced, PaymentReceived], (message) => {
        if (message.type === 'OrderPlaced') {
          ordersPlaced++; // orders per period, for the dashboard
          return;
        }
        const { data, key } = message;
        revenueByCustomerOrder.set(key, (revenueByCustomerOrder.get(key) ?? 0) + data.amount); // no inbox: a duplicate counts twice
        void ordersPlaced;
      });
    }
    case 'warehouse': {
      const stock = new Map<string, number>();
      return bus.handle(
        'warehouse',
        [OrderPlaced],
        ({ data }) => {
          if (data.orderId === POISON_ORDER) throw new Error(`SKU "${data.items[0]?.sku}" does not exist`);
          for (const item of data.items) stock.set(item.sku, (stock.get(item.sku) ?? 0) - item.quantity);
        },
        // Park the failing order: later events of that order wait, every other order flows.
        { onFailure: 'park', retry: { maxAttempts: 3, initialDelayMs: 20 } },
      );
    }
    case 'loyalty': {
      const points = new Map<string, number>();
      const customers = new Map<string, string>(); // order → customer, from OrderPlaced
      return bus.handle(
        'loyalty',
        [OrderPlaced, PaymentReceived],
        (message) => {
          if (message.type === 'OrderPlaced') {
            customers.set(message.key, message.data.customer);
            return;
          }
          const customer = customers.get(message.key) ?? message.key;
          points.set(customer, (points.get(customer) ?? 0) + Math.floor(message.data.amount));
        },
        { inbox: true }, // the log's durable inbox: a redelivered payment earns points once
      );
    }
    case 'fraud-detection':
      return bus.handle('fraud-detection', [OrderPlaced], ({ data }) => {
        if (data.total > 900) say(`order ${data.orderId} flagged for review (total ${data.total})`);
      });
    case 'recommendations': {
      const bought = new Map<string, Set<string>>();
      return bus.handle(
        'recommendations',
        [OrderPlaced],
        ({ data }) => {
          const skus = bought.get(data.customer) ?? new Set<string>();
          for (const item of data.items) skus.add(item.sku);
          bought.set(data.customer, skus);
        },
        { startFrom: 'earliest' }, // a new group replays the whole history
      );
    }
    default:
      throw new Error(`unknown service "${group}"`);
  }
}

const consumer = start();
process.on('message', (message: ToService) => {
  if (message.kind !== 'stats') return;
  const stats = consumer.stats();
  send({
    kind: 'stats',
    group,
    stats: {
      processed: stats.processed,
      duplicates: stats.duplicates,
      parked: stats.parked,
      deadLettered: stats.deadLettered,
    },
  });
});
closeOnSignals(bus, { onClosed: () => process.disconnect?.() });
send({ kind: 'ready', group });
