/**
 * The child process of the SIGKILL case, started by the suite as
 * `node --import tsx --conditions=tidings-source child.ts '<json>'` with
 * `{ module, exportName, group, topic, ackFirst }`. It creates the transport with `module`'s export, joins `group`
 * on `topic` from the earliest record, acknowledges its first `ackFirst` deliveries and holds every later one
 * unsettled, printing one JSON line per delivery, until it is killed.
 */
import { isAbsolute } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Transport } from '../core/transport.js';

interface ChildConfig {
  module: string;
  exportName: string;
  group: string;
  topic: string;
  ackFirst: number;
}

const config = JSON.parse(process.argv[2] ?? '{}') as Partial<ChildConfig>;
if (
  typeof config.module !== 'string' ||
  !isAbsolute(config.module) ||
  typeof config.exportName !== 'string' ||
  typeof config.group !== 'string' ||
  typeof config.topic !== 'string' ||
  !Number.isInteger(config.ackFirst)
) {
  console.error(`conformance child: bad configuration ${process.argv[2] ?? '(none)'}`);
  process.exit(2);
}
const imported = (await import(pathToFileURL(config.module).href)) as Record<string, unknown>;
const factory = imported[config.exportName];
if (typeof factory !== 'function') {
  console.error(`conformance child: ${config.module} has no exported function "${config.exportName}"`);
  process.exit(2);
}
const transport = await (factory as () => Transport | Promise<Transport>)();
// Stay alive while holding deliveries, whatever the transport keeps (or does not keep) open: only SIGKILL ends us.
setInterval(() => undefined, 60_000);
const subscription = transport.subscribe({
  group: config.group,
  topics: [config.topic],
  startFrom: 'earliest',
});
const decoder = new TextDecoder();
let acked = 0;
for await (const delivery of subscription) {
  const ack = acked < config.ackFirst!;
  if (ack) {
    delivery.ack();
    acked++;
  }
  console.log(
    JSON.stringify({
      value: decoder.decode(delivery.value),
      partition: delivery.partition,
      offset: delivery.offset,
      deliveryCount: delivery.deliveryCount,
      acked: ack,
    }),
  );
}
console.error('conformance child: the subscription ended before the process was killed');
process.exit(3);
