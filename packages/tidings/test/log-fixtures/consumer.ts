// A consumer process: joins <group> on <topic> of the log in <dataDir> (from 'earliest'), prints "ready" once it
// owns partitions, then one JSON line per delivery. Mode "ack" acks each and exits after <count> deliveries; mode
// "hold" never settles (to be killed with its deliveries in flight).
//   node --import tsx --conditions=tidings-source consumer.ts <dataDir> <group> <topic> <count> <ack|hold>
import { createLogTransport } from '../../src/log/index.js';

const [dataDir, group, topic, countArg, mode] = process.argv.slice(2);
const count = Number(countArg);
if (!dataDir || !group || !topic || !Number.isInteger(count) || (mode !== 'ack' && mode !== 'hold')) {
  console.error('usage: consumer.ts <dataDir> <group> <topic> <count> <ack|hold>');
  process.exit(2);
}
const transport = createLogTransport({ dataDir });
const sub = transport.subscribe({ group, topics: [topic], startFrom: 'earliest' });
const readiness = setInterval(() => {
  if (sub.assignments().length === 0) return;
  clearInterval(readiness);
  console.log(`ready ${sub.memberId} ${process.pid}`);
}, 2);
const decoder = new TextDecoder();
let received = 0;
for await (const delivery of sub) {
  const { partition, offset, key, deliveryCount } = delivery;
  console.log(
    JSON.stringify({ partition, offset, key, value: decoder.decode(delivery.value), deliveryCount }),
  );
  if (mode === 'ack') delivery.ack();
  if (++received === count && mode === 'ack') break;
}
await transport.close();
