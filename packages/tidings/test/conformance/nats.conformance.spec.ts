// The NATS JetStream transport through the conformance suite, on the shared server (127.0.0.1:4222) under a prefix of
// this run (removed afterwards), with the SIGKILL case in a real child process and the restart cases on a private
// nats-server the suite kills and starts itself.
import { fileURLToPath } from 'node:url';
import { connect } from '@nats-io/transport-node';
import { afterAll, describe, it } from 'vitest';
import { runTransportConformance, type ConformanceCase } from 'tidings/conformance';
import { createNatsTransport } from 'tidings/nats';
import {
  brokerMissing,
  prefixVariable,
  privateBrokerMissing,
  removePrefix,
  serverUrl,
  startPrivateNats,
  testOptions,
  uniquePrefix,
} from './children/nats.js';

const missing = await brokerMissing();

/** A 1 MiB event with its headers, as the suite's big-event case sends it, plus NATS header framing. */
const bigEventWireBytes = 1024 * 1024 + 16 * 1024 + 1024;

/** The shared server's max_payload: the largest message it accepts, headers included. */
async function serverMaxPayload(): Promise<number> {
  const nc = await connect({ servers: serverUrl, maxReconnectAttempts: 0 });
  try {
    return nc.info?.max_payload ?? 0;
  } finally {
    await nc.close();
  }
}

if (missing !== undefined) {
  describe('nats', () => {
    it.skip(`conformance — skipped: ${missing}`, () => undefined);
  });
} else {
  const prefix = uniquePrefix('conf');
  afterAll(() => removePrefix(prefix), 60_000);
  const maxPayload = await serverMaxPayload();
  const skip: Partial<Record<ConformanceCase, string>> = {};
  if (maxPayload < bigEventWireBytes) {
    skip['a 1 MiB event round trips'] =
      `the server's max_payload is ${maxPayload} bytes for a whole NATS message, headers included (nats-server's ` +
      `default is 1 MiB), so a 1 MiB event with its headers cannot be one message; JetStream has no larger unit. ` +
      `Raise max_payload in the server config (up to 64 MiB) to pass this case.`;
  }
  const noPrivateBroker = privateBrokerMissing();
  runTransportConformance({
    name: 'nats',
    create: async () => {
      const transport = createNatsTransport({ servers: serverUrl, prefix, ...testOptions });
      await transport.connect();
      return transport;
    },
    childProcess: {
      module: fileURLToPath(new URL('./children/nats.ts', import.meta.url)),
      env: { [prefixVariable]: prefix },
    },
    ...(noPrivateBroker === undefined
      ? {
          privateBroker: async () => {
            const server = await startPrivateNats();
            return {
              url: server.url,
              create: () => createNatsTransport({ servers: server.url, prefix, ...testOptions }),
              start: () => server.start(),
              stop: () => server.stop(),
              dispose: () => server.dispose(),
            };
          },
        }
      : {}),
    skip,
    timeoutMs: 60_000,
  });
}
