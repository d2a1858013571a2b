// The in-memory transport through the conformance suite. It is in-process: every `create()` is a broker of its own.
import { createMemoryTransport } from 'tidings';
import { runTransportConformance } from 'tidings/conformance';

const inProcess = 'in-process: no separate process or broker to kill';

runTransportConformance({
  name: 'memory',
  create: () => createMemoryTransport(),
  isolatedInstances: true,
  skip: {
    'a killed consumer process gets its uncommitted events again': inProcess,
    'a broker restart during a stream loses nothing acknowledged': inProcess,
    'a broker down at start-up gives a clear error and the bus reconnects': inProcess,
  },
});
