import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createBus, readLimitMax, silentLogger, type Bus, type GroupDescription } from '../src/index.js';
import { createLogTransport, type LogTransport } from '../src/log/index.js';
import { publishTopic, readingOn } from './crash-fixtures/events.js';

// Proof under crashes (issue 3): real processes on one data directory, killed with SIGKILL at random moments. The
// children run `node --import tsx --conditions=tidings-source test/crash-fixtures/<script>`. Each is started ahead
// of its turn (loading TypeScript takes seconds on a busy machine) and opens the log only when told "go" on stdin.
// Nothing here sleeps to wait for progress: every wait is for stdout lines or a condition, with a generous deadline.

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const fixturesDir = fileURLToPath(new URL('./crash-fixtures/', import.meta.url));

const children = new Set<ChildProcess>();
const childExits = new Set<Promise<unknown>>();
const dirs: string[] = [];
const transports: LogTransport[] = [];

afterEach(async () => {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await Promise.all(childExits);
  children.clear();
  childExits.clear();
  await Promise.all(transports.splice(0).map((transport) => transport.close()));
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-crash-'));
  dirs.push(dir);
  return dir;
}

function openLog(dataDir: string): LogTransport {
  const transport = createLogTransport({ dataDir });
  transports.push(transport);
  return transport;
}

function testBus(transport: LogTransport): Bus {
  return createBus({ service: 'crash-test', transport, logger: silentLogger });
}

const randomInt = (min: number, max: number) => min + Math.floor(Math.random() * (max - min + 1));

/** A consumer fixture's line: "<pid> <key> <seq> <partition> <offset> <deliveryCount>". */
interface Handled {
  pid: number;
  key: string;
  seq: number;
  partition: number;
  offset: number;
  deliveryCount: number;
}

const handledLine = /^(\d+) (\S+) (\d+) (\d+) (\d+) (\d+)$/;

function parseHandled(line: string): Handled {
  const match = handledLine.exec(line);
  if (!match) throw new Error(`malformed record line ${JSON.stringify(line)}`);
  return {
    pid: Number(match[1]),
    key: match[2]!,
    seq: Number(match[3]),
    partition: Number(match[4]),
    offset: Number(match[5]),
    deliveryCount: Number(match[6]),
  };
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface Child {
  readonly pid: number;
  /** Complete stdout lines so far (all of them once `closed` resolved). */
  readonly lines: string[];
  /** The lines of a consumer fixture that record a handled event, parsed. */
  readonly handled: Handled[];
  readonly closed: Promise<Exit>;
  stderr(): string;
  /** Output lines other than "loaded ..." and "ready ...": acknowledgements or handled events. */
  readonly count: () => number;
  /** Resolves once the child has loaded its modules (it prints "loaded <pid>", then waits for `go`). */
  loaded(): Promise<void>;
  /** Lets the child open the log (it waits for this after loading its modules). */
  go(): void;
  /** Resolves once `condition()` holds (checked on every stdout chunk); rejects at the deadline or if it exits. */
  until(condition: () => boolean, what: string, timeoutMs?: number): Promise<void>;
  /** SIGKILL; resolves once the process is gone and its stdout fully read. */
  kill(): Promise<Exit>;
}

/** Starts `crash-fixtures/<script>`; it is killed after the test if still alive. */
function startChild(script: string, args: readonly string[]): Child {
  const proc = spawn(
    process.execPath,
    ['--import', 'tsx', '--conditions=tidings-source', path.join(fixturesDir, script), ...args],
    { cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'] },
  );
  children.add(proc);
  const lines: string[] = [];
  const handled: Handled[] = [];
  let count = 0;
  let stderr = '';
  let buffered = '';
  let exit: Exit | undefined;
  const checks = new Set<() => void>();
  const runChecks = () => {
    for (const check of [...checks]) check();
  };
  proc.stdin.on('error', () => {}); // EPIPE once it is dead: the exit tells the story
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (chunk: string) => {
    buffered += chunk;
    const parts = buffered.split('\n');
    buffered = parts.pop()!;
    if (parts.length === 0) return;
    for (const part of parts) {
      lines.push(part);
      if (part.startsWith('loaded ') || part.startsWith('ready ')) continue;
      count++;
      if (script === 'consumer.ts') handled.push(parseHandled(part));
    }
    runChecks();
  });
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (chunk: string) => (stderr += chunk));
  const closed = new Promise<Exit>((resolve) =>
    proc.on('close', (code, signal) => {
      exit = { code, signal };
      resolve(exit);
      runChecks();
    }),
  );
  childExits.add(closed);
  const child: Child = {
    pid: proc.pid!,
    lines,
    handled,
    closed,
    count: () => count,
    stderr: () => stderr,
    loaded: () => child.until(() => lines.some((line) => line.startsWith('loaded ')), 'loaded line'),
    go: () => proc.stdin.write('go\n'),
    until(condition, what, timeoutMs = 60_000) {
      return new Promise<void>((resolve, reject) => {
        const finish = (error?: Error) => {
          clearTimeout(timer);
          checks.delete(check);
          if (error) reject(error);
          else resolve();
        };
        const check = () => {
          if (condition()) finish();
          else if (exit) {
            finish(
              new Error(
                `${script} (pid ${proc.pid}) exited (${exit.signal ?? exit.code}) before ${what}; stderr:\n${stderr}`,
              ),
            );
          }
        };
        const timer = setTimeout(
          () =>
            finish(
              new Error(
                `${script} (pid ${proc.pid}): no ${what} within ${timeoutMs} ms (${lines.length} lines); stderr:\n${stderr}`,
              ),
            ),
          timeoutMs,
        );
        checks.add(check);
        check();
      });
    },
    kill() {
      if (!exit) proc.kill('SIGKILL');
      return closed;
    },
  };
  return child;
}

/** Expects the child to have died of our SIGKILL, not of its own accord. */
function expectKilled(child: Child, exit: Exit): void {
  expect(
    exit.signal,
    `pid ${child.pid} ended with ${exit.code} before the kill; stderr:\n${child.stderr()}`,
  ).toBe('SIGKILL');
}

/** Per key, the seqs in the order they were handled. */
function seqsByKey(handled: readonly Handled[]): Map<string, number[]> {
  const byKey = new Map<string, number[]>();
  for (const { key, seq } of handled) {
    const list = byKey.get(key);
    if (list) list.push(seq);
    else byKey.set(key, [seq]);
  }
  return byKey;
}

describe('embedded log: proof under crashes (SIGKILL of real processes)', () => {
  it('keeps every acknowledged event exactly once through 20 SIGKILLs of a publishing process', async () => {
    const dataDir = tempDir();
    const kills = 20;
    /** Acknowledged events: id → where the receipt said it landed. */
    const acked = new Map<string, { partition: number; offset: number; run: number }>();
    const plan: string[] = [];
    const ackLine = /^(\S+) (\d+) (\d+)$/;

    // The next processes load while one publishes (two ahead: loading takes seconds on a busy machine); each opens
    // the log only once told "go", after its predecessor is dead.
    const ahead: Child[] = [];
    let started = 0;
    const startAhead = () => {
      while (ahead.length < 2 && started < kills) {
        ahead.push(startChild('publisher.ts', [dataDir, '8']));
        started++;
      }
    };
    startAhead();
    for (let run = 0; run < kills; run++) {
      const current = ahead.shift()!;
      startAhead();
      await current.loaded();
      current.go();
      const goAt = performance.now();
      if (run % 4 === 3) {
        // A random moment after "go": while it opens (and recovers) the log, creates the topic, or publishes.
        const delayMs = randomInt(0, 800);
        plan.push(`run ${run}: kill ${delayMs} ms after go`);
        await new Promise((resolve) => setTimeout(resolve, delayMs));
      } else {
        const target = randomInt(1, 800);
        plan.push(`run ${run}: kill after ${target} acks`);
        await current.until(() => current.count() >= target, `${target} acks (run ${run})`);
      }
      expectKilled(current, await current.kill());
      // Every line read, including those printed between the kill and the death: each is an acknowledged event.
      for (const line of current.lines) {
        if (line.startsWith('loaded ') || line.startsWith('ready ')) continue;
        const match = ackLine.exec(line);
        expect(match, `malformed line ${JSON.stringify(line)}`).not.toBeNull();
        const id = match![1]!;
        expect(acked.has(id), `id ${id} acknowledged twice`).toBe(false);
        acked.set(id, { partition: Number(match![2]), offset: Number(match![3]), run });
      }
      plan[plan.length - 1] +=
        `: ${current.count()} acks, killed after ${Math.round(performance.now() - goAt)} ms`;
    }
    const context = `kill plan:\n${plan.join('\n')}`;
    expect(acked.size, context).toBeGreaterThan(1000);

    // The raw database, as the last kill left it, passes SQLite's own check.
    const db = new Database(path.join(dataDir, 'log.db'));
    try {
      expect(db.pragma('integrity_check', { simple: true }), context).toBe('ok');
    } finally {
      db.close();
    }

    // Read everything back through a fresh transport: dense offsets from 0, each acknowledged id exactly once, where
    // its receipt said.
    const log = openLog(dataDir);
    const topic = await log.admin.describeTopic(publishTopic);
    const found = new Map<string, { partition: number; offset: number }>();
    const duplicates: string[] = [];
    let stored = 0;
    for (const { partition, lowOffset, highOffset } of topic.partitionOffsets) {
      expect(lowOffset, context).toBe(0);
      let expected = 0;
      for (;;) {
        const page = await log.admin.read(publishTopic, partition, expected, readLimitMax);
        if (page.length === 0) break;
        for (const record of page) {
          expect(record.offset, `partition ${partition}: offsets not dense; ${context}`).toBe(expected);
          expected++;
          const id = record.headers['ce-id'];
          expect(id, `partition ${partition} offset ${record.offset} has no ce-id`).toBeDefined();
          if (found.has(id!)) duplicates.push(id!);
          found.set(id!, { partition, offset: record.offset });
        }
      }
      expect(expected, `partition ${partition}: read up to ${expected}, high offset ${highOffset}`).toBe(
        highOffset,
      );
      stored += expected;
    }
    expect(duplicates, `ids stored more than once; ${context}`).toEqual([]);
    const missing: string[] = [];
    const misplaced: string[] = [];
    for (const [id, ack] of acked) {
      const where = found.get(id);
      if (!where) missing.push(`${id} (run ${ack.run}, p${ack.partition}@${ack.offset})`);
      else if (where.partition !== ack.partition || where.offset !== ack.offset)
        misplaced.push(
          `${id}: acked p${ack.partition}@${ack.offset}, stored p${where.partition}@${where.offset}`,
        );
    }
    expect(missing, `acknowledged events lost (${missing.length} of ${acked.size}); ${context}`).toEqual([]);
    expect(misplaced, context).toEqual([]);
    expect(stored).toBeGreaterThanOrEqual(acked.size); // unacknowledged-but-written events may be there too
  }, 180_000);

  it('redelivers after a consumer process is killed mid-batch only what followed its last commit, skipping nothing', async () => {
    const dataDir = tempDir();
    const topic = 'crash.consumed';
    const log = openLog(dataDir);
    await log.admin.createTopic(topic, { partitions: 4 });
    const Reading = readingOn(topic);
    const bus = testBus(log);
    const keys = 100;
    const total = 3_000;
    for (let start = 0; start < total; start += 500) {
      await bus.publishMany(
        Array.from({ length: 500 }, (_, i) => ({
          event: Reading,
          data: { key: `key-${(start + i) % keys}`, seq: Math.floor((start + i) / keys) },
        })),
      );
    }
    const { partitionOffsets } = await log.admin.describeTopic(topic);
    const high = new Map(partitionOffsets.map((p) => [p.partition, p.highOffset]));

    const options = JSON.stringify({
      dataDir,
      topic,
      group: 'G',
      concurrency: 4,
      leaseMs: 10_000,
      heartbeatIntervalMs: 2_000,
      maxDelayMs: 3,
      record: 'end', // once the handler succeeded, just before the bus acknowledges it
    });
    const first = startChild('consumer.ts', [options]);
    const second = startChild('consumer.ts', [options]); // loads now, opens the log after the kill
    await first.loaded();
    first.go();
    const killAt = randomInt(300, 1_200);
    await first.until(() => first.handled.length >= killAt, `${killAt} handled events`);
    expectKilled(first, await first.kill());

    // The group's committed offsets as the kill left them; nobody else is in the group yet.
    const atKill = await log.admin.describeGroup('G');
    const committed = new Map(atKill.lag.map((l) => [l.partition, l.committedOffset]));
    expect(committed.size).toBe(4);
    const run1 = first.handled;
    const run1Offsets = new Set(run1.map((h) => `${h.partition}/${h.offset}`));
    const context = `killed after ${killAt} (${run1.length} handled); committed ${JSON.stringify([...committed])}`;
    // Mid-stream: the kill came before the first run finished (else this test proves nothing).
    expect(run1Offsets.size, context).toBeLessThan(total);
    // A commit only follows success: every offset below a committed one was handled by the first run.
    const committedUnhandled: string[] = [];
    for (const [partition, offset] of committed) {
      for (let o = 0; o < offset; o++)
        if (!run1Offsets.has(`${partition}/${o}`)) committedUnhandled.push(`p${partition}@${o}`);
    }
    expect(committedUnhandled, `committed but never handled; ${context}`).toEqual([]);

    await second.loaded();
    second.go();
    const remaining = [...committed].reduce(
      (sum, [partition, offset]) => sum + high.get(partition)! - offset,
      0,
    );
    const run2Offsets = new Set<string>();
    const run2 = second.handled;
    let run2Seen = 0;
    await second.until(() => {
      for (; run2Seen < run2.length; run2Seen++)
        run2Offsets.add(`${run2[run2Seen]!.partition}/${run2[run2Seen]!.offset}`);
      return run2Offsets.size >= remaining;
    }, `${remaining} handled events`);
    await vi.waitFor(
      async () => {
        const { lag } = await log.admin.describeGroup('G');
        expect(lag.map((l) => l.lag)).toEqual([0, 0, 0, 0]);
      },
      { timeout: 30_000, interval: 50 },
    );
    for (const h of run2) run2Offsets.add(`${h.partition}/${h.offset}`);

    // Handled again: only events at or after their partition's committed offset, and every one of them.
    const early = run2.filter((h) => h.offset < committed.get(h.partition)!);
    expect(
      early.map((h) => `p${h.partition}@${h.offset}`),
      `handled again below the commit; ${context}`,
    ).toEqual([]);
    const notRedelivered: string[] = [];
    for (const [partition, offset] of committed) {
      for (let o = offset; o < high.get(partition)!; o++)
        if (!run2Offsets.has(`${partition}/${o}`)) notRedelivered.push(`p${partition}@${o}`);
    }
    expect(notRedelivered, `at or after the commit, not handled after the restart; ${context}`).toEqual([]);
    // What the killed process had handled comes back marked as a redelivery, never as a first delivery.
    const firstAgain = run2.filter(
      (h) => run1Offsets.has(`${h.partition}/${h.offset}`) && h.deliveryCount < 2,
    );
    expect(
      firstAgain.map((h) => `p${h.partition}@${h.offset}`),
      `handled before the kill, redelivered with deliveryCount 1; ${context}`,
    ).toEqual([]);
    // Nothing skipped: every event handled at least once across both runs.
    const all = new Set([...run1Offsets, ...run2Offsets]);
    expect(all.size, context).toBe(total);
    const seqs = new Set([...run1, ...run2].map((h) => `${h.key}/${h.seq}`));
    expect(seqs.size).toBe(total);
    // Within each run, each key in order.
    for (const run of [run1, run2]) {
      for (const [key, list] of seqsByKey(run)) {
        for (let i = 1; i < list.length; i++) {
          expect(list[i]!, `key ${key} out of order: ${list.join(',')}`).toBeGreaterThan(list[i - 1]!);
        }
      }
    }
  }, 120_000);

  it('hands a killed member’s partitions to the surviving process within the lease, keeping per-key order', async () => {
    const dataDir = tempDir();
    const recordFile = path.join(tempDir(), 'handled.log');
    const topic = 'crash.handover';
    const partitions = 8;
    const leaseMs = 1_500;
    const keys = 1_000;
    const rounds = 6; // round r publishes seq r of every key
    const log = openLog(dataDir);
    await log.admin.createTopic(topic, { partitions });
    const Reading = readingOn(topic);
    const bus = testBus(log);
    const publishRound = (round: number) =>
      bus.publishMany(
        Array.from({ length: keys }, (_, k) => ({ event: Reading, data: { key: `key-${k}`, seq: round } })),
      );
    await publishRound(0);
    await publishRound(1);

    const options = JSON.stringify({
      dataDir,
      topic,
      group: 'G',
      concurrency: 4,
      leaseMs,
      heartbeatIntervalMs: 300,
      maxDelayMs: 2,
      record: 'start',
      appendFile: recordFile,
    });
    const pair = [startChild('consumer.ts', [options]), startChild('consumer.ts', [options])] as const;
    for (const child of pair) await child.loaded();
    for (const child of pair) child.go();
    const handledSoFar = () => pair[0].handled.length + pair[1].handled.length;

    // Wait until both members own partitions; then the victim handles some more before it dies.
    const allPartitions = Array.from({ length: partitions }, (_, p) => p);
    let before: GroupDescription | undefined;
    await vi.waitFor(
      async () => {
        before = await log.admin.describeGroup('G');
        expect(before.members).toHaveLength(2);
        for (const member of before.members) expect(member.assignments.length).toBeGreaterThan(0);
        const owned = before.members.flatMap((m) => m.assignments.map((a) => a.partition));
        expect(owned.sort((a, b) => a - b)).toEqual(allPartitions);
      },
      { timeout: 60_000, interval: 20 },
    );
    // The rest of the stream, now that both own partitions: it follows the consumers' progress (about two rounds
    // ahead), so the victim has a backlog when it dies and events keep coming during the hand-over.
    const feeding = (async () => {
      for (let round = 2; round < rounds; round++) {
        await vi.waitFor(() => expect(handledSoFar()).toBeGreaterThanOrEqual((round - 1) * keys), {
          timeout: 60_000,
          interval: 10,
        });
        await publishRound(round);
      }
    })();
    feeding.catch(() => {}); // awaited below; this only keeps an early failure from being reported as unhandled
    const victimIndex = randomInt(0, 1);
    const victim = pair[victimIndex]!;
    const survivor = pair[1 - victimIndex]!;
    const extra = randomInt(50, 500);
    const victimTarget = victim.handled.length + extra;
    await victim.until(() => victim.handled.length >= victimTarget, `${victimTarget} handled events`);
    const membersBefore = before!.members.map((m) => m.memberId);
    expectKilled(victim, await victim.kill());
    const killedAfter = victim.handled.length;

    // Its partitions are taken over within the lease (a deadline with a generous margin for a loaded machine).
    let after = before!;
    await vi.waitFor(
      async () => {
        after = await log.admin.describeGroup('G');
        expect(after.members).toHaveLength(1);
        expect(membersBefore).toContain(after.members[0]!.memberId);
        expect(after.members[0]!.assignments.map((a) => a.partition).sort((a, b) => a - b)).toEqual(
          allPartitions,
        );
      },
      { timeout: leaseMs + 20_000, interval: 20 },
    );
    const survivorMember = after.members[0]!.memberId;
    const victimPartitions = new Set(
      before!.members.find((m) => m.memberId !== survivorMember)!.assignments.map((a) => a.partition),
    );

    await feeding;
    const total = keys * rounds;
    const distinct = new Set(victim.handled.map((h) => `${h.key}/${h.seq}`));
    let survivorSeen = 0;
    await survivor.until(() => {
      for (; survivorSeen < survivor.handled.length; survivorSeen++) {
        const h = survivor.handled[survivorSeen]!;
        distinct.add(`${h.key}/${h.seq}`);
      }
      return distinct.size === total;
    }, `all ${total} events handled`);
    await vi.waitFor(
      async () => {
        const { lag } = await log.admin.describeGroup('G');
        expect(lag.every((l) => l.lag === 0)).toBe(true);
      },
      { timeout: 30_000, interval: 50 },
    );
    expectKilled(survivor, await survivor.kill()); // so that the record file is complete

    // Both processes' records in the order they were appended to one file (O_APPEND, one write per line).
    const records = fs.readFileSync(recordFile, 'utf8').split('\n').filter(Boolean).map(parseHandled);
    // Each line goes to the file, then to stdout: a kill between the two leaves one line in the file only.
    for (const child of [victim, survivor]) {
      const inFile = records.filter((r) => r.pid === child.pid).length;
      expect(inFile - child.handled.length, `pid ${child.pid}: ${inFile} lines in the file`).toBeOneOf([
        0, 1,
      ]);
    }
    const context = `victim pid ${victim.pid} (member of ${[...victimPartitions].join(',')}) killed after ${killedAfter} handled; survivor pid ${survivor.pid}`;
    expect(new Set(records.map((r) => r.pid))).toEqual(new Set([victim.pid, survivor.pid]));
    // The survivor handled records of partitions the victim owned: the hand-over happened.
    expect(
      records.some((r) => r.pid === survivor.pid && victimPartitions.has(r.partition)),
      context,
    ).toBe(true);

    // Per key: with re-deliveries of already handled seqs removed, seqs come 0, 1, 2, ... in append order: never a
    // gap, never a later seq handled (by either process) before an earlier one.
    const handled = new Map<string, Set<number>>();
    const violations: string[] = [];
    for (const [index, record] of records.entries()) {
      let seen = handled.get(record.key);
      if (!seen) handled.set(record.key, (seen = new Set()));
      if (seen.has(record.seq)) continue; // a re-delivery
      if (record.seq !== seen.size && violations.length < 20) {
        violations.push(
          `line ${index + 1}: pid ${record.pid} handled ${record.key} seq ${record.seq} (p${record.partition}@${record.offset}) ` +
            `when the next unhandled seq was ${seen.size}`,
        );
      }
      seen.add(record.seq);
    }
    expect(violations, context).toEqual([]);
    // What the victim had started handling comes back to the survivor marked as a redelivery.
    const victimStarted = new Set(
      records.filter((r) => r.pid === victim.pid).map((r) => `${r.partition}/${r.offset}`),
    );
    const firstAgain = records.filter(
      (r) => r.pid === survivor.pid && victimStarted.has(`${r.partition}/${r.offset}`) && r.deliveryCount < 2,
    );
    expect(
      firstAgain.map((r) => `p${r.partition}@${r.offset}`),
      `handled by the victim, redelivered with deliveryCount 1; ${context}`,
    ).toEqual([]);
    expect(handled.size).toBe(keys);
    for (const [key, seen] of handled) expect(seen.size, `key ${key}`).toBe(rounds);
  }, 120_000);
});
