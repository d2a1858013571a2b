/**
 * The built `tidings` command, run as a subprocess against real data directories of the embedded log, with
 * consumers running in this test process on the same directory (the log is shared between processes).
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createBus, defineEvent, silentLogger, type Bus } from 'tidings';
import { createLogTransport, type LogTransport } from 'tidings/log';
import { waitUntil } from 'tidings/testing';

const repo = resolve(import.meta.dirname, '../../..');
const main = join(repo, 'packages/cli/dist/main.js');

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface CliOptions {
  cwd?: string;
  env?: Record<string, string>;
  stdin?: string;
}

let dir: string;

/** Runs the built CLI with `--data-dir <dir>` unless the arguments or environment choose one. */
function cli(args: string[], options: CliOptions = {}): Promise<Result> {
  const child = spawn(process.execPath, [main, ...args], {
    cwd: options.cwd ?? dir,
    env: { PATH: process.env['PATH'] ?? '', ...options.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  return collect(child, options.stdin);
}

function collect(child: ReturnType<typeof spawn>, stdin?: string): Promise<Result> {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr?.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  child.stdin?.end(stdin ?? '');
  return new Promise((done, fail) => {
    child.on('error', fail);
    child.on('close', (code, signal) => done({ code, signal, stdout, stderr }));
  });
}

/** `tidings <args> --data-dir <dir>`. */
const tidings = (args: string[], options: CliOptions = {}) =>
  cli([...args, '--data-dir', join(dir, 'data')], options);

const lines = (text: string) => text.split('\n').filter((line) => line !== '');

/** Success: exit 0 and nothing on stderr. */
function ok(result: Result): Result {
  expect(result.stderr, `stderr of a successful run`).toBe('');
  expect(result.code).toBe(0);
  return result;
}

/** A failure: the exit code, nothing on stdout, exactly one line on stderr saying what is wrong, no stack. */
function fails(result: Result, code: number, pattern: RegExp): void {
  expect(result.code).toBe(code);
  expect(result.stdout).toBe('');
  expect(lines(result.stderr)).toHaveLength(1);
  expect(result.stderr).toMatch(/^error: .+\n$/);
  expect(result.stderr).not.toMatch(/\bat .+:\d+:\d+/);
  expect(result.stderr.trimEnd()).toMatch(pattern);
}

const json = <T = unknown>(result: Result): T => JSON.parse(ok(result).stdout) as T;
const jsonLines = <T = unknown>(result: Result): T[] =>
  lines(ok(result).stdout).map((line) => JSON.parse(line) as T);

beforeAll(async () => {
  // The CLI's dist imports the built `tidings` package at run time.
  const run = promisify(execFile);
  await run('npm', ['run', 'build', '-w', 'packages/tidings'], { cwd: repo });
  await run('npm', ['run', 'build', '-w', 'packages/cli'], { cwd: repo });
}, 180_000);

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tidings-cli-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('the data directory', () => {
  it('is an error, in one line, when missing, for every command that reads', async () => {
    const missing =
      /^error: no Tidings data directory at \S+; start your application there first .*'tidings topics create <topic> --data-dir \S+'/;
    for (const args of [
      ['topics', 'list'],
      ['topics', 'describe', 'orders'],
      ['tail', 'orders'],
      ['groups', 'list'],
      ['groups', 'lag'],
      ['dead-letters', 'list'],
      ['parked', 'list'],
    ])
      fails(await tidings(args), 1, missing);
    fails(await cli(['topics', 'list']), 1, new RegExp(`no Tidings data directory at ${dir}/\\.tidings;`));
    await writeFile(join(dir, 'file'), 'x');
    fails(await cli(['topics', 'list', '--data-dir', 'file']), 1, /is a file, not a Tidings data directory/);
  });

  it('is ./.tidings by default, TIDINGS_DATA_DIR otherwise, and created by topics create and publish', async () => {
    ok(await cli(['topics', 'create', 'here']));
    expect(json<Array<{ name: string }>>(await cli(['topics', 'list', '--json']))).toMatchObject([
      { name: 'here' },
    ]);
    const env = { TIDINGS_DATA_DIR: join(dir, 'env') };
    ok(
      await cli(['publish', 'there', '-t', 'T', '-k', 'k', '--data', '1'], { env }).then((r) => ({
        ...r,
        stderr: '',
      })),
    );
    expect(json<Array<{ name: string }>>(await cli(['topics', 'list', '--json'], { env }))).toMatchObject([
      { name: 'there' },
    ]);
  });

  it('reports a data directory locked by another process beyond the busy timeout in one line', async () => {
    ok(await tidings(['topics', 'create', 'orders']));
    const db = new Database(join(dir, 'data', 'log.db'));
    try {
      db.exec('BEGIN IMMEDIATE'); // holds the write lock
      const result = await tidings(['topics', 'create', 'payments'], {
        env: { TIDINGS_BUSY_TIMEOUT_MS: '300' },
      });
      fails(result, 1, /is locked by another process.*nothing was written/);
    } finally {
      db.exec('ROLLBACK');
      db.close();
    }
  });
});

describe('topics and publish', () => {
  it('creates, lists and describes topics, as tables and JSON', async () => {
    expect(ok(await tidings(['topics', 'create', 'orders', '-p', '3', '--retention', '7d'])).stdout).toMatch(
      /^Created topic orders with 3 partitions, retention 7d, in \S+\.\n$/,
    );
    expect(json(await tidings(['topics', 'create', 'orders', '-p', '3', '--json']))).toMatchObject({
      name: 'orders',
      partitions: 3,
      created: false,
    });
    fails(await tidings(['topics', 'create', 'orders', '-p', '4']), 1, /orders.*3 partitions/);
    ok(await tidings(['publish', 'orders', '-t', 'OrderPlaced', '-k', 'o-1', '--data', '{"total":1}']));
    expect(lines(ok(await tidings(['topics', 'list'])).stdout)).toEqual([
      'TOPIC   PARTITIONS  EVENTS  RETENTION',
      'orders           3       1  7d',
    ]);
    expect(json(await tidings(['topics', 'list', '--json']))).toEqual([
      {
        name: 'orders',
        partitions: 3,
        retentionMs: 604_800_000,
        records: 1,
        partitionOffsets: expect.any(Array) as unknown,
      },
    ]);
    const described = ok(await tidings(['topics', 'describe', 'orders'])).stdout;
    expect(lines(described).slice(0, 2)).toEqual([
      'Topic orders: 3 partitions, 1 event stored, retention 7d',
      'PARTITION  LOW  HIGH  EVENTS  FIRST                     LAST',
    ]);
    const describedJson = json<{ partitionOffsets: Array<{ highOffset: number; firstTime?: string }> }>(
      await tidings(['topics', 'describe', 'orders', '--json']),
    );
    expect(describedJson.partitionOffsets.map((p) => p.highOffset).sort()).toEqual([0, 0, 1]);
    fails(
      await tidings(['topics', 'describe', 'ordrs']),
      1,
      /^error: unknown topic "ordrs" in \S+; did you mean "orders"\? list topics with 'tidings topics list'/,
    );
  });

  it('publishes from options and from JSON lines on stdin, and rejects bad JSON with one line', async () => {
    const single = await tidings([
      'publish',
      'orders',
      '-t',
      'OrderPlaced',
      '-k',
      'o-1',
      '--data',
      '{"a":1}',
    ]);
    expect(single.code).toBe(0);
    expect(single.stdout).toMatch(
      /^Published OrderPlaced \S{36} \(key o-1\) to orders partition \d offset 0\.\n$/,
    );
    expect(single.stderr).toBe('note: topic "orders" did not exist; it was created with 4 partitions\n');

    const stdin =
      '{"type":"OrderPlaced","key":"o-2","data":{"a":2}}\n\n{"type":"OrderShipped","key":"o-2","data":null}\n';
    expect(ok(await tidings(['publish', 'orders'], { stdin })).stdout).toBe(
      'Published 2 events to orders.\n',
    );
    const acks = jsonLines<{ id: string; topic: string; partition: number; offset: number }>(
      await tidings(['publish', 'orders', '--json', '-t', 'T'], { stdin: '{"key":"o-3","data":3}' }),
    );
    expect(acks).toEqual([
      {
        id: expect.any(String) as unknown,
        type: 'T',
        key: 'o-3',
        topic: 'orders',
        partition: expect.any(Number) as unknown,
        offset: expect.any(Number) as unknown,
      },
    ]);

    fails(
      await tidings(['publish', 'orders', '-t', 'T', '-k', 'k', '--data', '{oops}']),
      2,
      /^error: --data is not valid JSON/,
    );
    fails(
      await tidings(['publish', 'orders', '-t', 'T', '-k', 'k'], {
        stdin: '{"data":1}\n{"data":2}\nnot json\n',
      }),
      2,
      /^error: stdin line 3 is not valid JSON \(.+\); each line must be one object like/,
    );
    expect(json<Array<{ records: number }>>(await tidings(['topics', 'list', '--json']))[0]?.records).toBe(4);
  });
});

describe('tail', () => {
  beforeEach(async () => {
    ok(await tidings(['topics', 'create', 'orders', '-p', '2']));
    // One event per millisecond at least: events of several partitions are printed in the order they were stored.
    for (let i = 0; i < 5; i++) {
      ok(
        await tidings([
          'publish',
          'orders',
          '-t',
          i % 2 ? 'OrderShipped' : 'OrderPlaced',
          '-k',
          `o-${i % 2}`,
          '--data',
          JSON.stringify({ i }),
        ]),
      );
      const after = Date.now();
      await waitUntil(() => Date.now() > after, { intervalMs: 1 });
    }
  });

  type Line = {
    partition: number;
    offset: number;
    timestamp: string;
    key: string;
    envelope: { type: string; data: { i: number } };
  };
  const seen = async (args: string[]) =>
    jsonLines<Line>(await tidings(['tail', 'orders', '--json', ...args])).map((e) => e.envelope.data.i);

  it('prints the newest events as a table, and as JSON lines with position and envelope', async () => {
    const newest = await tidings(['tail', 'orders', '-n', '3']);
    expect(newest.code).toBe(0);
    // Events left out by the limit are said on stderr, never silently.
    expect(newest.stderr).toBe(
      'Showing the newest 3 events; older ones exist: use --from earliest and a larger -n.\n',
    );
    const table = lines(newest.stdout);
    expect(table[0]).toMatch(/^TIME +POSITION +KEY +TYPE +ID +DATA$/);
    expect(table.slice(1).map((row) => row.split(/\s{2,}/).at(-1))).toEqual([
      '{"i":2}',
      '{"i":3}',
      '{"i":4}',
    ]);
    const firstOnly = await tidings(['tail', 'orders', '--json', '--from', 'earliest', '-n', '1']);
    expect(firstOnly.stderr).toBe('Stopped at 1 event (-n); more may follow: use a larger -n.\n');
    const [first] = lines(firstOnly.stdout).map((line) => JSON.parse(line) as Line);
    expect(first).toMatchObject({
      topic: 'orders',
      offset: 0,
      key: 'o-0',
      envelope: { type: 'OrderPlaced', source: 'tidings://cli', subject: 'o-0', data: { i: 0 } },
    });
    expect(await seen([])).toEqual([0, 1, 2, 3, 4]);
  });

  it('starts where --from says and filters by type and key', async () => {
    expect(await seen(['--from', 'latest'])).toEqual([]);
    expect(await seen(['--from', '2'])).toEqual([4]);
    const all = jsonLines<Line>(await tidings(['tail', 'orders', '--json', '--from', 'earliest']));
    const third = all[2]!;
    expect(await seen(['--from', `${third.partition}:${third.offset}`])).toEqual(
      all
        .filter((e) => e.partition === third.partition && e.offset >= third.offset)
        .map((e) => e.envelope.data.i),
    );
    expect(await seen(['--from', third.timestamp])).toEqual([2, 3, 4]);
    expect(await seen(['--type', 'OrderShipped'])).toEqual([1, 3]);
    const newestOfKey = await tidings(['tail', 'orders', '--json', '--key', 'o-0', '-n', '2']);
    expect(lines(newestOfKey.stdout).map((line) => (JSON.parse(line) as Line).envelope.data.i)).toEqual([
      2, 4,
    ]);
    expect(newestOfKey.stderr).toMatch(/^Showing the newest 2 events; older ones exist/);
  });

  it('fails in one line for an unknown topic, a bad offset and a bad time', async () => {
    fails(await tidings(['tail', 'nope']), 1, /^error: unknown topic "nope"/);
    fails(
      await tidings(['tail', 'orders', '--from', '-1']),
      2,
      /--from "-1" is not a position; use earliest, latest, an offset/,
    );
    fails(
      await tidings(['tail', 'orders', '--from', '3:0']),
      2,
      /--from names partition 3, but topic "orders" has partitions 0 to 1/,
    );
    fails(
      await tidings(['tail', 'orders', '--from', '2025-02-30T10:00:00Z']),
      2,
      /--from "2025-02-30T10:00:00Z" is not a position/,
    );
    fails(await tidings(['tail', 'orders', '-n', '0']), 2, /--limit must be a whole number of at least 1/);
  });

  it('follows new events and stops cleanly on SIGINT', async () => {
    const child = spawn(
      process.execPath,
      [main, 'tail', 'orders', '--follow', '--json', '--data-dir', join(dir, 'data')],
      {
        cwd: dir,
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    let printed = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (printed += text));
    const done = collect(child);
    // The tail is running once it has opened the log; publish until it shows what was published after it started.
    await waitUntil(
      async () => {
        ok(await tidings(['publish', 'orders', '-t', 'Late', '-k', 'o-9', '--data', '{"i":9}']));
        return printed.includes('"Late"');
      },
      { intervalMs: 100, timeoutMs: 15_000 },
    );
    child.kill('SIGINT');
    const result = await done;
    expect(result.code).toBe(0);
    expect(result.stderr).toBe('');
    expect(lines(printed).every((line) => (JSON.parse(line) as Line).envelope.type === 'Late')).toBe(true);
  });
});

const OrderPlaced = defineEvent('OrderPlaced', {
  schema: z.object({ orderId: z.string() }),
  key: 'orderId',
  topic: 'orders',
});

describe('groups, dead letters and parked keys, with consumers in another process', () => {
  let transport: LogTransport;
  let bus: Bus;
  let failing: boolean;

  beforeEach(async () => {
    failing = true;
    transport = createLogTransport({ dataDir: join(dir, 'data') });
    bus = createBus({ service: 'shop', transport, logger: silentLogger });
    bus.handle(
      'email',
      [OrderPlaced],
      () => {
        if (failing) throw new Error('smtp down');
      },
      { retry: { maxAttempts: 2, initialDelayMs: 1 } },
    );
    bus.handle(
      'ship',
      [OrderPlaced],
      () => {
        if (failing) throw new Error('carrier down');
      },
      { retry: false, onFailure: 'park' },
    );
    for (const orderId of ['o-1', 'o-1', 'o-2']) await bus.publish(OrderPlaced, { orderId });
    await waitUntil(
      async () => (await bus.deadLetters.list({ group: 'email', topic: 'orders' })).length === 3,
    );
    await waitUntil(async () => (await bus.parked.list('ship')).length === 2);
  });
  afterEach(async () => {
    await bus.close();
    await transport.close();
  });

  it('lists and describes groups and their lag', async () => {
    expect(lines(ok(await tidings(['groups', 'list'])).stdout)).toEqual([
      'GROUP  MEMBERS  LAG  TOPICS',
      'email        1    0  orders',
      'ship         1    0  orders',
    ]);
    expect(json(await tidings(['groups', 'list', '--json']))).toEqual([
      { group: 'email', members: 1, topics: ['orders'], lag: 0 },
      { group: 'ship', members: 1, topics: ['orders'], lag: 0 },
    ]);
    const described = ok(await tidings(['groups', 'describe', 'email'])).stdout;
    expect(described).toMatch(
      /^Group email: 1 live member, lag 0\n\nMEMBER +PARTITIONS\n\S+ +orders:0,1,2,3\n\nTOPIC +PARTITION +COMMITTED +HIGH +LAG +MEMBER\n/,
    );
    expect(json(await tidings(['groups', 'describe', 'email', '--json']))).toMatchObject({
      group: 'email',
      members: [{ memberId: expect.any(String) as unknown }],
      lag: expect.any(Array) as unknown,
    });
    expect(ok(await tidings(['groups', 'lag'])).stdout).toMatch(
      /^GROUP +TOPIC +PARTITION +COMMITTED +HIGH +LAG\n(.+\n){8}\nTotal lag: 0\n$/,
    );
    expect(json<unknown[]>(await tidings(['groups', 'lag', 'ship', '--json']))).toHaveLength(4);
    fails(await tidings(['groups', 'describe', 'nobody']), 1, /^error: unknown consumer group "nobody"/);
  });

  it('refuses a reset while a member is live, in one line, and resets once it is gone', async () => {
    fails(
      await tidings(['groups', 'reset', 'email', '--topic', 'orders', '--to', 'earliest']),
      1,
      /^error: cannot reset group "email" on topic "orders" while it has 1 live member \(\S+\); stop its consumers, then run the reset again$/,
    );
    fails(
      await tidings(['groups', 'reset', 'email', '--topic', 'orders', '--to', 'soon']),
      2,
      /--to "soon" is not a position/,
    );
    fails(
      await tidings(['groups', 'reset', 'email', '--topic', 'nope', '--to', 'earliest']),
      1,
      /unknown topic "nope"/,
    );
    await bus.close();
    const reset = ok(
      await tidings(['groups', 'reset', 'email', '--topic', 'orders', '--to', 'earliest']),
    ).stdout;
    expect(reset).toMatch(/^Reset group email on orders\.\n\nPARTITION +BEFORE +AFTER\n/);
    expect(
      json<Array<{ lag: number }>>(await tidings(['groups', 'lag', 'email', '--json'])).reduce(
        (s, r) => s + r.lag,
        0,
      ),
    ).toBe(3);
    const toLatest = json<{ partitions: Array<{ after: number }> }>(
      await tidings(['groups', 'reset', 'email', '--topic', 'orders', '--to', 'latest', '--json']),
    );
    expect(toLatest.partitions.reduce((s, p) => s + p.after, 0)).toBe(3);
  });

  it('lists, skips and retries dead letters', async () => {
    const table = lines(
      ok(await tidings(['dead-letters', 'list', '--group', 'email', '--topic', 'orders'])).stdout,
    );
    expect(table[0]).toMatch(/^ID +GROUP +TOPIC +KEY +TYPE +REASON +ATTEMPTS +WHEN +ERROR$/);
    expect(table.slice(1)).toHaveLength(3);
    expect(table[1]).toMatch(
      /^\d+:\d+ +email +orders +o-\d +OrderPlaced +HANDLER_FAILED +2 +(just now|\S+ ago) +Error: smtp down$/,
    );
    const letters = json<Array<{ id: string; key: string; reason: string; deadLetteredAt: string }>>(
      await tidings(['dead-letters', 'list', '--json']),
    );
    expect(letters).toHaveLength(3);
    const [a, b] = letters as [(typeof letters)[0], (typeof letters)[0]];
    expect(a.reason).toBe('HANDLER_FAILED');

    expect(
      ok(await tidings(['dead-letters', 'skip', a.id, '-g', 'email', '--topic', 'orders'])).stdout,
    ).toMatch(/^Skipped dead letter \S+ of group email on orders \(key o-\d, OrderPlaced \S+\)\.\n$/);
    failing = false;
    const retried = json<{ status: string; message: string }>(
      await tidings(['dead-letters', 'retry', b.id, '-g', 'email', '--topic', 'orders', '--json']),
    );
    expect(retried).toMatchObject({ id: b.id, status: 'done' });
    expect(json<unknown[]>(await tidings(['dead-letters', 'list', '-g', 'email', '--json']))).toHaveLength(1);
    fails(
      await tidings(['dead-letters', 'skip', a.id, '-g', 'email', '--topic', 'orders']),
      1,
      /^error: no unresolved dead letter "\S+" of group "email" on topic "orders"; list them with 'tidings dead-letters list --group email --topic orders'$/,
    );
    fails(
      await tidings(['dead-letters', 'skip', a.id, '--topic', 'orders']),
      2,
      /required option '-g, --group <group>' not specified/,
    );
  });

  it('queues a retry when no consumer of the group runs, and --require-done makes that a failure', async () => {
    const [letter] = json<Array<{ id: string }>>(await tidings(['dead-letters', 'list', '--json']));
    await bus.close();
    const queued = ok(
      await tidings(['dead-letters', 'retry', letter!.id, '-g', 'email', '--topic', 'orders']),
    ).stdout;
    expect(queued).toMatch(
      /^Request \S+ is queued: no consumer of group "email" is running; a running consumer .* carries it out within about a second\.\n$/,
    );
    fails(
      await tidings([
        'dead-letters',
        'retry',
        letter!.id,
        '-g',
        'email',
        '--topic',
        'orders',
        '--require-done',
      ]),
      1,
      /is queued: no consumer of group "email" is running; .*; it was not done yet \(--require-done\)$/,
    );
    // A consumer that starts later carries the queued requests out.
    failing = false;
    bus = createBus({ service: 'shop', transport, logger: silentLogger });
    bus.handle('email', [OrderPlaced], () => undefined);
    await waitUntil(
      async () =>
        json<unknown[]>(await tidings(['dead-letters', 'list', '-g', 'email', '--json'])).length === 2,
      {
        timeoutMs: 15_000,
        intervalMs: 200,
      },
    );
  });

  it('lists parked keys, and retries and skips them through the running consumer', async () => {
    expect(lines(ok(await tidings(['parked', 'list'])).stdout)).toEqual([
      expect.stringMatching(/^GROUP +TOPIC +KEY +EVENTS +ATTEMPTS +SINCE +ERROR$/),
      expect.stringMatching(/^ship +orders +o-1 +2 +1 +(just now|\S+ ago) +Error: carrier down$/),
      expect.stringMatching(/^ship +orders +o-2 +1 +1 +(just now|\S+ ago) +Error: carrier down$/),
    ]);
    const parked = json<Array<{ key: string; events: Array<{ type: string }> }>>(
      await tidings(['parked', 'list', '-g', 'ship', '--json']),
    );
    expect(parked.map((k) => [k.key, k.events.length])).toEqual([
      ['o-1', 2],
      ['o-2', 1],
    ]);
    fails(
      await tidings(['parked', 'retry', '-g', 'ship', '--topic', 'orders', '-k', 'o-1']),
      1,
      /^error: could not retry parked key o-1 of group ship: key "o-1" still parked/,
    );
    failing = false;
    expect(
      ok(await tidings(['parked', 'retry', '-g', 'ship', '--topic', 'orders', '-k', 'o-1'])).stdout,
    ).toMatch(/^Done: retry parked key o-1 of group ship: key "o-1" released: 2 event\(s\) handled\.\n$/);
    expect(
      json(await tidings(['parked', 'skip', '-g', 'ship', '--topic', 'orders', '-k', 'o-2', '--json'])),
    ).toMatchObject({
      action: 'skip',
      key: 'o-2',
      status: 'done',
    });
    expect(ok(await tidings(['parked', 'list'])).stdout).toBe('No parked keys.\n');
    expect(json(await tidings(['parked', 'list', '--json']))).toEqual([]);
    fails(
      await tidings(['parked', 'skip', '-g', 'ship', '--topic', 'orders', '-k', 'o-2']),
      1,
      /key "o-2" of group "ship" on topic "orders" is not parked/,
    );
  });
});

describe('help', () => {
  it('is complete at the top level and for every command group and command', async () => {
    const top = ok(await cli(['--help'])).stdout;
    for (const name of ['topics', 'publish', 'tail', 'groups', 'dead-letters', 'parked'])
      expect(top).toMatch(new RegExp(`^  ${name} `, 'm'));
    const tree: Record<string, string[]> = {
      topics: ['list', 'create', 'describe'],
      groups: ['list', 'describe', 'lag', 'reset'],
      'dead-letters': ['list', 'retry', 'skip'],
      parked: ['list', 'retry', 'skip'],
    };
    for (const [group, commands] of Object.entries(tree)) {
      const help = ok(await cli([group, '--help'])).stdout;
      for (const command of commands) expect(help).toMatch(new RegExp(`^  ${command} `, 'm'));
      for (const command of commands) {
        const leaf = ok(await cli([group, command, '--help'])).stdout;
        expect(leaf).toContain(`Usage: tidings ${group} ${command}`);
        expect(leaf).toMatch(/--data-dir <dir> +the data directory/);
        expect(leaf).toMatch(/--json +print machine-readable JSON/);
      }
    }
    expect(ok(await cli(['publish', '--help'])).stdout).toContain('The CLI has no schemas');
    expect(ok(await cli(['tail', '--help'])).stdout).toContain('--follow');
    expect(ok(await cli(['--version'])).stdout).toMatch(/^\d+\.\d+\.\d+\n$/);
    fails(await cli(['topics']), 2, /'tidings topics' needs a command: list, create, describe/);
    fails(await cli(['tial', 'orders']), 2, /unknown command 'tial' for 'tidings'; did you mean 'tail'\?/);
  });
});

afterAll(() => undefined);
