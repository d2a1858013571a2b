// How a child process of the conformance suite opens the embedded log: on the data directory the spec file names in
// the environment.
import { createLogTransport, type LogTransport } from 'tidings/log';

export const dataDirVariable = 'TIDINGS_CONFORMANCE_LOG_DIR';

export function createTransport(): LogTransport {
  const dataDir = process.env[dataDirVariable];
  if (!dataDir) throw new Error(`set ${dataDirVariable} to the data directory of the log under test`);
  return createLogTransport({ dataDir });
}
