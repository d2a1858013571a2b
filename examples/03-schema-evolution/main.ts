// Schema evolution: one event type through three versions on the embedded log, with a schema registry in the same
// data directory. Run it: npm run schema-evolution -w examples. It works in a temporary directory it deletes; with
// `-- --data-dir DIR` (a new or empty directory) it keeps the log and registry.db there, for `tidings serve`.
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createBus, isTidingsError, silentLogger, type EventDefinition, type Receipt } from 'tidings';
import { createLogTransport } from 'tidings/log';
import {
  createSchemaRegistry,
  createSqliteSchemaStore,
  formatViolation,
  type CompatibilityViolation,
} from 'tidings/registry';
import { OrderPlacedV1, OrderPlacedV2, OrderPlacedV3, OrderPlacedV4 } from './events.js';

const { values: args } = parseArgs({ options: { 'data-dir': { type: 'string' } } });
const keep = args['data-dir'] !== undefined;
const dataDir = keep ? resolve(args['data-dir']!) : mkdtempSync(join(tmpdir(), 'tidings-schema-evolution-'));
if (keep) {
  mkdirSync(dataDir, { recursive: true });
  if (readdirSync(dataDir).length > 0) {
    console.error(`--data-dir ${dataDir} is not empty; give a new or empty directory`);
    process.exit(2);
  }
}
// The registry lives beside the log, in registry.db; `tidings serve --data-dir <dir>` serves it over HTTP.
const registry = createSchemaRegistry({ store: createSqliteSchemaStore({ dataDir }) });

/** One deployment of the order service: a bus on the shared data directory, guarded by the registry. */
async function deploy<T>(run: (bus: ReturnType<typeof createBus>) => Promise<T>): Promise<T> {
  const transport = createLogTransport({ dataDir });
  const bus = createBus({ service: 'orders', transport, registry, logger: silentLogger });
  try {
    return await run(bus);
  } finally {
    await bus.close();
    await transport.close();
  }
}

const receipts: Receipt[] = [];
const publish = (event: EventDefinition, data: object) =>
  deploy(async (bus) => void receipts.push(await bus.publish(event, data as never)));

// 1. Three releases over time, each writing with its own version.
await publish(OrderPlacedV1, { orderId: 'o-1', amount: 12.5 });
await publish(OrderPlacedV1, { orderId: 's-2', amount: 30 });
await publish(OrderPlacedV2, { orderId: 'o-3', amount: 99, currency: 'USD' });
await publish(OrderPlacedV3, { orderId: 'o-4', amount: 7.25, currency: 'EUR', channel: 'store' });
console.log(
  `registry: OrderPlaced versions ${(await registry.versions('OrderPlaced')).join(', ')} (BACKWARD)`,
);

// 2. The breaking v4 is refused before anything is written.
await deploy(async (bus) => {
  try {
    await bus.publish(OrderPlacedV4, { orderId: 'o-5', amountCents: 500 });
    throw new Error('v4 should have been refused');
  } catch (error) {
    if (!isTidingsError(error, 'SCHEMA_INCOMPATIBLE')) throw error;
    console.log(`v4 refused: ${error.code}`);
    for (const violation of error.details['violations'] as CompatibilityViolation[])
      console.log(`  ${formatViolation(violation)}`);
  }
});

// 3. A new consumer group replays the whole history with the v3 definition: every event arrives as v3.
await deploy(async (bus) => {
  const seen: string[] = [];
  const analytics = bus.handle('analytics', [OrderPlacedV3], ({ data }, ctx) => {
    seen.push(
      `v${ctx.envelope.schemaversion} ${data.orderId} → ${data.amount} ${data.currency} via ${data.channel ?? '?'}`,
    );
  });
  await analytics.waitFor(receipts);
  for (const line of seen.sort((a, b) => a.slice(3).localeCompare(b.slice(3))))
    console.log(`replayed ${line}`);
  if (seen.length !== 4 || seen.some((line) => line.endsWith('?'))) throw new Error('replay did not upcast');
});

await registry.close();
if (keep)
  console.log(`kept the log and registry in ${dataDir}; serve them: npx tidings serve --data-dir ${dataDir}`);
else rmSync(dataDir, { recursive: true, force: true });
console.log('schema evolution ok');
