// The transport of a chaos run: the embedded log in the run directory (shared by every process), or NATS JetStream
// with streams named for the run.
import { join } from 'node:path';
import type { Transport } from 'tidings';
import type { ChaosConfig } from './config.js';

/** The NATS stream prefix of a run. */
export const natsPrefix = (config: ChaosConfig) => `chaos-${config.run}`;

export async function openChaosTransport(config: ChaosConfig): Promise<Transport> {
  if (config.transport === 'nats') {
    const { createNatsTransport } = await import('tidings/nats');
    return createNatsTransport({ servers: config.natsUrl, prefix: natsPrefix(config), leaseMs: 2_000 });
  }
  const { createLogTransport } = await import('tidings/log');
  return createLogTransport({ dataDir: join(config.dir, 'log'), leaseMs: 1_500, heartbeatIntervalMs: 300 });
}
