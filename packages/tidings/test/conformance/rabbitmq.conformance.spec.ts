// The RabbitMQ transport through the conformance suite, on the shared broker (127.0.0.1:5672), with the SIGKILL case
// in a real child process and the restart cases on a private RabbitMQ node the suite kills and starts itself.
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { runTransportConformance } from 'tidings/conformance';
import { createRabbitMqTransport } from 'tidings/rabbitmq';
import {
  brokerMissing,
  brokerUrl,
  createTransport,
  namePrefix,
  prefixVariable,
  privateBrokerMissing,
  finishRun,
  registerRun,
  startPrivateRabbitMq,
  testOptions,
} from './children/rabbitmq.js';

const missing = await brokerMissing();

if (missing !== undefined) {
  describe('rabbitmq', () => {
    it.skip(`conformance — skipped: ${missing}`, () => undefined);
  });
} else {
  const noPrivateBroker = privateBrokerMissing();
  // Everything this run declared on the shared broker goes when it ends (and what crashed runs left, when one starts).
  beforeAll(() => registerRun(brokerUrl, namePrefix), 120_000);
  afterAll(() => finishRun(brokerUrl, namePrefix), 120_000);
  runTransportConformance({
    name: 'rabbitmq',
    create: () => createTransport(),
    childProcess: {
      module: fileURLToPath(new URL('./children/rabbitmq.ts', import.meta.url)),
      env: { [prefixVariable]: namePrefix },
    },
    ...(noPrivateBroker === undefined
      ? {
          privateBroker: async () => {
            const node = await startPrivateRabbitMq();
            return {
              url: node.url,
              create: () =>
                createRabbitMqTransport({ url: node.url, ...testOptions, connectTimeoutMs: 2_000 }),
              start: () => node.start(),
              stop: () => node.stop(),
              dispose: () => node.dispose(),
            };
          },
        }
      : {}),
    timeoutMs: 90_000,
  });
}
