// The embedded log (`tidings/log`), durable (fsync before a publish resolves), against the peers measured in the
// same run: the disk's append + fdatasync limit, raw better-sqlite3, the in-memory transport, the DESIGN targets.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  createBus,
  createMemoryTransport,
  silentLogger,
  type OutgoingRecord,
  type PublishAck,
  type Transport,
} from 'tidings';
import { createLogTransport } from 'tidings/log';
import { percentile, tempDir, type DiskPeers } from './disk.js';
import { Measured, Probed, keys, payload, probePayload, wallClockMs } from './events.js';
import { median, result, type CaseGroup } from './report.js';

/** The DESIGN.md targets ("Performance targets"): quoted, never measured here. */
export const targets = {
  durablePublishPerSecond: 150_000,
  consumePerSecond: 700_000,
  p99InProcessMs: 1,
  p99BetweenProcessesMs: 5,
  backlogRssMb: 200,
} as const;

/** Concurrent `bus.publish` loops of the durable publish case. */
export const busPublishers = 64;
/** Concurrent `transport.publish` loops of the transport-level case, each publishing arrays of {@link batch}. */
export const transportPublishers = 8;
const batch = 100;
/** Rate of the latency cases, events/s. */
export const latencyRate = 2_000;

export interface LogBenchContext {
  events: number;
  runs: number;
  /** The disk peers, measured once per bench run, on first use. */
  diskPeers(): Promise<DiskPeers>;
}

export function logCases(ctx: LogBenchContext): CaseGroup[] {
  const { events, runs } = ctx;
  let encoded: Promise<OutgoingRecord[]> | undefined;
  /** `events` ReadingRecorded records as the bus encodes them, built once and replayed into each transport. */
  const records = () => (encoded ??= encodeRecords(events));

  return [
    {
      names: [`log: durable publish, ${busPublishers} concurrent bus.publish`],
      async run() {
        const peers = await ctx.diskPeers();
        const rate = await median(runs, () =>
          withLog(async (transport) => {
            const bus = createBus({ service: 'bench', transport, logger: silentLogger });
            await bus.publish(Measured, { sensorId: 'warm-up', payload }); // creates the topic
            let next = 0;
            const started = performance.now();
            await Promise.all(
              Array.from({ length: busPublishers }, async () => {
                for (let i = next++; i < events; i = next++)
                  await bus.publish(Measured, { sensorId: keys[i % keys.length]!, payload });
              }),
            );
            const seconds = (performance.now() - started) / 1000;
            await bus.close();
            return events / seconds;
          }),
        );
        const vsTarget = rate / targets.durablePublishPerSecond;
        return [
          result(
            `log: durable publish, ${busPublishers} concurrent bus.publish (${vsTarget.toFixed(2)}x the 150k/s target)`,
            rate,
            'events/s',
            'disk: 64 KiB appends + fdatasync',
            peers.appendFsync,
          ),
        ];
      },
    },
    {
      names: [`log: durable transport.publish, ${transportPublishers} concurrent arrays of ${batch}`],
      async run() {
        const peers = await ctx.diskPeers();
        const all = await records();
        const rate = await median(runs, () =>
          withLog(async (transport) => {
            await transport.publish('readings', all.slice(0, 1)); // creates the topic
            let next = 0;
            const started = performance.now();
            await Promise.all(
              Array.from({ length: transportPublishers }, async () => {
                for (let i = (next += batch) - batch; i < all.length; i = (next += batch) - batch)
                  await transport.publish('readings', all.slice(i, i + batch));
              }),
            );
            const seconds = (performance.now() - started) / 1000;
            return all.length / seconds;
          }),
        );
        return [
          result(
            `log: durable transport.publish, ${transportPublishers} concurrent arrays of ${batch}`,
            rate,
            'events/s',
            'raw better-sqlite3, WAL FULL, 1000-row tx',
            peers.sqlite,
          ),
        ];
      },
    },
    {
      names: ['log: sequential durable bus.publish (one awaited at a time)'],
      async run() {
        const peers = await ctx.diskPeers();
        const count = Math.max(1000, Math.floor(events / 20));
        const rate = await median(runs, () =>
          withLog(async (transport) => {
            const bus = createBus({ service: 'bench', transport, logger: silentLogger });
            await bus.publish(Measured, { sensorId: 'warm-up', payload });
            const started = performance.now();
            for (let i = 0; i < count; i++)
              await bus.publish(Measured, { sensorId: keys[i % keys.length]!, payload });
            const seconds = (performance.now() - started) / 1000;
            await bus.close();
            return count / seconds;
          }),
        );
        return [
          result(
            'log: sequential durable bus.publish (one awaited at a time)',
            rate,
            'events/s',
            '1 / one fdatasync',
            1000 / peers.fdatasyncMs,
          ),
        ];
      },
    },
    {
      names: ['log: consume, raw subscription + ack', 'log: consume via bus.handle'],
      async run() {
        const all = await records();
        const measure = (open: (run: (t: Transport) => Promise<number[]>) => Promise<number[]>) =>
          medians(runs, 2, () =>
            open(async (transport) => {
              const positions = await fill(transport, all);
              return [await rawConsume(transport, all.length), await busConsume(transport, positions)];
            }),
          );
        const [logRaw, logBus] = await measure(withLog);
        const [memoryRaw, memoryBus] = await measure(withMemory);
        return [
          result(
            'log: consume, raw subscription + ack',
            logRaw!,
            'events/s',
            'memory: raw subscription + ack',
            memoryRaw!,
          ),
          result('log: consume via bus.handle', logBus!, 'events/s', 'memory: bus.handle', memoryBus!),
        ];
      },
    },
    {
      names: ['log: publish→handler p50 at 2k/s, in-process', 'log: publish→handler p99 at 2k/s, in-process'],
      async run() {
        const count = latencyCount(events);
        const [p50, p99] = await medians(runs, 2, () =>
          withLog(async (transport) => summarize(await inProcessLatencies(transport, count))),
        );
        const peer = `DESIGN target: p99 ≤ ${targets.p99InProcessMs} ms`;
        return [
          result('log: publish→handler p50 at 2k/s, in-process', p50!, 'ms', peer, targets.p99InProcessMs),
          result('log: publish→handler p99 at 2k/s, in-process', p99!, 'ms', peer, targets.p99InProcessMs),
        ];
      },
    },
    {
      names: [
        'log: publish→handler p50 at 2k/s, between processes',
        'log: publish→handler p99 at 2k/s, between processes',
      ],
      async run() {
        const count = latencyCount(events);
        const [p50, p99] = await medians(runs, 2, () =>
          withLog(async (transport) => summarize(await crossProcessLatencies(transport, count))),
        );
        const peer = `DESIGN target: p99 ≤ ${targets.p99BetweenProcessesMs} ms`;
        return [
          result(
            'log: publish→handler p50 at 2k/s, between processes',
            p50!,
            'ms',
            peer,
            targets.p99BetweenProcessesMs,
          ),
          result(
            'log: publish→handler p99 at 2k/s, between processes',
            p99!,
            'ms',
            peer,
            targets.p99BetweenProcessesMs,
          ),
        ];
      },
    },
    {
      names: ['log: peak RSS of a consumer far behind'],
      async run() {
        const all = await records();
        const count = backlogCount(events);
        const dir = tempDir('backlog');
        try {
          // The backlog is written without fsync (it is not what is measured), then drained by a fresh process.
          const writer = createLogTransport({ dataDir: dir.path, durability: 'relaxed' });
          try {
            for (let written = 0; written < count;) {
              const start = written % all.length;
              const chunk = all.slice(start, Math.min(start + 1000, all.length, start + count - written));
              await writer.publish(Measured.topic, chunk);
              written += chunk.length;
            }
          } finally {
            await writer.close();
          }
          const report = await withChild('log-backlog.ts', [dir.path, String(count)], async (lines) => {
            const line = await withTimeout(lines.next(), 300_000, 'backlog consumer process');
            if (line.done) throw new Error('backlog consumer process exited before reporting');
            return JSON.parse(line.value) as { startRssMb: number; peakRssMb: number; seconds: number };
          });
          const behind = count >= 1e6 ? `${count / 1e6}M` : `${count / 1e3}k`;
          return [
            result(
              `log: peak RSS of a consumer far behind, draining ${behind} (RSS at start ${Math.round(report.startRssMb)} MB, ${Math.round(count / report.seconds).toLocaleString('en-US')} events/s)`,
              report.peakRssMb,
              'MB',
              'DESIGN limit at 10M behind',
              targets.backlogRssMb,
            ),
          ];
        } finally {
          dir.remove();
        }
      },
    },
  ];
}

/** How far behind the backlog case's consumer starts: 10 × `--events` (1M by default). */
function backlogCount(events: number): number {
  return events * 10;
}

/** Runs `body` against a fresh durable log in a temp dir, then closes it and removes the directory. */
type LogTransport = ReturnType<typeof createLogTransport>;

async function withLog<T>(body: (transport: LogTransport) => Promise<T>): Promise<T> {
  const dir = tempDir('log');
  const transport = createLogTransport({ dataDir: dir.path, durability: 'fsync' });
  try {
    return await body(transport);
  } finally {
    await transport.close();
    dir.remove();
  }
}

async function withMemory<T>(body: (transport: Transport) => Promise<T>): Promise<T> {
  const transport = createMemoryTransport();
  try {
    return await body(transport);
  } finally {
    await transport.close();
  }
}

/** Publishes `events` ReadingRecorded events through a bus on a memory transport and reads back what it stored. */
async function encodeRecords(events: number): Promise<OutgoingRecord[]> {
  const transport = createMemoryTransport();
  const bus = createBus({ service: 'bench', transport, logger: silentLogger });
  for (let i = 0; i < events; i += 500) {
    const items = [];
    for (let j = 0; j < 500 && i + j < events; j++)
      items.push({ event: Measured, data: { sensorId: keys[(i + j) % keys.length]!, payload } });
    await bus.publishMany(items);
  }
  const out: OutgoingRecord[] = [];
  const topic = await transport.admin.describeTopic(Measured.topic);
  for (const { partition, lowOffset, highOffset } of topic.partitionOffsets)
    for (let offset = lowOffset; offset < highOffset;) {
      const read = await transport.admin.read(Measured.topic, partition, offset, 10_000);
      for (const r of read) out.push({ key: r.key, headers: { ...r.headers }, value: r.value });
      offset += read.length;
      if (read.length === 0) break;
    }
  await bus.close();
  await transport.close();
  return out;
}

/** Publishes `records` in arrays of 1000; resolves with the last position written in each partition. */
async function fill(transport: Transport, records: readonly OutgoingRecord[]): Promise<PublishAck[]> {
  const last = new Map<number, PublishAck>();
  for (let i = 0; i < records.length; i += 1000)
    for (const ack of await transport.publish(Measured.topic, records.slice(i, i + 1000)))
      if ((last.get(ack.partition)?.offset ?? -1) < ack.offset) last.set(ack.partition, ack);
  return [...last.values()];
}

/** Drains `count` records with a raw subscription, acknowledging each; events/s. */
async function rawConsume(transport: Transport, count: number): Promise<number> {
  const subscription = transport.subscribe({
    group: 'raw',
    topics: [Measured.topic],
    startFrom: 'earliest',
    prefetch: 1024,
  });
  const started = performance.now();
  let seen = 0;
  for await (const delivery of subscription) {
    delivery.ack();
    if (++seen === count) break;
  }
  return count / ((performance.now() - started) / 1000);
}

/** Drains the topic up to `positions` through `bus.handle`; events/s. */
async function busConsume(transport: Transport, positions: readonly PublishAck[]): Promise<number> {
  const bus = createBus({ service: 'bench', transport, logger: silentLogger });
  const started = performance.now();
  const consumer = bus.handle('bus', [Measured], () => undefined, {
    concurrency: 64,
    prefetch: 1024,
    retry: false,
  });
  await consumer.waitFor(positions, { timeoutMs: 300_000 });
  const seconds = (performance.now() - started) / 1000;
  const processed = consumer.stats().processed;
  await bus.close();
  return processed / seconds;
}

/** Events per latency run: 5 s at 2k/s with the default 100,000 events. */
function latencyCount(events: number): number {
  return Math.max(2000, Math.floor(events / 10));
}

/** Leading events left out of the latency figures (start-up, JIT, first wake-ups). */
export function warmupCount(count: number): number {
  return Math.max(200, Math.floor(count / 10));
}

/** Publishes `count` probes at {@link latencyRate}, each stamped with its send time; rejects on a failed publish. */
async function publishPaced(transport: Transport, count: number): Promise<void> {
  const bus = createBus({ service: 'bench-publisher', transport, logger: silentLogger });
  const pending = new Set<Promise<unknown>>();
  let failure: Error | undefined;
  const started = performance.now();
  for (let seq = 0; seq < count;) {
    const due = Math.min(count, Math.floor(((performance.now() - started) * latencyRate) / 1000) + 1);
    for (; seq < due; seq++) {
      const sent = bus
        .publish(Probed, {
          sensorId: keys[seq % keys.length]!,
          seq,
          sentAt: wallClockMs(),
          payload: probePayload,
        })
        .catch(
          (error: unknown) =>
            (failure ??= error instanceof Error ? error : new Error('publish failed', { cause: error })),
        );
      pending.add(sent);
      void sent.finally(() => pending.delete(sent));
    }
    if (failure !== undefined) break;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  await Promise.all(pending);
  await bus.close();
  if (failure !== undefined) throw failure;
}

/** Publisher and `bus.handle` on one durable log transport in this process; per-event latencies in ms. */
async function inProcessLatencies(transport: Transport, count: number): Promise<number[]> {
  const bus = createBus({ service: 'bench-consumer', transport, logger: silentLogger });
  const warmup = warmupCount(count);
  const latencies: number[] = [];
  let seen = 0;
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  bus.handle(
    'latency',
    [Probed],
    (event) => {
      const at = wallClockMs();
      if (event.data.seq >= warmup) latencies.push(at - event.data.sentAt);
      if (++seen === count) done();
    },
    { concurrency: 64, retry: false },
  );
  await publishPaced(transport, count);
  await withTimeout(finished, 60_000, 'in-process latency consumer');
  await bus.close();
  return latencies;
}

/** Publisher here, `bus.handle` in a child process on the same data directory; per-event latencies in ms. */
async function crossProcessLatencies(transport: LogTransport, count: number): Promise<number[]> {
  return await withChild(
    'log-consumer.ts',
    [transport.dataDir, String(count), String(warmupCount(count))],
    async (lines) => {
      const ready = await withTimeout(lines.next(), 30_000, 'consumer process start');
      if (ready.done || ready.value !== 'ready')
        throw new Error(`consumer process: expected "ready", got ${ready.value}`);
      await publishPaced(transport, count);
      const reply = await withTimeout(lines.next(), 60_000, 'consumer process latencies');
      if (reply.done) throw new Error('consumer process exited before reporting');
      return JSON.parse(reply.value) as number[];
    },
  );
}

/**
 * Runs `node --import tsx --conditions=tidings-source bench/<script> ...args` and hands `body` its stdout lines; the
 * child is killed if it is still running when `body` settles.
 */
async function withChild<T>(
  script: string,
  args: readonly string[],
  body: (lines: AsyncGenerator<string>) => Promise<T>,
): Promise<T> {
  const path = fileURLToPath(new URL(`./${script}`, import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', '--conditions=tidings-source', path, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  try {
    return await body(readLines(child.stdout));
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill();
    await exited;
  }
}

async function* readLines(stream: NodeJS.ReadableStream): AsyncGenerator<string> {
  let buffered = '';
  for await (const chunk of stream) {
    buffered += String(chunk);
    for (let at = buffered.indexOf('\n'); at >= 0; at = buffered.indexOf('\n')) {
      yield buffered.slice(0, at);
      buffered = buffered.slice(at + 1);
    }
  }
}

/** [p50, p99] of `latencies`. */
function summarize(latencies: number[]): number[] {
  return [percentile(latencies, 0.5), percentile(latencies, 0.99)];
}

/** Per position, the median over `runs` of `measure`, which returns `width` figures per run. */
async function medians(runs: number, width: number, measure: () => Promise<number[]>): Promise<number[]> {
  const samples: number[][] = Array.from({ length: width }, () => []);
  for (let i = 0; i < runs; i++) (await measure()).forEach((value, col) => samples[col]?.push(value));
  return samples.map((values) => percentile(values, 0.5));
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
