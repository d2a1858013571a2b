// The order service: places orders when the orchestrator asks. A separate process sharing the embedded log.
import { closeOnSignals, createBus, type Receipt } from 'tidings';
import { demoOrder } from '../catalog.js';
import { OrderPlaced, OrderShipped, PaymentReceived } from '../events.js';
import type { FromService, ToService } from '../protocol.js';

// The embedded log in TIDINGS_DATA_DIR; `produces` declares what this service publishes, for `tidings topology`.
const bus = createBus({ service: 'order-service', produces: [OrderPlaced, PaymentReceived, OrderShipped] });
const send = (message: FromService) => process.send?.(message);
let firstPayment: { receipt: Receipt; flow: { correlationId: string; causationId: string } } | undefined;

process.on('message', (message: ToService) => {
  void (async () => {
    if (message.kind === 'place') {
      let events = 0;
      for (let n = message.from; n < message.to; n++) {
        const order = demoOrder(n);
        const placed = await bus.publish(OrderPlaced, order);
        // The order's later facts belong to its flow: `tidings trace <placed.id>` shows them together.
        const flow = { correlationId: placed.id, causationId: placed.id };
        const payment = await bus.publish(
          PaymentReceived,
          { orderId: order.orderId, amount: order.total },
          flow,
        );
        firstPayment ??= { receipt: payment, flow };
        events += 2;
        if (n % 2 === 0) {
          await bus.publish(OrderShipped, { orderId: order.orderId, carrier: 'parcel-co' }, flow);
          events++;
        }
      }
      send({ kind: 'placed', count: message.to - message.from, events });
    } else if (message.kind === 'duplicate-payment' && firstPayment) {
      // A producer that missed an acknowledgement publishes the same event again: same id, same flow and cause.
      const order = demoOrder(1);
      await bus.publish(
        PaymentReceived,
        { orderId: order.orderId, amount: order.total },
        { id: firstPayment.receipt.id, ...firstPayment.flow },
      );
      send({ kind: 'placed', count: 0, events: 1 });
    }
  })();
});

closeOnSignals(bus, { onClosed: () => process.disconnect?.() });
send({ kind: 'ready', group: 'order-service' });
