// How the RabbitMQ conformance spec and tests reach a broker: the shared one (TIDINGS_RABBITMQ_URL, default
// amqp://guest:guest@127.0.0.1:5672), whether it is up, and a private RabbitMQ node of their own (a second node on a
// private port with a temp data directory) that they can kill and start again. Also the child module of the SIGKILL
// case: `createTransport` opens the transport on the shared broker.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { connect } from 'amqplib';
import {
  createRabbitMqTransport,
  type RabbitMqTransport,
  type RabbitMqTransportOptions,
} from 'tidings/rabbitmq';
import { Connector } from '../../../src/rabbitmq/connection.js';
import { Names } from '../../../src/rabbitmq/names.js';
import { resolveOptions } from '../../../src/rabbitmq/options.js';
import { Registry } from '../../../src/rabbitmq/registry.js';

export const brokerUrl = process.env['TIDINGS_RABBITMQ_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';

/** The variable that hands a test run's name prefix to its child processes. */
export const prefixVariable = 'TIDINGS_RABBITMQ_TEST_PREFIX';

/**
 * Every exchange and queue of one test run carries this prefix, so that the run removes exactly what it created
 * (each stream holds two file descriptors on the broker for as long as it exists; a shared broker must not fill up).
 */
export const namePrefix = process.env[prefixVariable] ?? `tidings-test-${randomBytes(4).toString('hex')}`;

/** Options that keep tests quick: short heartbeats so a vanished member is noticed within seconds. */
export const testOptions: Omit<RabbitMqTransportOptions, 'url'> = {
  heartbeatMs: 500,
  memberLeaseMs: 3_000,
  commitIntervalMs: 20,
  rebalanceTimeoutMs: 10_000,
  connectTimeoutMs: 15_000,
  namePrefix,
};

/** A classic queue listing the name prefixes of test runs in progress (one message each), to clean up after crashes. */
const runsQueue = 'tidings-test-runs';
/** A run listed longer than this is taken as abandoned (killed before its own clean-up). */
const abandonedAfterMs = 60 * 60 * 1000;

/**
 * Registers this run's prefix, and removes what runs that were abandoned more than an hour ago left on the broker
 * (a run killed midway cannot clean up after itself; left alone, its streams would use up the broker's descriptors).
 */
export async function registerRun(url: string, prefix: string): Promise<void> {
  const connection = await connect(url);
  const abandoned: string[] = [];
  try {
    const channel = await connection.createConfirmChannel();
    await channel.assertQueue(runsQueue, { durable: true });
    const held = [];
    for (;;) {
      const message = await channel.get(runsQueue); // un-acknowledged ones are not handed out again: each once
      if (message === false) break;
      const [other, startedAt] = message.content.toString('utf8').split(' ');
      if (other !== undefined && Date.now() - Number(startedAt) > abandonedAfterMs) {
        abandoned.push(other);
        channel.ack(message);
      } else {
        held.push(message);
      }
    }
    for (const message of held) channel.nack(message, false, true);
    channel.sendToQueue(runsQueue, Buffer.from(`${prefix} ${Date.now()}`), { persistent: true });
    await channel.waitForConfirms();
  } finally {
    await connection.close().catch(() => undefined);
  }
  for (const other of abandoned) await removeTestNames(url, other).catch(() => undefined);
}

/** Removes the run's names, then its entry in the list of runs. */
export async function finishRun(url: string, prefix: string): Promise<void> {
  await removeTestNames(url, prefix);
  const connection = await connect(url);
  try {
    const channel = await connection.createChannel();
    const held = [];
    for (;;) {
      const message = await channel.get(runsQueue);
      if (message === false) break;
      if (message.content.toString('utf8').startsWith(`${prefix} `)) channel.ack(message);
      else held.push(message);
    }
    for (const message of held) channel.nack(message, false, true);
  } finally {
    await connection.close().catch(() => undefined);
  }
}

/**
 * Deletes every exchange and queue a run with `prefix` declared on the broker at `url`: the topics' exchanges and
 * partition streams, the groups' streams and offset queues (found through the registry), then the registry.
 */
export async function removeTestNames(url: string, prefix: string): Promise<void> {
  const options = resolveOptions({ url, namePrefix: prefix, connectTimeoutMs: 5_000 });
  const connector = new Connector(options);
  const names = new Names(prefix);
  try {
    const view = await new Registry(connector, names).read();
    const connection = await connect(url);
    try {
      const channel = await connection.createChannel();
      const queues: string[] = [];
      for (const [topic, entry] of view.topics) {
        for (let p = 0; p < entry.partitions; p++) queues.push(names.partitionStream(topic, p));
        await channel.deleteExchange(names.topicExchange(topic));
      }
      for (const group of view.groups) {
        queues.push(names.groupStream(group));
        for (const topic of view.groupTopics.get(group) ?? []) {
          const partitions = view.topics.get(topic)?.partitions ?? 0;
          for (let p = 0; p < partitions; p++) queues.push(names.offsetQueue(group, topic, p));
        }
      }
      queues.push(names.registry);
      for (const queue of queues) await channel.deleteQueue(queue);
    } finally {
      await connection.close().catch(() => undefined);
    }
  } finally {
    await connector.close();
  }
}

export function createTransport(): RabbitMqTransport {
  return createRabbitMqTransport({ url: brokerUrl, ...testOptions });
}

/** Whether something accepts TCP connections at host:port. */
export function reachable(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * Why the RabbitMQ tests cannot run here, or undefined if the shared broker is up. With TIDINGS_REQUIRE_BROKERS=1 a
 * missing broker is an error instead (CI must not pass by skipping).
 */
export async function brokerMissing(): Promise<string | undefined> {
  const url = new URL(brokerUrl);
  const where = `${url.hostname}:${url.port || 5672}`;
  let reason: string | undefined;
  if (!(await reachable(url.hostname, Number(url.port || 5672)))) {
    reason = `RabbitMQ is not reachable at ${where} (start it with 'rabbitmq-server -detached', or set TIDINGS_RABBITMQ_URL)`;
  } else {
    try {
      const connection = await connect(brokerUrl, { timeout: 10_000 });
      await connection.close();
    } catch (error) {
      reason =
        `RabbitMQ at ${where} accepts TCP connections but does not answer AMQP (${String(error)}); a broker that ` +
        `ran out of file descriptors does this (compare 'ls /proc/<pid>/fd | wc -l' with its 'Max open files'): ` +
        `restart it`;
    }
  }
  if (reason === undefined) return undefined;
  if (process.env['TIDINGS_REQUIRE_BROKERS'] === '1') {
    throw new Error(`TIDINGS_REQUIRE_BROKERS=1 but ${reason}`);
  }
  return reason;
}

const serverScript = '/usr/lib/rabbitmq/bin/rabbitmq-server';

/** Why a private RabbitMQ node cannot be started here, or undefined if it can. */
export function privateBrokerMissing(): string | undefined {
  return fs.existsSync(serverScript)
    ? undefined
    : `no ${serverScript} on this machine: a private RabbitMQ node cannot be started`;
}

/** A RabbitMQ node of the test's own, on a private port, with its data in a temp directory. */
export interface PrivateRabbitMq {
  readonly url: string;
  readonly port: number;
  start(): Promise<void>;
  /** Kills the node (SIGKILL, as a crash). */
  stop(): Promise<void>;
  dispose(): Promise<void>;
}

// Away from 5672 and 25672 (the shared broker), 35672-35682 (RabbitMQ's CLI tools) and 15672 (management).
let nextPort = 27_000 + (process.pid % 500) * 4;

/**
 * Starts a private RabbitMQ node (its own node name, port, data and log directories, no plugins) and resolves once it
 * accepts connections. Starting takes about 5 s on this machine.
 */
export async function startPrivateRabbitMq(): Promise<PrivateRabbitMq> {
  const missing = privateBrokerMissing();
  if (missing !== undefined) throw new Error(missing);
  let port = nextPort;
  nextPort += 4;
  while (await reachable('127.0.0.1', port, 300)) port = nextPort += 4;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-rabbitmq-'));
  fs.mkdirSync(path.join(dir, 'mnesia'));
  fs.mkdirSync(path.join(dir, 'log'));
  fs.writeFileSync(
    path.join(dir, 'rabbitmq.conf'),
    `listeners.tcp.local = 127.0.0.1:${port}\nloopback_users = none\n`,
  );
  fs.writeFileSync(path.join(dir, 'enabled_plugins'), '[].\n');
  fs.writeFileSync(path.join(dir, 'env.conf'), '');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    RABBITMQ_NODENAME: `tidings${port}@localhost`,
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(port + 1),
    RABBITMQ_MNESIA_BASE: path.join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: path.join(dir, 'log'),
    RABBITMQ_CONFIG_FILE: path.join(dir, 'rabbitmq'),
    RABBITMQ_ENABLED_PLUGINS_FILE: path.join(dir, 'enabled_plugins'),
    RABBITMQ_CONF_ENV_FILE: path.join(dir, 'env.conf'),
    RABBITMQ_PID_FILE: path.join(dir, 'pid'),
    ERL_EPMD_ADDRESS: '127.0.0.1',
    ERL_FLAGS: '-kernel inet_dist_use_interface {127,0,0,1}',
  };
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const url = `amqp://127.0.0.1:${port}`;

  const kill = async () => {
    const running = child;
    child = undefined;
    if (running?.pid === undefined) return;
    try {
      process.kill(-running.pid, 'SIGKILL'); // the script and the Erlang VM under it
    } catch {
      // already gone
    }
    await exited;
    for (let i = 0; i < 100 && (await reachable('127.0.0.1', port, 200)); i++) await sleep(100);
  };

  const start = async () => {
    if (child !== undefined) return;
    const log = fs.openSync(path.join(dir, 'server.out'), 'a');
    // A stream holds two file descriptors; give the node room for many (the default soft limit is 1,024).
    const started = spawn(
      '/bin/sh',
      ['-c', `ulimit -n 65536 2>/dev/null || ulimit -n 4096; exec ${serverScript}`],
      {
        env,
        detached: true,
        stdio: ['ignore', log, log],
      },
    );
    fs.closeSync(log);
    child = started;
    exited = new Promise((resolve) => started.once('exit', () => resolve()));
    const deadline = Date.now() + 60_000;
    while (!(await reachable('127.0.0.1', port, 300))) {
      if (started.exitCode !== null || started.signalCode !== null) {
        throw new Error(
          `the private RabbitMQ node exited while starting; see ${path.join(dir, 'server.out')}`,
        );
      }
      if (Date.now() > deadline) {
        await kill();
        throw new Error(
          `the private RabbitMQ node did not start within 60 s; see ${path.join(dir, 'server.out')}`,
        );
      }
      await sleep(100);
    }
  };

  await start();
  return {
    url,
    port,
    start,
    stop: kill,
    dispose: async () => {
      await kill();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
