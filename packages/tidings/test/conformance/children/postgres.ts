// How the PostgreSQL conformance spec and tests reach a server: the shared one (TIDINGS_POSTGRES_URL, default
// postgresql://postgres@127.0.0.1:5432/test), whether it is up, a schema of their own on it, and a private cluster
// of their own (initdb in a temp directory, a private port) that they can kill and start again. Also the child module
// of the SIGKILL case: `createTransport` opens the transport on the shared server, in the schema the spec names in
// the environment.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import {
  createPostgresTransport,
  type PostgresTransport,
  type PostgresTransportOptions,
} from 'tidings/postgres';

const run = promisify(execFile);

export const serverUrl = process.env['TIDINGS_POSTGRES_URL'] ?? 'postgresql://postgres@127.0.0.1:5432/test';

/** The environment variable naming the schema a child process opens. */
export const schemaVariable = 'TIDINGS_CONFORMANCE_PG_SCHEMA';

/** Options that keep tests quick and light: a short lease so a killed member is replaced within seconds. */
export const testOptions: Omit<PostgresTransportOptions, 'url' | 'schema'> = {
  leaseMs: 4_000,
  poolSize: 3,
  pollIntervalMs: 500,
  rebalanceTimeoutMs: 10_000,
};

export function createTransport(): PostgresTransport {
  const schema = process.env[schemaVariable];
  if (!schema) throw new Error(`set ${schemaVariable} to the schema of the PostgreSQL transport under test`);
  return createPostgresTransport({ url: serverUrl, schema, ...testOptions });
}

/** A schema name no other test run uses. */
export function uniqueSchema(label: string): string {
  return `tt_${label}_${randomBytes(4).toString('hex')}`;
}

/** Drops a schema of a test (and everything in it). */
export async function dropSchema(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS ${pg.escapeIdentifier(schema)} CASCADE`);
  } finally {
    await client.end();
  }
}

/**
 * Why the PostgreSQL tests cannot run here, or undefined if the shared server answers. With
 * TIDINGS_REQUIRE_BROKERS=1 a missing server is an error instead (CI must not pass by skipping).
 */
export async function brokerMissing(): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: serverUrl, connectionTimeoutMillis: 3_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    return undefined;
  } catch (error) {
    const reason =
      `PostgreSQL is not reachable at ${serverUrl} (${error instanceof Error ? error.message : String(error)}); ` +
      `start it (pg_ctlcluster <version> main start) or set TIDINGS_POSTGRES_URL`;
    if (process.env['TIDINGS_REQUIRE_BROKERS'] === '1')
      throw new Error(`TIDINGS_REQUIRE_BROKERS=1 but ${reason}`);
    return reason;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The directory holding initdb and pg_ctl: the newest /usr/lib/postgresql/<version>/bin, or PG_BINDIR. */
function binDir(): string | undefined {
  const fromEnv = process.env['PG_BINDIR'];
  if (fromEnv !== undefined) return fs.existsSync(path.join(fromEnv, 'pg_ctl')) ? fromEnv : undefined;
  const root = '/usr/lib/postgresql';
  if (!fs.existsSync(root)) return undefined;
  const versions = fs
    .readdirSync(root)
    .filter((v) => fs.existsSync(path.join(root, v, 'bin', 'pg_ctl')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? undefined : path.join(root, versions[0], 'bin');
}

/** The uid/gid of the `postgres` account, which initdb and the server run as when the tests run as root. */
function postgresAccount(): { uid: number; gid: number } | undefined {
  try {
    const line = fs
      .readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('postgres:'));
    if (line === undefined) return undefined;
    const [, , uid, gid] = line.split(':');
    return { uid: Number(uid), gid: Number(gid) };
  } catch {
    return undefined;
  }
}

const isRoot = process.getuid?.() === 0;

/** Why a private cluster cannot be started here, or undefined if it can. */
export function privateBrokerMissing(): string | undefined {
  if (binDir() === undefined)
    return 'no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql or PG_BINDIR';
  if (isRoot && postgresAccount() === undefined) {
    return 'running as root without a postgres account: initdb refuses to run as root';
  }
  return undefined;
}

/** A free TCP port on 127.0.0.1. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

/** A PostgreSQL cluster of the test's own, on a private port, with its data in a temp directory. */
export interface PrivatePostgres {
  readonly url: string;
  readonly port: number;
  start(): Promise<void>;
  /** Stops the server as a crash would (`pg_ctl stop -m immediate`: no checkpoint, WAL recovery at the next start). */
  stop(): Promise<void>;
  dispose(): Promise<void>;
}

/**
 * Creates a cluster (initdb, trust auth for local connections only, the default `fsync = on` and `synchronous_commit
 * = on`) in a temp directory and starts it on a free port bound to 127.0.0.1. As root, initdb and the server run as
 * the `postgres` account (initdb refuses root). About 1 s on this machine.
 */
export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const bin = binDir();
  if (bin === undefined) throw new Error(privateBrokerMissing());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-pg-'));
  const data = path.join(dir, 'data');
  const account = isRoot ? postgresAccount() : undefined;
  if (isRoot && account === undefined) throw new Error(privateBrokerMissing());
  if (account !== undefined) fs.chownSync(dir, account.uid, account.gid);
  const as = (command: string, args: readonly string[]) =>
    run(path.join(bin, command), [...args], {
      ...(account === undefined ? {} : { uid: account.uid, gid: account.gid }),
      env: { ...process.env, LC_ALL: 'C' },
      timeout: 60_000,
    });
  await as('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']);
  const port = await freePort();
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c max_connections=50 -c shared_buffers=32MB`;
  const log = path.join(dir, 'server.log');
  let running = false;
  const broker: PrivatePostgres = {
    url: `postgresql://postgres@127.0.0.1:${port}/postgres`,
    port,
    async start() {
      await as('pg_ctl', ['-D', data, '-o', options, '-l', log, '-w', '-t', '60', 'start']);
      running = true;
    },
    async stop() {
      await as('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
      running = false;
    },
    async dispose() {
      if (running) await broker.stop().catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  await broker.start();
  return broker;
}
