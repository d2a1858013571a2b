/** Shared helpers of the embedded log's tests (`test/log-*.spec.ts`). */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, vi } from 'vitest';
import { abortReason, type Clock } from '../../src/core/clock.js';
import { isTidingsError, type ErrorCode, type TidingsError } from '../../src/core/errors.js';
import { partitionForKey } from '../../src/core/partitioner.js';
import type { Delivery, OutgoingRecord, Subscription } from '../../src/core/transport.js';
import { createLogTransport, type LogTransport, type LogTransportOptions } from '../../src/log/index.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function rec(key: string, value: string, extra: Partial<OutgoingRecord> = {}): OutgoingRecord {
  return { key, headers: {}, value: encoder.encode(value), ...extra };
}

export function text(record: { value: Uint8Array }): string {
  return decoder.decode(record.value);
}

/** A fresh directory under the OS temp dir; removed by {@link cleanup}. */
export function tempDir(prefix = 'tidings-log-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  created.dirs.push(dir);
  return dir;
}

const created: { dirs: string[]; transports: LogTransport[]; children: ChildProcess[] } = {
  dirs: [],
  transports: [],
  children: [],
};

/** A log transport on `dataDir` (a fresh temp dir if absent), closed by {@link cleanup}. */
export function openLog(options: LogTransportOptions = {}): LogTransport {
  const transport = createLogTransport({ dataDir: options.dataDir ?? tempDir(), ...options });
  created.transports.push(transport);
  return transport;
}

/** Closes every transport, kills every child process and removes every temp dir this test made. */
export async function cleanup(): Promise<void> {
  for (const child of created.children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
  await Promise.all(created.transports.splice(0).map((transport) => transport.close()));
  for (const dir of created.dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
}

/** A clock that moves only when told to; sleeps resolve when `advance` passes their due time. */
export function createTestClock(
  startMs = 1_000_000,
): Clock & { advance(ms: number): void; sleepers(): number } {
  let nowMs = startMs;
  const timers = new Set<{ dueAtMs: number; resolve: () => void }>();
  return {
    now: () => nowMs,
    sleep: (durationMs, signal) =>
      new Promise<void>((resolve, reject) => {
        if (signal?.aborted) {
          reject(abortReason(signal));
          return;
        }
        const timer = { dueAtMs: nowMs + Math.max(0, durationMs), resolve };
        timers.add(timer);
        signal?.addEventListener(
          'abort',
          () => {
            timers.delete(timer);
            reject(abortReason(signal));
          },
          { once: true },
        );
      }),
    advance(ms) {
      nowMs += ms;
      for (const timer of [...timers]) {
        if (timer.dueAtMs <= nowMs) {
          timers.delete(timer);
          timer.resolve();
        }
      }
    },
    sleepers: () => timers.size,
  };
}

/** Awaits a condition (an assertion that stops throwing) with a deadline; never a fixed sleep. */
export async function until(assertion: () => void | Promise<void>, timeoutMs = 10_000): Promise<void> {
  await vi.waitFor(assertion, { timeout: timeoutMs, interval: 2 });
}

/** Lets queued callbacks run without waiting on time: a bounded number of macrotask turns. */
export async function turns(count = 5): Promise<void> {
  for (let i = 0; i < count; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/**
 * Runs a `for await` loop over the subscription in the background. `handle` settles each delivery (default: ack at
 * once) and may return `'stop'` to leave the loop (which closes the subscription).
 */
export function consume(sub: Subscription, handle: (delivery: Delivery) => void | 'stop' = (d) => d.ack()) {
  const received: Delivery[] = [];
  const done = (async () => {
    for await (const delivery of sub) {
      received.push(delivery);
      if (handle(delivery) === 'stop') break;
    }
  })();
  return { received, done };
}

export async function expectTidingsError(promise: Promise<unknown>, code: ErrorCode): Promise<TidingsError> {
  const error: unknown = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(isTidingsError(error, code), `expected TidingsError ${code}, got ${String(error)}`).toBe(true);
  return error as TidingsError;
}

export function syncError(call: () => unknown): unknown {
  try {
    call();
  } catch (error) {
    return error;
  }
  return undefined;
}

/** A key that `partitionForKey` places in `partition` of `partitions`. */
export function keyIn(partition: number, partitions: number): string {
  for (let i = 0; ; i++) if (partitionForKey(`k${i}`, partitions) === partition) return `k${i}`;
}

/** Per key, the sequence numbers in the order a group received them. */
export function sequencesByKey(received: ReadonlyArray<{ key: string; seq: number }>): Map<string, number[]> {
  const byKey = new Map<string, number[]>();
  for (const { key, seq } of received) {
    const list = byKey.get(key) ?? [];
    list.push(seq);
    byKey.set(key, list);
  }
  return byKey;
}

const fixturesDir = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(fixturesDir, '../../../..');

/**
 * Starts `test/log-fixtures/<script>` in a child process (`node --import tsx --conditions=tidings-source`). Lines it
 * prints are collected in `lines`; `exited` resolves with its exit code. Killed by {@link cleanup}.
 */
export function spawnFixture(script: string, args: readonly string[]) {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', '--conditions=tidings-source', path.join(fixturesDir, script), ...args],
    { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  created.children.push(child);
  const lines: string[] = [];
  let stderr = '';
  let buffered = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    buffered += chunk;
    const parts = buffered.split('\n');
    buffered = parts.pop()!;
    lines.push(...parts);
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, lines, exited, stderr: () => stderr };
}
