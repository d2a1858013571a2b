// `npm run bench` (or `npm run bench -- --json`): every figure beside the peer it is compared with in this run.
import { parseArgs } from 'node:util';
import { benchMemory } from './memory.js';
import { report } from './report.js';

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    events: { type: 'string', default: '100000' },
    runs: { type: 'string', default: '3' },
  },
});
const events = Number(values.events);
const runs = Number(values.runs);
if (!Number.isInteger(events) || events < 1000 || !Number.isInteger(runs) || runs < 1) {
  console.error('--events must be a whole number >= 1000 and --runs >= 1');
  process.exit(2);
}
if (!values.json) console.log(`Tidings benchmarks: ${events} events of ~256 bytes, median of ${runs} runs\n`);
report(await benchMemory(events, runs), values.json);
