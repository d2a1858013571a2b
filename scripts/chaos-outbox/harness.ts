// The outbox chaos harness: producers, relays (the real `tidings relay` command) and consumers as separate
// processes on one database and one transport; random SIGKILLs for N cycles; then a drain and the checks:
// every committed change (read from the producer database) applied exactly once downstream (read from the
// consumer database), nothing from a rolled-back transaction downstream, and each order's versions applied in
// order. Used by `npm run chaos:outbox` and, with a few cycles, by the CI test of each database.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createOutbox } from 'tidings/outbox';
import { OrderRevised, consumerGroup, type ChaosConfig, type DbKind, type TransportKind } from './config.js';
import { createTables, dropAll, openSide, type Side } from './db.js';
import { natsPrefix, openChaosTransport } from './transport.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const here = fileURLToPath(new URL('.', import.meta.url));
const cliMain = join(repoRoot, 'packages/cli/src/main.ts');

export interface ChaosOptions {
  db: DbKind;
  transport?: TransportKind;
  /** Kill cycles. Default 30. */
  cycles?: number;
  producers?: number;
  relays?: number;
  consumers?: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
  postgresUrl?: string;
  mariadbUrl?: string;
  natsUrl?: string;
  /** How long the drain may go without progress before the run fails. Default 90 s. */
  stallTimeoutMs?: number;
}

export interface ChaosResult {
  ok: boolean;
  cycles: number;
  /** Committed business changes (each must have exactly one applied effect). */
  events: number;
  lost: number;
  appliedTwice: number;
  outOfOrder: number;
  /** Effects of changes that never committed (rolled back or invented). */
  leaked: number;
  kills: Record<Role, number>;
  /** Events on the topic beyond one per committed change: copies re-published after relay kills, dropped by the inbox. */
  republished: number;
  /** Children that exited without being killed. */
  unexpectedExits: number;
  /** The summary line: `chaos ok: ...` or `chaos FAILED: ...`. */
  line: string;
  /** Why it failed, when it did. */
  problems: string[];
}

type Role = 'producer' | 'relay' | 'consumer';

interface Child {
  role: Role;
  index: number;
  process: ChildProcess;
  ready: Promise<boolean>;
  exited: Promise<void>;
  killed: boolean;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function runChaos(options: ChaosOptions): Promise<ChaosResult> {
  const log = options.log ?? (() => undefined);
  const cycles = options.cycles ?? 30;
  const transportKind = options.transport ?? 'log';
  const dir = mkdtempSync(join(tmpdir(), `tidings-chaos-${options.db}-`));
  const config: ChaosConfig = {
    db: options.db,
    transport: transportKind,
    run: randomBytes(4).toString('hex'),
    url:
      options.db === 'postgres'
        ? (options.postgresUrl ??
          process.env['TIDINGS_POSTGRES_URL'] ??
          'postgresql://postgres@127.0.0.1:5432/test')
        : options.db === 'mariadb'
          ? (options.mariadbUrl ?? process.env['TIDINGS_MARIADB_URL'] ?? 'mysql://root@127.0.0.1:3306/test')
          : `sqlite:${join(dir, 'p.db')}`,
    dir,
    natsUrl: options.natsUrl ?? process.env['TIDINGS_NATS_URL'] ?? 'nats://127.0.0.1:4222',
    keys: 12,
    rollbackRate: 0.15,
  };
  const producer = openSide(config, 'p');
  const consumer = openSide(config, 'c');
  const children = new Set<Child>();
  const kills: Record<Role, number> = { producer: 0, relay: 0, consumer: 0 };
  let unexpectedExits = 0;
  const configJson = JSON.stringify(config);

  const argsOf = (role: Role): string[] => {
    if (role !== 'relay') return [join(here, `${role}.ts`), configJson];
    const transportArgs =
      transportKind === 'nats'
        ? ['--transport', 'nats', '--nats-url', config.natsUrl, '--nats-prefix', natsPrefix(config)]
        : ['--data-dir', join(dir, 'log')];
    return [
      cliMain,
      'relay',
      '--database-url',
      config.url,
      '--table',
      producer.libTable('outbox'),
      ...transportArgs,
      '--batch-size',
      '200',
      '--lease-ms',
      '1000',
      '--json',
    ];
  };

  const start = (role: Role, index: number): Child => {
    const proc = spawn(
      process.execPath,
      ['--import', 'tsx', '--conditions=tidings-source', ...argsOf(role)],
      {
        cwd: repoRoot,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, NODE_NO_WARNINGS: '1', TIDINGS_LOG_LEVEL: 'error' },
      },
    );
    const logFile = join(dir, `${role}-${index}.log`);
    proc.stderr?.setEncoding('utf8').on('data', (text: string) => appendFileSync(logFile, text));
    const child: Child = {
      role,
      index,
      process: proc,
      killed: false,
      ready: new Promise((resolve) => {
        let buffer = '';
        proc.stdout?.setEncoding('utf8').on('data', (text: string) => {
          buffer += text;
          if (/^ready \d+$|"event":"started"/m.test(buffer)) resolve(true);
          if (buffer.length > 10_000) buffer = buffer.slice(-1000);
        });
        proc.on('exit', () => resolve(false));
      }),
      exited: new Promise((resolve) => proc.on('exit', () => resolve())),
    };
    proc.on('exit', (code, signal) => {
      if (!child.killed) {
        unexpectedExits++;
        log(`  ${role}-${index} exited by itself (code ${code}, signal ${signal}); see ${logFile}`);
      }
    });
    children.add(child);
    return child;
  };

  const kill = async (child: Child) => {
    child.killed = true;
    child.process.kill('SIGKILL');
    await child.exited;
    children.delete(child);
  };

  const counts = {
    producer: options.producers ?? 2,
    relay: options.relays ?? 2,
    consumer: options.consumers ?? 2,
  };
  /** Replaces children of `roles` that died by themselves. */
  const supervise = (roles: readonly Role[]) => {
    for (const r of roles)
      for (let i = 0; i < counts[r]; i++)
        if (![...children].some((c) => c.role === r && c.index === i && c.process.exitCode === null)) {
          for (const dead of [...children].filter((c) => c.role === r && c.index === i))
            children.delete(dead);
          start(r, i);
        }
  };
  const problems: string[] = [];
  try {
    await createTables(config, producer, consumer);
    await createOutbox({ database: producer.database, table: producer.libTable('outbox') }).setup();
    const { createInbox } = await import('tidings/outbox');
    await createInbox({ database: consumer.database, table: consumer.libTable('inbox') }).setup();
    log(`chaos: db=${config.db} transport=${transportKind} run=${config.run} dir=${dir}`);

    for (const role of ['consumer', 'relay', 'producer'] as const)
      for (let i = 0; i < counts[role]; i++) start(role, i);

    for (let cycle = 1; cycle <= cycles; cycle++) {
      const roles: Role[] = ['producer', 'relay', 'consumer'];
      const role = roles[randomInt(roles.length)]!;
      const candidates = [...children].filter((c) => c.role === role);
      // Now and then every process of the role dies at once.
      const victims = randomInt(5) === 0 ? candidates : [candidates[randomInt(candidates.length)]!];
      await Promise.race([Promise.all(victims.map((v) => v.ready)), sleep(60_000)]);
      const delay = randomInt(100, 1200);
      await sleep(delay);
      for (const victim of victims) {
        await kill(victim);
        kills[role]++;
        start(role, victim.index);
      }
      log(
        `cycle ${cycle}/${cycles}: SIGKILL ${victims.map((v) => `${v.role}-${v.index}`).join(', ')} after ${delay} ms`,
      );
      supervise(roles);
    }

    // Stop producing (a kill mid-transaction is one more rollback), then let relays and consumers drain.
    for (const child of [...children].filter((c) => c.role === 'producer')) await kill(child);
    log('producers stopped; draining');
    const republished = await drain(
      config,
      producer,
      consumer,
      options.stallTimeoutMs ?? 90_000,
      log,
      problems,
      () => supervise(['relay', 'consumer']),
    );
    const result = await check(producer, consumer);
    const ok =
      problems.length === 0 && result.lost + result.appliedTwice + result.outOfOrder + result.leaked === 0;
    if (result.leaked > 0) problems.push(`${result.leaked} effects of changes that never committed`);
    const figures = `cycles=${cycles} events=${result.events} lost=${result.lost} applied-twice=${result.appliedTwice} out-of-order=${result.outOfOrder}`;
    return {
      ok,
      cycles,
      ...result,
      kills,
      republished,
      unexpectedExits,
      problems,
      line: ok
        ? `chaos ok: ${figures}`
        : `chaos FAILED: ${figures} leaked=${result.leaked}${problems.map((p) => `; ${p}`).join('')}`,
    };
  } finally {
    await Promise.all([...children].map((child) => kill(child)));
    await dropAll(config, producer, consumer).catch(() => undefined);
    if (transportKind === 'nats') await removeNatsStreams(config).catch(() => undefined);
    await producer.close().catch(() => undefined);
    await consumer.close().catch(() => undefined);
    if (problems.length === 0) rmSync(dir, { recursive: true, force: true });
    else log(`kept ${dir} for inspection`);
  }
}

/** Committed change ids, from the producer database. */
async function committedIds(producer: Side): Promise<Set<string>> {
  const conn = await producer.conn();
  try {
    return new Set(
      (await conn.q(`SELECT event_id FROM ${producer.t('changes')}`)).map((r) => String(r['event_id'])),
    );
  } finally {
    await conn.release();
  }
}

async function effectIds(consumer: Side): Promise<string[]> {
  const conn = await consumer.conn();
  try {
    return (await conn.q(`SELECT event_id FROM ${consumer.t('effects')}`)).map((r) => String(r['event_id']));
  } finally {
    await conn.release();
  }
}

/** Waits until the outbox is empty, every committed change has its effect and the group has no lag. */
async function drain(
  config: ChaosConfig,
  producer: Side,
  consumer: Side,
  stallTimeoutMs: number,
  log: (line: string) => void,
  problems: string[],
  supervise: () => void,
): Promise<number> {
  const outbox = createOutbox({ database: producer.database, table: producer.libTable('outbox') });
  const committed = await committedIds(producer);
  let lastProgress = performance.now();
  let best = -1;
  for (;;) {
    const status = await outbox.status();
    const applied = new Set((await effectIds(consumer)).filter((id) => committed.has(id))).size;
    if (status.backlog === 0 && applied === committed.size) break;
    supervise();
    const progress = applied + (1e9 - status.backlog);
    if (progress > best) {
      best = progress;
      lastProgress = performance.now();
    } else if (performance.now() - lastProgress > stallTimeoutMs) {
      problems.push(`drain stalled: backlog ${status.backlog}, ${applied}/${committed.size} applied`);
      return 0;
    }
    await sleep(250);
  }
  // Copies re-published after relay kills may still be on their way: wait for the group to reach the end.
  const transport = await openChaosTransport(config);
  try {
    const deadline = performance.now() + 60_000;
    for (;;) {
      const lag = (await transport.admin.describeGroup(consumerGroup)).lag.reduce((sum, p) => sum + p.lag, 0);
      if (lag === 0) break;
      if (performance.now() > deadline) {
        problems.push(`the consumer group still lags by ${lag} after the drain`);
        return 0;
      }
      await sleep(250);
    }
    const topic = await transport.admin.describeTopic(OrderRevised.topic);
    const stored = topic.partitionOffsets.reduce((sum, p) => sum + p.highOffset - p.lowOffset, 0);
    log(`drained: ${committed.size} committed changes applied; ${stored} events on the topic`);
    return Math.max(0, stored - committed.size);
  } finally {
    await transport.close();
  }
}

async function check(producer: Side, consumer: Side) {
  const committed = await committedIds(producer);
  const applied = new Map<string, number>();
  for (const id of await effectIds(consumer)) applied.set(id, (applied.get(id) ?? 0) + 1);
  let lost = 0;
  for (const id of committed) if (!applied.has(id)) lost++;
  let appliedTwice = 0;
  let leaked = 0;
  for (const [id, count] of applied) {
    if (count > 1) appliedTwice += count - 1;
    if (!committed.has(id)) leaked++;
  }
  const conn = await consumer.conn();
  let outOfOrder: number;
  try {
    const [row] = await conn.q(`SELECT COUNT(*) AS n FROM ${consumer.t('violations')}`);
    outOfOrder = Number(row?.['n'] ?? 0);
  } finally {
    await conn.release();
  }
  return { events: committed.size, lost, appliedTwice, outOfOrder, leaked };
}

async function removeNatsStreams(config: ChaosConfig): Promise<void> {
  const { connect } = await import('@nats-io/transport-node');
  const { jetstreamManager } = await import('@nats-io/jetstream');
  const nc = await connect({ servers: config.natsUrl });
  try {
    const jsm = await jetstreamManager(nc);
    const prefix = natsPrefix(config);
    const names: string[] = [];
    for await (const name of jsm.streams.names()) names.push(name);
    for (const name of names)
      if (name.startsWith(prefix) || name.startsWith(`KV_${prefix}`)) await jsm.streams.delete(name);
  } finally {
    await nc.close();
  }
}
