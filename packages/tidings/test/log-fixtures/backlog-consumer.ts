// Drains <count> records of <topic> in the log at <dataDir> with a raw subscription (a new group, from 'earliest'),
// acking each, and prints one JSON line: the resident set size before subscribing and its peak while draining.
//   node --import tsx --conditions=tidings-source backlog-consumer.ts <dataDir> <topic> <count>
import { createLogTransport } from '../../src/log/index.js';

const [dataDir, topic, countArg] = process.argv.slice(2);
const count = Number(countArg);
if (!dataDir || !topic || !Number.isInteger(count)) {
  console.error('usage: backlog-consumer.ts <dataDir> <topic> <count>');
  process.exit(2);
}
const transport = createLogTransport({ dataDir });
const baselineRss = process.memoryUsage.rss();
let peakRss = baselineRss;
let received = 0;
const sub = transport.subscribe({ group: 'backlog', topics: [topic], startFrom: 'earliest' });
for await (const delivery of sub) {
  delivery.ack();
  if (++received % 500 === 0) peakRss = Math.max(peakRss, process.memoryUsage.rss());
  if (received === count) break;
}
peakRss = Math.max(peakRss, process.memoryUsage.rss());
await transport.close();
console.log(JSON.stringify({ received, baselineRss, peakRss }));
