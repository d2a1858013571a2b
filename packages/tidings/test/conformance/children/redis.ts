// How the Redis conformance spec and tests reach a server: the shared one (TIDINGS_REDIS_URL, default
// redis://127.0.0.1:6379), whether it is up, a key prefix of their own on it (removed afterwards), and private
// redis-server instances (their own port and AOF directory) that they can kill and start again. Also the child
// module of the SIGKILL case: `createTransport` opens the transport on the shared server, under the prefix the spec
// names in the environment.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Redis } from 'ioredis';
import { createRedisTransport, type RedisTransport, type RedisTransportOptions } from 'tidings/redis';

export const serverUrl = process.env['TIDINGS_REDIS_URL'] ?? 'redis://127.0.0.1:6379';

/** The environment variable naming the key prefix a child process uses. */
export const prefixVariable = 'TIDINGS_CONFORMANCE_REDIS_PREFIX';

/**
 * Options that keep tests quick and light: a short lease so a killed member is replaced within seconds, a short
 * rebalance timeout, a short wait for an unreachable server.
 */
export const testOptions: Omit<RedisTransportOptions, 'url' | 'keyPrefix'> = {
  leaseMs: 4_000,
  heartbeatIntervalMs: 500,
  rebalanceTimeoutMs: 10_000,
  connectTimeoutMs: 2_000,
};

/** The transport of a child process of the SIGKILL case. */
export function createTransport(): RedisTransport {
  const keyPrefix = process.env[prefixVariable];
  if (!keyPrefix)
    throw new Error(`set ${prefixVariable} to the key prefix of the Redis transport under test`);
  return createRedisTransport({ url: serverUrl, keyPrefix, ...testOptions });
}

/** A key prefix no other test run uses: every key of the run starts with it. */
export function uniquePrefix(label: string): string {
  return `t${label}-${randomBytes(4).toString('hex')}`;
}

/** Deletes every key of a prefix (`<prefix>:*` and `<prefix>#*`) on `url`. */
export async function removePrefix(prefix: string, url = serverUrl): Promise<void> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, protocol: 2 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    for (const pattern of [`${escapeGlob(prefix)}:*`, `${escapeGlob(prefix)}#*`]) {
      let cursor = '0';
      do {
        const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
        cursor = next;
        if (keys.length > 0) await client.unlink(...keys);
      } while (cursor !== '0');
    }
  } finally {
    client.disconnect();
  }
}

function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
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
 * Why the Redis tests cannot run here, or undefined if the shared server is up. With TIDINGS_REQUIRE_BROKERS=1 a
 * missing server is an error instead (CI must not pass by skipping).
 */
export async function brokerMissing(): Promise<string | undefined> {
  const url = new URL(serverUrl);
  const port = Number(url.port || 6379);
  if (await reachable(url.hostname, port)) return undefined;
  const reason =
    `redis-server is not reachable at ${url.hostname}:${port} (start it with ` +
    `'redis-server --bind 127.0.0.1', or set TIDINGS_REDIS_URL)`;
  if (process.env['TIDINGS_REQUIRE_BROKERS'] === '1')
    throw new Error(`TIDINGS_REQUIRE_BROKERS=1 but ${reason}`);
  return reason;
}

const serverBinary = process.env['TIDINGS_REDIS_SERVER'] ?? '/usr/bin/redis-server';

/** Why a private redis-server cannot be started here, or undefined if it can. */
export function privateBrokerMissing(): string | undefined {
  return fs.existsSync(serverBinary)
    ? undefined
    : `no ${serverBinary} on this machine (set TIDINGS_REDIS_SERVER): a private redis-server cannot be started`;
}

/** A redis-server of the test's own, on a private port, with its AOF in a temp directory. */
export interface PrivateRedis {
  readonly url: string;
  readonly port: number;
  /** Starts it (again, on the same port and data); resolves once it answers PING with its data loaded. */
  start(): Promise<void>;
  /** Kills it (SIGKILL, as a crash would); resolves once it exited. */
  stop(): Promise<void>;
  /** Kills it and removes its data. */
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

/**
 * Starts a private redis-server that keeps what it acknowledged across a kill: `--appendonly yes --appendfsync
 * always` (fsync of the AOF before each reply), no RDB snapshots, bound to 127.0.0.1. Resolves once it answers.
 */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-redis-'));
  const url = `redis://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let output = '';

  const start = async () => {
    if (child !== undefined) return;
    const started = spawn(
      serverBinary,
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'yes',
        '--appendfsync',
        'always',
        '--dir',
        dataDir,
        '--protected-mode',
        'no',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child = started;
    for (const stream of [started.stdout, started.stderr]) {
      stream?.setEncoding('utf8');
      stream?.on('data', (chunk: string) => {
        output = (output + chunk).slice(-8_192);
      });
    }
    exited = new Promise<void>((resolve) => started.once('exit', () => resolve()));
    void exited.then(() => {
      if (child === started) child = undefined;
    });
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (child !== started) throw new Error(`redis-server on port ${port} exited while starting: ${output}`);
      const client = new Redis(url, {
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      client.on('error', () => undefined);
      try {
        await client.connect(); // resolves once ready: the AOF is loaded
        if ((await client.ping()) === 'PONG') return;
      } catch (error) {
        if (Date.now() > deadline) {
          throw new Error(
            `redis-server on port ${port} did not answer within 20 s: ${String(error)}; ${output}`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      } finally {
        client.disconnect();
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
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
