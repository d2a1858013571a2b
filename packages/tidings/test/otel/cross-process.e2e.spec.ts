/**
 * One trace across two processes: a producer process publishes OrderPlaced; a consumer process handles it in group
 * billing, publishes PaymentRequested, and handles that in group ledger. Each process records its spans with the
 * OpenTelemetry SDK's in-memory exporter and prints them; together they must form one trace with the right
 * parents, over the embedded log (a shared data directory) and over NATS JetStream.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { brokerMissing, prefixVariable, removePrefix, uniquePrefix } from '../conformance/children/nats.js';
import type { SpanJson } from './support.js';

const child = fileURLToPath(new URL('./children/service.ts', import.meta.url));
const repo = fileURLToPath(new URL('../../../../', import.meta.url));

interface Running {
  /** Resolves with the spans the process printed once it exits with code 0. */
  spans: Promise<SpanJson[]>;
  /** Resolves when the process printed `line`. */
  printed(line: string): Promise<void>;
}

function start(args: string[], env: Record<string, string> = {}): Running {
  const proc = spawn(process.execPath, ['--import', 'tsx', '--conditions=tidings-source', child, ...args], {
    cwd: repo,
    env: { ...process.env, ...env, NODE_NO_WARNINGS: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const waiters: Array<{ line: string; resolve: () => void }> = [];
  proc.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    for (const w of [...waiters])
      if (stdout.split('\n').includes(w.line)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
  });
  proc.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', resolve));
  return {
    spans: exited.then((code) => {
      if (code !== 0) throw new Error(`${args.join(' ')} exited with ${code}: ${stderr}`);
      return stdout
        .split('\n')
        .filter((line) => line.startsWith('span '))
        .map((line) => JSON.parse(line.slice(5)) as SpanJson);
    }),
    printed: (line) =>
      new Promise<void>((resolve, reject) => {
        if (stdout.split('\n').includes(line)) return resolve();
        waiters.push({ line, resolve });
        void exited.then((code) =>
          reject(new Error(`exited (${code}) before printing "${line}": ${stderr}`)),
        );
      }),
  };
}

/** Runs the consumer, then the producer, and checks that their spans form one trace. */
async function expectOneTrace(args: string[], env: Record<string, string> = {}): Promise<void> {
  const consumer = start(['consumer', ...args], env);
  await consumer.printed('ready');
  const producer = start(['producer', ...args], env);
  const [produced, consumed] = await Promise.all([producer.spans, consumer.spans]);
  const spans = [...produced, ...consumed];
  expect(spans.map((s) => s.name).sort()).toEqual([
    'process otel-orders',
    'process otel-payments',
    'publish otel-orders',
    'publish otel-payments',
  ]);
  expect(new Set(spans.map((s) => s.traceId)).size).toBe(1);
  const byName = (name: string) => spans.find((s) => s.name === name)!;
  const publishOrders = byName('publish otel-orders');
  const processOrders = byName('process otel-orders');
  const publishPayments = byName('publish otel-payments');
  const processPayments = byName('process otel-payments');
  expect(produced).toEqual([publishOrders]); // the producer process made only the publish span
  expect(publishOrders.parentSpanId).toBeUndefined();
  expect(processOrders.parentSpanId).toBe(publishOrders.spanId);
  expect(processOrders.links).toEqual([{ traceId: publishOrders.traceId, spanId: publishOrders.spanId }]);
  expect(publishPayments.parentSpanId).toBe(processOrders.spanId);
  expect(processPayments.parentSpanId).toBe(publishPayments.spanId);
  expect(processOrders.attributes['messaging.consumer.group.name']).toBe('billing');
  expect(processPayments.attributes['messaging.consumer.group.name']).toBe('ledger');
  expect(processOrders.attributes['messaging.message.id']).toBe(
    publishOrders.attributes['messaging.message.id'],
  );
}

const missing = await brokerMissing();
const prefix = uniquePrefix('otel');

describe('one trace across two processes', () => {
  it('over the embedded log (a shared data directory)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tidings-otel-'));
    try {
      await expectOneTrace(['log', dir]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  afterAll(async () => {
    if (missing === undefined) await removePrefix(prefix);
  }, 30_000);
  it.skipIf(missing !== undefined)(
    `over NATS JetStream${missing ? ` — skipped: ${missing}` : ''}`,
    async () => {
      await expectOneTrace(['nats'], { [prefixVariable]: prefix });
    },
    90_000,
  );
});
