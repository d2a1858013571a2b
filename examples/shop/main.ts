// The Tidings shop demo. An order service and six consumer services run as separate processes sharing the
// embedded log in ./.tidings: email goes down and catches up, a late recommendations group backfills from the
// start, and the warehouse parks a poison order that an operator request then skips.
// Run it with `npm start`; options: `npm start -- --help`.
import { fork, type ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { decodeEnvelope, isTidingsError } from 'tidings';
import { createLogTransport } from 'tidings/log';
import { POISON_ORDER, eventsFor } from './catalog.js';
import type { FromService, ServiceStats, ToService } from './protocol.js';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const { values: args } = parseArgs({
  options: {
    orders: { type: 'string', default: '40' },
    'data-dir': { type: 'string', default: `${repoRoot}.tidings` },
    'keep-running': { type: 'boolean', default: false },
    quiet: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(`Usage: npm start -- [options]

The Tidings shop: an order service publishes OrderPlaced, PaymentReceived and OrderShipped; email, analytics,
warehouse, loyalty, fraud-detection and (late) recommendations consume in their own groups, each in its own
process, all sharing the embedded log. The data directory is emptied at the start of each run.

Options:
  --orders N         orders to place (default 40; 10 to 10000)
  --data-dir DIR     the embedded log's directory (default ./.tidings at the repository root)
  --keep-running     after the checks, keep placing an order a second until Ctrl-C
  --quiet            print only the summary and the verdict
  -h, --help         show this help

Afterwards, look inside with the CLI: npx tidings groups lag, npx tidings tail orders --from earliest, and the
npx tidings trace command the demo prints at the end (the flow of the poison order).`);
  process.exit(0);
}
const orderCount = Number(args.orders);
if (!Number.isInteger(orderCount) || orderCount < 10 || orderCount > 10_000) {
  console.error(`--orders must be a whole number from 10 to 10000, got "${args.orders}"`);
  process.exit(2);
}
const dataDir = args['data-dir'];
const say = (line: string) => {
  if (!args.quiet) console.log(line);
};
const checks: Array<{ name: string; ok: boolean }> = [];
const check = (name: string, ok: boolean) => checks.push({ name, ok });
const started = performance.now();

// --- processes ------------------------------------------------------------------------------------------------------
/** Every service process still running; none outlives the demo, however it ends. */
const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});
interface Service {
  name: string;
  child: ChildProcess;
  waitFor<K extends FromService['kind']>(kind: K): Promise<Extract<FromService, { kind: K }>>;
  send(message: ToService): void;
  stop(): Promise<void>;
}

function startService(name: string): Promise<Service> {
  const file = fileURLToPath(
    new URL(
      name === 'order-service' ? './services/order-service.ts' : './services/consumer.ts',
      import.meta.url,
    ),
  );
  const child = fork(file, name === 'order-service' ? [] : [name], {
    execArgv: ['--import', 'tsx', '--conditions=tidings-source'],
    // Services log only errors: the demo narrates retries and parking itself.
    env: {
      ...process.env,
      TIDINGS_DATA_DIR: dataDir,
      TIDINGS_LOG_LEVEL: process.env.TIDINGS_LOG_LEVEL ?? 'error',
    },
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  const waiters: Array<{ kind: string; resolve: (message: FromService) => void }> = [];
  child.on('message', (message: FromService) => {
    if (message.kind === 'log') return say(message.line);
    const index = waiters.findIndex((w) => w.kind === message.kind);
    if (index >= 0) waiters.splice(index, 1)[0]!.resolve(message);
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  const service: Service = {
    name,
    child,
    waitFor: (kind) =>
      new Promise((resolve, reject) => {
        waiters.push({ kind, resolve: resolve as (message: FromService) => void });
        void exited.then((code) =>
          reject(new Error(`${name} exited (code ${code}) while we waited for "${kind}"`)),
        );
      }),
    send: (message) => child.send(message),
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
  return service.waitFor('ready').then(() => service);
}

// --- the run --------------------------------------------------------------------------------------------------------
await rm(dataDir, { recursive: true, force: true });
const log = createLogTransport({ dataDir }); // the orchestrator's own view: lag, parked keys, operator requests
await log.admin.createTopic('orders', { partitions: 4 });
say(`shop: a fresh embedded log in ${dataDir}, topic "orders" with 4 partitions`);

const groups = ['email', 'analytics', 'warehouse', 'loyalty', 'fraud-detection'];
const services = new Map<string, Service>();
for (const service of await Promise.all(groups.map(startService))) services.set(service.name, service);
const orders = await startService('order-service');
say(`shop: ${groups.join(', ')} and the order service are running, each in its own process`);

/** The group's total lag; Infinity while its first member has not joined yet. */
async function totalLag(group: string): Promise<number> {
  try {
    return (await log.admin.describeGroup(group)).lag.reduce((sum, partition) => sum + partition.lag, 0);
  } catch (error) {
    if (isTidingsError(error, 'NOT_FOUND')) return Number.POSITIVE_INFINITY;
    throw error;
  }
}
async function waitForLagZero(names: readonly string[], what: string): Promise<void> {
  const deadline = performance.now() + 30_000;
  for (;;) {
    const lags = await Promise.all(names.map(totalLag));
    if (lags.every((lag) => lag === 0)) return;
    if (performance.now() > deadline)
      throw new Error(
        `${what}: groups still behind after 30 s: ${names.map((n, i) => `${n}=${lags[i]}`).join(', ')}`,
      );
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
async function statsOf(service: Service): Promise<ServiceStats> {
  const reply = service.waitFor('stats');
  service.send({ kind: 'stats' });
  return (await reply).stats;
}

const half = Math.floor(orderCount / 2);
say(`order-service: placing orders 1..${half}`);
orders.send({ kind: 'place', from: 1, to: half + 1 });
await orders.waitFor('placed');
await waitForLagZero(groups, 'first half');
const emailBefore = await statsOf(services.get('email')!);
say(`email: sent ${emailBefore.processed} emails so far`);

say('email: going down for maintenance; its group keeps its committed offsets');
await services.get('email')!.stop();
say(`order-service: placing orders ${half + 1}..${orderCount} while email is down`);
orders.send({ kind: 'place', from: half + 1, to: orderCount + 1 });
await orders.waitFor('placed');
orders.send({ kind: 'duplicate-payment' });
await orders.waitFor('placed');
say('order-service: re-published one PaymentReceived with its original id (a producer retry)');
await waitForLagZero(
  groups.filter((g) => g !== 'email'),
  'second half',
);
const emailLag = await totalLag('email');
say(`email: still down, ${emailLag} events behind, nothing lost`);
check('email fell behind while it was down', emailLag > 0);

services.set('email', await startService('email'));
say('email: back up, catching up from its committed offsets');
await waitForLagZero(['email'], 'email catch-up');
const emailAfter = await statsOf(services.get('email')!);
say(`email: caught up, ${emailAfter.processed} emails sent after the outage`);

services.set('recommendations', await startService('recommendations'));
say('recommendations: a new group joins late and replays the log from the start');
await waitForLagZero(['recommendations'], 'recommendations backfill');
const recs = await statsOf(services.get('recommendations')!);
say(`recommendations: backfilled ${recs.processed} OrderPlaced events written before it existed`);

const [parked] = await log.stores.parking.list('warehouse');
say(
  `warehouse: key ${parked?.key} is parked after ${parked?.attempts} attempts (${parked?.error}); ${parked?.events.length ?? 0} event(s) held`,
);
check('the poison order is parked in the warehouse', parked?.key === POISON_ORDER);
// The poison order's flow, for `tidings trace`: a flow's correlation id is the id of its first event (here the
// parked OrderPlaced), which every later event of the order carries.
const poisonEvent = parked?.events[0] === undefined ? undefined : decodeEnvelope(parked.events[0]);
const poisonFlow = poisonEvent?.correlationid ?? poisonEvent?.id;
const requestId = await log.stores.requests.add({
  kind: 'skip-parked',
  group: 'warehouse',
  topic: 'orders',
  key: POISON_ORDER,
});
say(
  `operator: asked the warehouse to skip the poison event (request ${requestId}, as \`npx tidings parked skip\` does)`,
);
const deadline = performance.now() + 15_000;
let outcome: { ok: boolean; message: string } | undefined;
while (!outcome && performance.now() < deadline) {
  outcome = (await log.stores.requests.get(requestId))?.outcome;
  if (!outcome) await new Promise((resolve) => setTimeout(resolve, 50));
}
say(`warehouse: ${outcome?.message ?? 'did not answer the request in 15 s'}`);
check('the warehouse carried out the skip request', outcome?.ok === true);
check('nothing is parked any more', (await log.stores.parking.list()).length === 0);

// --- summary --------------------------------------------------------------------------------------------------------
const names = [...groups, 'recommendations'];
const rows = [['group', 'processed', 'lag', 'duplicates suppressed', 'parked during run']];
let lagSum = 0;
const all = new Map<string, ServiceStats>();
for (const name of names) {
  const stats = await statsOf(services.get(name)!);
  if (name === 'email') stats.processed += emailBefore.processed; // both runs of the email service
  all.set(name, stats);
  const lag = await totalLag(name);
  lagSum += lag;
  rows.push([name, String(stats.processed), String(lag), String(stats.duplicates), String(stats.parked)]);
}
const widths = rows[0]!.map((_, col) => Math.max(...rows.map((row) => row[col]!.length)));
console.log('');
for (const row of rows)
  console.log(
    row.map((cell, col) => (col === 0 ? cell.padEnd(widths[col]!) : cell.padStart(widths[col]!))).join('  '),
  );
console.log('');

const placed = orderCount;
const shipped = Math.floor(orderCount / 2);
check('every group is at lag 0', lagSum === 0);
check(
  'email handled every OrderPlaced and OrderShipped across its outage',
  (all.get('email')?.processed ?? 0) >= placed + shipped,
);
check(
  'analytics handled every order and payment (and the duplicate payment, having no inbox)',
  (all.get('analytics')?.processed ?? 0) >= placed * 2 + 1,
);
check('loyalty suppressed the duplicate payment', (all.get('loyalty')?.duplicates ?? 0) >= 1);
check('recommendations replayed every OrderPlaced', (all.get('recommendations')?.processed ?? 0) >= placed);
check('the order service wrote the expected events', eventsFor(1, orderCount + 1) === placed * 2 + shipped);

if (args['keep-running']) {
  say('shop: keeping the services running; an order a second. Ctrl-C to stop.');
  let next = orderCount + 1;
  const timer = setInterval(() => orders.send({ kind: 'place', from: next, to: ++next }), 1000);
  await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
  clearInterval(timer);
}

await Promise.all([...services.values(), orders].map((service) => service.stop()));
await log.close();
const failed = checks.filter((c) => !c.ok);
for (const c of failed) console.log(`check failed: ${c.name}`);
say(
  `shop: finished in ${((performance.now() - started) / 1000).toFixed(1)} s; try \`npx tidings groups lag\``,
);
const dataDirOption =
  dataDir === `${repoRoot}.tidings`
    ? ''
    : ` --data-dir ${/[\s'"]/.test(dataDir) ? JSON.stringify(dataDir) : dataDir}`;
if (poisonFlow !== undefined)
  say(`shop: ${POISON_ORDER}'s flow (parked, then skipped): npx tidings trace ${poisonFlow}${dataDirOption}`);
if (failed.length > 0) {
  console.log('demo failed');
  process.exit(1);
}
console.log('demo ok');
