// A consumer process for the crash tests: handles ReadingRecorded events of <topic> in <group> through the bus on the
// embedded log, with the lease and concurrency given, and records each handled event as one line
// "<pid> <key> <seq> <partition> <offset> <deliveryCount>", written synchronously: first appended to <appendFile>
// when one is given (opened with O_APPEND, one write per line), then to stdout. With record "start" the line is
// written when the handler starts, with "end" when it finishes (just before the bus acknowledges the event). The
// handler waits a random 0 to <maxDelayMs> ms in between, so that several keys are in flight. Prints "loaded <pid>",
// waits for a line "go" on stdin, then opens the log and prints "ready <pid>". Runs until killed.
//   node --import tsx --conditions=tidings-source consumer.ts '<JSON options>'
import * as fs from 'node:fs';
import { createBus, createConsoleLogger } from '../../src/index.js';
import { createLogTransport } from '../../src/log/index.js';
import { readingOn } from './events.js';
import { waitForGo } from './go.js';
import { writeLine } from './write-line.js';

interface Options {
  dataDir: string;
  topic: string;
  group: string;
  concurrency: number;
  leaseMs: number;
  heartbeatIntervalMs: number;
  maxDelayMs: number;
  record: 'start' | 'end';
  appendFile?: string;
}

const options = JSON.parse(process.argv[2] ?? '{}') as Options;
if (!options.dataDir || !options.topic || !options.group) {
  console.error(`usage: consumer.ts '{"dataDir":..., "topic":..., "group":..., ...}'`);
  process.exit(2);
}
await waitForGo();
const appendFd = options.appendFile === undefined ? undefined : fs.openSync(options.appendFile, 'a');

const transport = createLogTransport({
  dataDir: options.dataDir,
  leaseMs: options.leaseMs,
  heartbeatIntervalMs: options.heartbeatIntervalMs,
});
const bus = createBus({ service: 'crash-consumer', transport, logger: createConsoleLogger('warn') });
const Reading = readingOn(options.topic);

const record = (line: string) => {
  if (appendFd !== undefined) writeLine(appendFd, line);
  writeLine(1, line);
};

const consumer = bus.handle(
  options.group,
  [Reading],
  async (message, ctx) => {
    const line = `${process.pid} ${message.data.key} ${message.data.seq} ${ctx.partition} ${ctx.offset} ${ctx.deliveryCount}\n`;
    if (options.record === 'start') record(line);
    const delayMs = Math.floor(Math.random() * (options.maxDelayMs + 1));
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    if (options.record === 'end') record(line);
  },
  { concurrency: options.concurrency, startFrom: 'earliest' },
);
writeLine(1, `ready ${process.pid}\n`);

const stopped = await consumer.closed;
fs.writeSync(2, `consumer stopped: ${stopped ? (stopped.stack ?? stopped.message) : 'closed'}\n`);
process.exit(1);
