// `npm run bench` (or `npm run bench -- --json`): every figure beside the peer it is compared with in this run.
// `--only <substring>` runs the cases whose name contains it (case-insensitive; repeatable).
import { parseArgs } from 'node:util';
import { measureDiskPeers, type DiskPeers } from './disk.js';
import { logCases } from './log.js';
import { benchMemory } from './memory.js';
import { benchNats } from './nats.js';
import { benchOutbox, outboxCaseNames } from './outbox.js';
import { benchPostgres } from './postgres.js';
import { benchRabbitMq } from './rabbitmq.js';
import { benchRedis } from './redis.js';
import { report, result, type BenchResult, type CaseGroup } from './report.js';

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    events: { type: 'string', default: '100000' },
    runs: { type: 'string', default: '3' },
    only: { type: 'string', multiple: true },
  },
});
const events = Number(values.events);
const runs = Number(values.runs);
if (!Number.isInteger(events) || events < 1000 || !Number.isInteger(runs) || runs < 1) {
  console.error('--events must be a whole number >= 1000 and --runs >= 1');
  process.exit(2);
}
const only = (values.only ?? []).map((s) => s.toLowerCase());
const selected = (name: string) => only.length === 0 || only.some((s) => name.toLowerCase().includes(s));

let disk: Promise<DiskPeers> | undefined;
const diskPeers = () => (disk ??= measureDiskPeers(events, runs));

/** DESIGN.md's figures for the disk peers (its 2-core machine): what this machine is compared with. */
const quoted = 'DESIGN.md figure (quoted, not run)';
const groups: CaseGroup[] = [
  {
    names: ['memory: publish via bus (batches of 100)', 'memory: consume via bus.handle'],
    run: () => benchMemory(events, runs),
  },
  {
    names: [
      'disk: 256 B records in 64 KiB appends + fdatasync',
      'disk: one 256 B append + fdatasync (median)',
      'sqlite: raw better-sqlite3, WAL FULL, 1000-row tx',
    ],
    async run() {
      const peers = await diskPeers();
      return [
        result(
          'disk: 256 B records in 64 KiB appends + fdatasync',
          peers.appendFsync,
          'records/s',
          quoted,
          1_000_000,
        ),
        result('disk: one 256 B append + fdatasync (median)', peers.fdatasyncMs, 'ms', quoted, 0.07),
        result('sqlite: raw better-sqlite3, WAL FULL, 1000-row tx', peers.sqlite, 'rows/s', quoted, 332_000),
      ];
    },
  },
];

groups.push(...logCases({ events, runs, diskPeers }));

/** Broker transports against their raw clients; broker events are a fifth of the log's, brokers being slower. */
const brokerEvents = Math.max(1000, Math.floor(events / 5));
groups.push({
  names: [
    'postgres: publish via bus (batches of 100)',
    'postgres: consume via bus.handle',
    'postgres: transport.publish (batches of 100)',
    'postgres: transport.subscribe, ack each',
  ],
  run: () => benchPostgres(brokerEvents, runs),
});
groups.push({
  names: [
    'nats: publish via bus (batches of 100)',
    'nats: consume, transport subscription + ack',
    'nats: consume via bus.handle',
  ],
  run: () => benchNats(brokerEvents, runs),
});
groups.push({
  names: [
    'redis: publish via bus (batches of 100)',
    'redis: consume via bus.handle',
    'redis: transport.publish (batches of 100)',
    'redis: transport.subscribe, ack each',
  ],
  run: () => benchRedis(brokerEvents, runs),
});
groups.push({
  names: ['rabbitmq: publish via bus (batches of 100)', 'rabbitmq: consume via bus.handle'],
  run: () => benchRabbitMq(brokerEvents, runs),
});

groups.push({ names: outboxCaseNames, run: () => benchOutbox(brokerEvents, runs) });

const chosen = groups.filter((group) => group.names.some(selected));
if (chosen.length === 0) {
  console.error(`--only matched no case; the cases are:\n${groups.flatMap((g) => g.names).join('\n')}`);
  process.exit(2);
}
if (!values.json) console.log(`Tidings benchmarks: ${events} events of ~256 bytes, median of ${runs} runs`);
const results: BenchResult[] = [];
for (const group of chosen) {
  const names = group.names.filter(selected);
  const started = performance.now();
  for (const r of await group.run()) if (names.some((name) => r.case.startsWith(name))) results.push(r);
  // Progress on stderr, so that stdout stays the table (or the JSON).
  console.error(
    `  ${group.names[0]}${group.names.length > 1 ? ', ...' : ''}: ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
}
if (!values.json) console.log();
report(results, values.json);
