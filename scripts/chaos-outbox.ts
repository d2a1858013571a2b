// `npm run chaos:outbox [-- --cycles N --db postgres|mariadb|sqlite --transport log|nats]`: the transactional
// outbox and inbox under SIGKILL (see chaos-outbox/harness.ts). The last line is
// `chaos ok: cycles=<n> events=<n> lost=0 applied-twice=0 out-of-order=0`; any failure exits 1.
import { parseArgs } from 'node:util';
import { runChaos } from './chaos-outbox/harness.js';

const { values } = parseArgs({
  options: {
    cycles: { type: 'string', default: '30' },
    db: { type: 'string', default: 'postgres' },
    transport: { type: 'string', default: 'log' },
  },
});
const cycles = Number(values.cycles);
const db = values.db === 'mysql' ? 'mariadb' : values.db;
if (!Number.isInteger(cycles) || cycles < 1) {
  console.error('--cycles must be a whole number >= 1');
  process.exit(2);
}
if (db !== 'postgres' && db !== 'mariadb' && db !== 'sqlite') {
  console.error(`--db must be postgres, mariadb or sqlite, got ${db}`);
  process.exit(2);
}
if (values.transport !== 'log' && values.transport !== 'nats') {
  console.error(`--transport must be log or nats, got ${values.transport}`);
  process.exit(2);
}

const result = await runChaos({
  db,
  transport: values.transport,
  cycles,
  log: (line) => console.log(line),
});
console.log(
  `kills: producers ${result.kills.producer}, relays ${result.kills.relay}, consumers ${result.kills.consumer}; ` +
    `re-published copies ${result.republished} (dropped by the inbox); unexpected exits ${result.unexpectedExits}; leaked ${result.leaked}`,
);
console.log(result.line);
process.exit(result.ok ? 0 : 1);
