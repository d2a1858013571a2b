// The PostgreSQL transport through the conformance suite, on the shared server (TIDINGS_POSTGRES_URL, default
// 127.0.0.1:5432/test) in a schema of this run's own, with the SIGKILL case in a real child process and the restart
// cases on a private cluster (initdb in a temp directory, a private port) that the suite kills and starts itself.
import { fileURLToPath } from 'node:url';
import { afterAll, describe, it } from 'vitest';
import { runTransportConformance } from 'tidings/conformance';
import { createPostgresTransport } from 'tidings/postgres';
import {
  brokerMissing,
  dropSchema,
  privateBrokerMissing,
  schemaVariable,
  serverUrl,
  startPrivatePostgres,
  testOptions,
  uniqueSchema,
} from './children/postgres.js';

const missing = await brokerMissing();

if (missing !== undefined) {
  describe('postgres', () => {
    it.skip(`conformance — skipped: ${missing}`, () => undefined);
  });
} else {
  const schema = uniqueSchema('conformance');
  afterAll(() => dropSchema(schema));
  const noPrivateBroker = privateBrokerMissing();
  runTransportConformance({
    name: 'postgres',
    create: () => createPostgresTransport({ url: serverUrl, schema, ...testOptions }),
    childProcess: {
      module: fileURLToPath(new URL('./children/postgres.ts', import.meta.url)),
      env: { [schemaVariable]: schema },
    },
    ...(noPrivateBroker === undefined
      ? {
          privateBroker: async () => {
            const server = await startPrivatePostgres();
            return {
              url: server.url,
              create: () => createPostgresTransport({ url: server.url, ...testOptions }),
              start: () => server.start(),
              stop: () => server.stop(),
              dispose: () => server.dispose(),
            };
          },
        }
      : {}),
    timeoutMs: 90_000,
  });
}
