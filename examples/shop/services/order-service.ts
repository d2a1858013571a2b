// The order service: places orders when the orchestrator asks. A separate process sharing the embedded log.
import { closeOnSignals, createBus, type Receipt } from 'tidings';
import { demoOrder } from '../catalog.js';
import { OrderPlaced, OrderShipped, PaymentReceived } from '../events.js';
import type { FromService, ToService } from '../protocol.js';

const bus = createBus({ service: 'order-service' }); // the embedded log in TIDINGS_DATA_DIR
const send = (message: FromService) => process.send?.(message);
let firstPayment: Receipt | undefined;

process.on('message', (message: ToService) => {
  void (async () => {
    if (message.kind === 'place') {
      let events = 0;
      for (let n = message.from; n < message.to; n++) {
        const order = demoOrder(n);
        await bus.publish(OrderPlaced, order);
        const payment = await bus.publish(PaymentReceived, { orderId: order.orderId, amount: order.total });
        firstPayment ??= payment;
        events += 2;
        if (n % 2 === 0) {
          await bus.publish(OrderShipped, { orderId: order.orderId, carrier: 'parcel-co' });
          events++;
        }
      }
      send({ kind: 'placed', count: message.to - message.from, events });
    } else if (message.kind === 'duplicate-payment' && firstPayment) {
      // A producer that missed an acknowledgement publishes again with the same event id.
      const order = demoOrder(1);
      await bus.publish(
        PaymentReceived,
        { orderId: order.orderId, amount: order.total },
        { id: firstPayment.id },
      );
      send({ kind: 'placed', count: 0, events: 1 });
    }
  })();
});

closeOnSignals(bus, { onClosed: () => process.disconnect?.() });
send({ kind: 'ready', group: 'order-service' });
