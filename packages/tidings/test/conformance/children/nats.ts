// How the NATS conformance spec and tests reach a server: the shared one (TIDINGS_NATS_URL, default
// nats://127.0.0.1:4222), whether it is up, a name prefix of their own on it (removed afterwards), and private
// nats-server instances (their own port and store directory) that they can kill and start again. Also the child
// module of the SIGKILL case: `createTransport` opens the transport on the shared server, under the prefix the spec
// names in the environment.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { createNatsTransport, type NatsTransport, type NatsTransportOptions } from 'tidings/nats';

export const serverUrl = process.env['TIDINGS_NATS_URL'] ?? 'nats://127.0.0.1:4222';

/** The environment variable naming the prefix a child process uses. */
export const prefixVariable = 'TIDINGS_CONFORMANCE_NATS_PREFIX';

/**
 * Options that keep tests quick and light: a short lease so a killed member is replaced within seconds, a short
 * rebalance timeout, quick request timeouts against a local server.
 */
export const testOptions: Omit<NatsTransportOptions, 'servers' | 'prefix'> = {
  leaseMs: 4_000,
  heartbeatIntervalMs: 500,
  rebalanceTimeoutMs: 10_000,
  requestTimeoutMs: 3_000,
};

/** The transport of a child process of the SIGKILL case. */
export function createTransport(): NatsTransport {
  const prefix = process.env[prefixVariable];
  if (!prefix) throw new Error(`set ${prefixVariable} to the name prefix of the NATS transport under test`);
  return createNatsTransport({ servers: serverUrl, prefix, ...testOptions });
}

/** A prefix no other test run uses: every stream, subject and bucket of the run carries it. */
export function uniquePrefix(label: string): string {
  return `t${label}-${randomBytes(4).toString('hex')}`;
}

/** Deletes every stream of a prefix (its topics and its group bucket) on `url`. */
export async function removePrefix(prefix: string, url = serverUrl): Promise<void> {
  const nc = await connect({ servers: url, maxReconnectAttempts: 0 });
  try {
    const jsm = await jetstreamManager(nc);
    const doomed: string[] = [];
    for await (const name of jsm.streams.names()) {
      if (name.startsWith(`${prefix}_`) || name === `KV_${prefix}-groups`) doomed.push(name);
    }
    for (let i = 0; i < doomed.length; i += 16) {
      await Promise.all(doomed.slice(i, i + 16).map((name) => jsm.streams.delete(name).catch(() => false)));
    }
  } finally {
    await nc.close();
  }
}

async function reachable(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (up: boolean) => {
      socket.destroy();
      resolve(up);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * Why the NATS tests cannot run here, or undefined if the shared server is up. With TIDINGS_REQUIRE_BROKERS=1 a
 * missing server is an error instead (CI must not pass by skipping).
 */
export async function brokerMissing(): Promise<string | undefined> {
  const url = new URL(serverUrl);
  const port = Number(url.port || 4222);
  if (await reachable(url.hostname, port)) return undefined;
  const reason = `nats-server is not reachable at ${url.hostname}:${port} (start it with 'nats-server -js -a 127.0.0.1', or set TIDINGS_NATS_URL)`;
  if (process.env['TIDINGS_REQUIRE_BROKERS'] === '1')
    throw new Error(`TIDINGS_REQUIRE_BROKERS=1 but ${reason}`);
  return reason;
}

const serverBinary = process.env['TIDINGS_NATS_SERVER'] ?? '/usr/sbin/nats-server';

/**
 * Why a private nats-server cannot be started here, or undefined if it can. With TIDINGS_REQUIRE_BROKERS=1 a missing
 * binary is an error instead.
 */
export function privateBrokerMissing(): string | undefined {
  if (fs.existsSync(serverBinary)) return undefined;
  const reason = `no ${serverBinary} on this machine (set TIDINGS_NATS_SERVER): a private nats-server cannot be started`;
  if (process.env['TIDINGS_REQUIRE_BROKERS'] === '1')
    throw new Error(`TIDINGS_REQUIRE_BROKERS=1 but ${reason}`);
  return reason;
}

/** A nats-server of the test's own, on a private port, with its JetStream store in a temp directory. */
export interface PrivateNats {
  readonly url: string;
  readonly port: number;
  /** Starts it (again, on the same port and store); resolves once JetStream answers. */
  start(): Promise<void>;
  /** Kills it (SIGKILL, as a crash would); resolves once it exited. */
  stop(): Promise<void>;
  /** Kills it and removes its store. */
  dispose(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

/** Starts a private nats-server with JetStream (`-js -a 127.0.0.1 -p <port> -sd <tmp>`); resolves once it answers. */
export async function startPrivateNats(): Promise<PrivateNats> {
  const port = await freePort();
  const storeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-nats-'));
  const url = `nats://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let output = '';

  const start = async () => {
    if (child !== undefined) return;
    const started = spawn(serverBinary, ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', storeDir], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child = started;
    started.stderr?.setEncoding('utf8');
    started.stderr?.on('data', (chunk: string) => {
      output = (output + chunk).slice(-8_192);
    });
    exited = new Promise<void>((resolve) => started.once('exit', () => resolve()));
    void exited.then(() => {
      if (child === started) child = undefined;
    });
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (child !== started) throw new Error(`nats-server on port ${port} exited while starting: ${output}`);
      try {
        const nc = await connect({ servers: url, maxReconnectAttempts: 0, timeout: 1_000 });
        try {
          await (await jetstreamManager(nc)).getAccountInfo();
          return;
        } finally {
          await nc.close();
        }
      } catch (error) {
        if (Date.now() > deadline) {
          throw new Error(
            `nats-server on port ${port} did not answer within 20 s: ${String(error)}; ${output}`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  };

  const stop = async () => {
    const running = child;
    if (running === undefined) return;
    running.kill('SIGKILL');
    await exited;
  };

  await start();
  return {
    url,
    port,
    start,
    stop,
    dispose: async () => {
      await stop();
      fs.rmSync(storeDir, { recursive: true, force: true });
    },
  };
}
