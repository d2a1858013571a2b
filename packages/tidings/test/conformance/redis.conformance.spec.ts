// The Redis Streams transport through the conformance suite, on the shared server (TIDINGS_REDIS_URL, default
// redis://127.0.0.1:6379) under a key prefix of this run (removed afterwards), with the SIGKILL case in a real child
// process and the restart cases on a private redis-server (AOF with appendfsync always, in a temp directory) that
// the suite kills and starts itself.
import { fileURLToPath } from 'node:url';
import { afterAll, describe, it } from 'vitest';
import { runTransportConformance } from 'tidings/conformance';
import { createRedisTransport } from 'tidings/redis';
import {
  brokerMissing,
  prefixVariable,
  privateBrokerMissing,
  removePrefix,
  serverUrl,
  startPrivateRedis,
  testOptions,
  uniquePrefix,
} from './children/redis.js';

const missing = await brokerMissing();

if (missing !== undefined) {
  describe('redis', () => {
    it.skip(`conformance — skipped: ${missing}`, () => undefined);
  });
} else {
  const prefix = uniquePrefix('conf');
  afterAll(() => removePrefix(prefix), 60_000);
  const noPrivateBroker = privateBrokerMissing();
  runTransportConformance({
    name: 'redis',
    create: () => createRedisTransport({ url: serverUrl, keyPrefix: prefix, ...testOptions }),
    childProcess: {
      module: fileURLToPath(new URL('./children/redis.ts', import.meta.url)),
      env: { [prefixVariable]: prefix },
    },
    ...(noPrivateBroker === undefined
      ? {
          privateBroker: async () => {
            const server = await startPrivateRedis();
            return {
              url: server.url,
              // The private server runs with appendonly yes and appendfsync always: it is persistent.
              create: () => createRedisTransport({ url: server.url, persistent: true, ...testOptions }),
              start: () => server.start(),
              stop: () => server.stop(),
              dispose: () => server.dispose(),
            };
          },
        }
      : {}),
    timeoutMs: 60_000,
  });
}
