// The embedded log through the conformance suite. Every `create()` opens the same data directory, so the
// transports of a case act as separate processes on one machine would; the SIGKILL case uses a real child process.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';
import { runTransportConformance } from 'tidings/conformance';
import { createLogTransport } from 'tidings/log';
import { dataDirVariable } from './children/log.js';

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-conformance-log-'));
afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));

const noBroker = "no broker: the log is a library; its crash safety is proven by the log's kill -9 tests";

runTransportConformance({
  name: 'log',
  create: () => createLogTransport({ dataDir }),
  childProcess: {
    module: fileURLToPath(new URL('./children/log.ts', import.meta.url)),
    env: { [dataDirVariable]: dataDir },
  },
  skip: {
    'a broker restart during a stream loses nothing acknowledged': noBroker,
    'a broker down at start-up gives a clear error and the bus reconnects': noBroker,
  },
});
