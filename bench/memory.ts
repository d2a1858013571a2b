// The bus's own overhead, measured over the in-memory transport: Tidings publish and consume against the raw
// transport calls in the same run, on 256-byte events.
import { z } from 'zod';
import { createBus, createMemoryTransport, defineEvent, silentLogger, type OutgoingRecord } from 'tidings';
import { median, result, type BenchResult } from './report.js';

const Measured = defineEvent('ReadingRecorded', {
  schema: z.object({ sensorId: z.string(), payload: z.string() }),
  key: 'sensorId',
  topic: 'readings',
});

const payload = 'x'.repeat(180); // with the envelope, about 256 bytes on the wire as JSON
const keys = Array.from({ length: 1000 }, (_, i) => `sensor-${i}`);

export async function benchMemory(events: number, runs: number): Promise<BenchResult[]> {
  const batch = 100;

  const rawPublish = await median(runs, async () => {
    const transport = createMemoryTransport();
    const value = Buffer.from(JSON.stringify({ sensorId: 'sensor-0', payload }));
    const started = performance.now();
    for (let i = 0; i < events; i += batch) {
      const records: OutgoingRecord[] = [];
      for (let j = 0; j < batch; j++) records.push({ key: keys[(i + j) % keys.length]!, headers: {}, value });
      await transport.publish('readings', records);
    }
    const rate = events / ((performance.now() - started) / 1000);
    await transport.close();
    return rate;
  });

  const busPublish = await median(runs, async () => {
    // The transport is explicit: without one, createBus now uses the embedded log in ./.tidings.
    const transport = createMemoryTransport();
    const bus = createBus({ service: 'bench', transport, logger: silentLogger });
    const started = performance.now();
    for (let i = 0; i < events; i += batch) {
      const items = [];
      for (let j = 0; j < batch; j++)
        items.push({ event: Measured, data: { sensorId: keys[(i + j) % keys.length]!, payload } });
      await bus.publishMany(items);
    }
    const rate = events / ((performance.now() - started) / 1000);
    await bus.close();
    await transport.close();
    return rate;
  });

  const rawConsume = await median(runs, async () => {
    const transport = createMemoryTransport();
    await fill(transport, events);
    const subscription = transport.subscribe({
      group: 'raw',
      topics: ['readings'],
      startFrom: 'earliest',
      prefetch: 1024,
    });
    const started = performance.now();
    let seen = 0;
    for await (const delivery of subscription) {
      JSON.parse(Buffer.from(delivery.value).toString());
      delivery.ack();
      if (++seen === events) break;
    }
    const rate = events / ((performance.now() - started) / 1000);
    await transport.close();
    return rate;
  });

  const busConsume = await median(runs, async () => {
    const transport = createMemoryTransport();
    const bus = createBus({ service: 'bench', transport, logger: silentLogger });
    const receipts = await fill(transport, events, bus);
    const started = performance.now();
    const consumer = bus.handle('bus', [Measured], () => undefined, {
      concurrency: 64,
      prefetch: 1024,
      retry: false,
    });
    await consumer.waitFor(lastPerPartition(receipts), { timeoutMs: 120_000 });
    const rate = events / ((performance.now() - started) / 1000);
    await bus.close();
    await transport.close();
    return rate;
  });

  return [
    result(
      'memory: publish via bus (batches of 100)',
      busPublish,
      'events/s',
      'raw transport.publish',
      rawPublish,
    ),
    result(
      'memory: consume via bus.handle',
      busConsume,
      'events/s',
      'raw subscription + JSON.parse',
      rawConsume,
    ),
  ];
}

async function fill(
  transport: ReturnType<typeof createMemoryTransport>,
  events: number,
  bus = createBus({ service: 'fill', transport, logger: silentLogger }),
) {
  const receipts = [];
  for (let i = 0; i < events; i += 500) {
    const items = [];
    for (let j = 0; j < 500 && i + j < events; j++)
      items.push({ event: Measured, data: { sensorId: keys[(i + j) % keys.length]!, payload } });
    receipts.push(...(await bus.publishMany(items)));
  }
  return receipts;
}

function lastPerPartition<T extends { topic: string; partition: number; offset: number }>(
  receipts: readonly T[],
): T[] {
  const last = new Map<number, T>();
  for (const receipt of receipts)
    if ((last.get(receipt.partition)?.offset ?? -1) < receipt.offset) last.set(receipt.partition, receipt);
  return [...last.values()];
}
