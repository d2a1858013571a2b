// Child process of the backlog memory case:
//   node --import tsx --conditions=tidings-source bench/log-backlog.ts <dataDir> <count>
// Drains <count> records of the `readings` topic of the embedded log in <dataDir> with a raw subscription (a group
// that starts at the earliest offset, i.e. <count> records behind), sampling this process's RSS every 50 ms, and prints
// one JSON line: { "startRssMb", "peakRssMb", "seconds" }.
import { createLogTransport } from 'tidings/log';
import { Measured } from './events.js';

const [dataDir, countArg] = process.argv.slice(2);
const count = Number(countArg);
if (!dataDir || !Number.isInteger(count)) {
  console.error('usage: log-backlog.ts <dataDir> <count>');
  process.exit(2);
}

const mb = (bytes: number) => bytes / (1024 * 1024);
const transport = createLogTransport({ dataDir, durability: 'fsync' });
const startRssMb = mb(process.memoryUsage.rss());
let peak = process.memoryUsage.rss();
const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 50);
const subscription = transport.subscribe({
  group: 'far-behind',
  topics: [Measured.topic],
  startFrom: 'earliest',
  prefetch: 1024,
});
const started = performance.now();
let seen = 0;
for await (const delivery of subscription) {
  delivery.ack();
  if (++seen === count) break;
}
const seconds = (performance.now() - started) / 1000;
clearInterval(sampler);
peak = Math.max(peak, process.memoryUsage.rss());
await transport.close();
process.stdout.write(`${JSON.stringify({ startRssMb, peakRssMb: mb(peak), seconds })}\n`);
