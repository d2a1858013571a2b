// A producer process: publishes <rounds> rounds to <topic> of the log in <dataDir>; round r is one publish call of
// one record per key k0..k<keys - 1>, valued "<r>". Prints "published <rounds * keys>" and exits.
//   node --import tsx --conditions=tidings-source producer.ts <dataDir> <topic> <rounds> <keys>
import { createLogTransport } from '../../src/log/index.js';

const [dataDir, topic, roundsArg, keysArg] = process.argv.slice(2);
const rounds = Number(roundsArg);
const keys = Number(keysArg);
if (!dataDir || !topic || !Number.isInteger(rounds) || !Number.isInteger(keys)) {
  console.error('usage: producer.ts <dataDir> <topic> <rounds> <keys>');
  process.exit(2);
}
const transport = createLogTransport({ dataDir });
const encoder = new TextEncoder();
for (let round = 0; round < rounds; round++) {
  const records = Array.from({ length: keys }, (_, k) => ({
    key: `k${k}`,
    headers: {},
    value: encoder.encode(`${round}`),
  }));
  await transport.publish(topic, records);
}
await transport.close();
console.log(`published ${rounds * keys}`);
