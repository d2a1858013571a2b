// Child process of the "between processes" latency case:
//   node --import tsx --conditions=tidings-source bench/log-consumer.ts <dataDir> <count> <warmup>
// Handles ProbeSent events from the embedded log in <dataDir> through `bus.handle`, prints "ready" once the consumer
// runs, then, after <count> events, one line with the JSON array of publish→handler latencies (ms) of the events
// whose seq is at least <warmup>, measured with the same wall clock as the publisher (`wallClockMs`).
import { createBus, silentLogger } from 'tidings';
import { createLogTransport } from 'tidings/log';
import { Probed, wallClockMs } from './events.js';

const [dataDir, countArg, warmupArg] = process.argv.slice(2);
const count = Number(countArg);
const warmup = Number(warmupArg);
if (!dataDir || !Number.isInteger(count) || !Number.isInteger(warmup)) {
  console.error('usage: log-consumer.ts <dataDir> <count> <warmup>');
  process.exit(2);
}

const transport = createLogTransport({ dataDir, durability: 'fsync' });
const bus = createBus({ service: 'bench-consumer', transport, logger: silentLogger });
const latencies: number[] = [];
let seen = 0;
let done!: () => void;
const finished = new Promise<void>((resolve) => (done = resolve));
bus.handle(
  'latency',
  [Probed],
  (event) => {
    const at = wallClockMs();
    if (event.data.seq >= warmup) latencies.push(at - event.data.sentAt);
    if (++seen === count) done();
  },
  { concurrency: 64, retry: false },
);
process.stdout.write('ready\n');
await finished;
process.stdout.write(`${JSON.stringify(latencies)}\n`);
await bus.close();
await transport.close();
