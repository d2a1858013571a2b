// A publisher process for the crash tests: publishes ReadingRecorded events through the bus on the embedded log in
// <dataDir> (durable mode), <inFlight> publishes at a time, forever, until killed. Each acknowledged event is printed
// as one line "<id> <partition> <offset>", written to stdout synchronously (write-line.ts) once `publish` resolved,
// so that a line the parent read is an event the log acknowledged. Prints "loaded <pid>" once its modules are loaded,
// then waits for a line "go" on stdin before it opens the log, and prints "ready <pid>" before the first publish.
//   node --import tsx --conditions=tidings-source publisher.ts <dataDir> <inFlight>
import * as fs from 'node:fs';
import { createBus, silentLogger } from '../../src/index.js';
import { createLogTransport } from '../../src/log/index.js';
import { ReadingRecorded } from './events.js';
import { waitForGo } from './go.js';
import { writeLine } from './write-line.js';

const [dataDir, inFlightArg] = process.argv.slice(2);
const inFlight = Number(inFlightArg);
if (!dataDir || !Number.isInteger(inFlight) || inFlight < 1) {
  console.error('usage: publisher.ts <dataDir> <inFlight>');
  process.exit(2);
}

await waitForGo();
const transport = createLogTransport({ dataDir, durability: 'fsync' });
const bus = createBus({ service: 'crash-publisher', transport, logger: silentLogger });
writeLine(1, `ready ${process.pid}\n`);

let next = 0;
async function publishForever(): Promise<never> {
  for (;;) {
    const seq = next++;
    const receipt = await bus.publish(ReadingRecorded, { key: `k${seq % 64}`, seq });
    writeLine(1, `${receipt.id} ${receipt.partition} ${receipt.offset}\n`);
  }
}

try {
  await Promise.all(Array.from({ length: inFlight }, () => publishForever()));
} catch (error) {
  fs.writeSync(
    2,
    `publisher failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  process.exit(1);
}
