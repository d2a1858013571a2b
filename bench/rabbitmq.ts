// Tidings over RabbitMQ against amqplib used directly, in the same run, on 256-byte events: publish (batches of 100,
// each batch confirmed by the broker) and consume (a whole backlog, every record acknowledged). The raw client writes
// to the same streams through the same exchange; Tidings adds the bus (envelope, validation), reading its records
// back for their offsets, group membership and committed offsets.
import { connect } from 'amqplib';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { createBus, defineEvent, partitionForKey, silentLogger, type Receipt } from 'tidings';
import { createRabbitMqTransport } from 'tidings/rabbitmq';
import { median, result, type BenchResult } from './report.js';

const url = process.env['TIDINGS_RABBITMQ_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';
const partitions = 4;
const batch = 100;
const payload = 'x'.repeat(180); // with the envelope, about 256 bytes on the wire
const keys = Array.from({ length: 1000 }, (_, i) => `sensor-${i}`);

function measuredEvent(topic: string) {
  return defineEvent('ReadingRecorded', {
    schema: z.object({ sensorId: z.string(), payload: z.string() }),
    key: 'sensorId',
    topic,
  });
}

/**
 * Everything of this run carries its own name prefix, and is deleted when the run ends: each stream holds file
 * descriptors on the broker for as long as it exists.
 */
const runId = randomBytes(4).toString('hex');
const namePrefix = `tidings-bench-${runId}`;
const group = `bench_${runId}`;
const created: string[] = [];
let topicSeq = 0;
const nextTopic = (label: string) => {
  const topic = `${label}_${++topicSeq}`;
  created.push(topic);
  return topic;
};
const transportOptions = { url, namePrefix };

export async function benchRabbitMq(events: number, runs: number): Promise<BenchResult[]> {
  try {
    return await measure(events, runs);
  } finally {
    await removeEverything();
  }
}

async function measure(events: number, runs: number): Promise<BenchResult[]> {
  const rawPublish = await median(runs, async () => {
    const topic = nextTopic('raw_pub');
    await createTopic(topic);
    return rawPublishRate(topic, events);
  });

  const busPublish = await median(runs, async () => {
    const topic = nextTopic('bus_pub');
    const transport = createRabbitMqTransport(transportOptions);
    await transport.admin.createTopic(topic, { partitions });
    const bus = createBus({ service: 'bench', transport, logger: silentLogger });
    const event = measuredEvent(topic);
    const started = performance.now();
    for (let i = 0; i < events; i += batch) {
      const items = [];
      for (let j = 0; j < batch; j++)
        items.push({ event, data: { sensorId: keys[(i + j) % keys.length]!, payload } });
      await bus.publishMany(items);
    }
    const rate = events / ((performance.now() - started) / 1000);
    await bus.close();
    await transport.close();
    return rate;
  });

  const rawConsume = await median(runs, async () => {
    const topic = nextTopic('raw_con');
    await createTopic(topic);
    await fill(topic, events);
    return rawConsumeRate(topic, events);
  });

  const busConsume = await median(runs, async () => {
    const topic = nextTopic('bus_con');
    const receipts = await fill(topic, events);
    const transport = createRabbitMqTransport(transportOptions);
    const bus = createBus({ service: 'bench', transport, logger: silentLogger });
    const started = performance.now();
    const consumer = bus.handle(group, [measuredEvent(topic)], () => undefined, {
      concurrency: 64,
      prefetch: 1024,
      retry: false,
      startFrom: 'earliest',
    });
    await consumer.waitFor(lastPerPartition(receipts), { timeoutMs: 300_000 });
    const rate = events / ((performance.now() - started) / 1000);
    await bus.close();
    await transport.close();
    return rate;
  });

  return [
    result(
      'rabbitmq: publish via bus (batches of 100)',
      busPublish,
      'events/s',
      'raw amqplib, confirms',
      rawPublish,
    ),
    result(
      'rabbitmq: consume via bus.handle',
      busConsume,
      'events/s',
      'raw amqplib stream consumer',
      rawConsume,
    ),
  ];
}

/** The topic's exchange and streams, declared as the transport declares them (so the raw client reuses them). */
async function createTopic(topic: string): Promise<void> {
  const transport = createRabbitMqTransport(transportOptions);
  await transport.admin.createTopic(topic, { partitions });
  await transport.close();
}

async function rawPublishRate(topic: string, events: number): Promise<number> {
  const connection = await connect(url);
  const channel = await connection.createConfirmChannel();
  const exchange = `${namePrefix}.t.${topic}`;
  const value = Buffer.from(JSON.stringify({ sensorId: 'sensor-0', payload }).padEnd(256));
  const started = performance.now();
  for (let i = 0; i < events; i += batch) {
    for (let j = 0; j < batch; j++) {
      const key = keys[(i + j) % keys.length]!;
      channel.publish(exchange, String(partitionForKey(key, partitions)), value, {
        persistent: true,
        headers: { 'x-key': key },
      });
    }
    await channel.waitForConfirms();
  }
  const rate = events / ((performance.now() - started) / 1000);
  await connection.close();
  return rate;
}

async function rawConsumeRate(topic: string, events: number): Promise<number> {
  const connection = await connect(url);
  const started = performance.now();
  let seen = 0;
  await new Promise<void>((resolve, reject) => {
    const channels = Array.from({ length: partitions }, async (_, partition) => {
      const channel = await connection.createChannel();
      await channel.prefetch(1_000);
      let unacked = 0;
      await channel.consume(
        `${namePrefix}.t.${topic}.${partition}`,
        (message) => {
          if (message === null) return;
          JSON.parse(message.content.toString());
          if (++unacked >= 100) {
            channel.ack(message, true);
            unacked = 0;
          }
          if (++seen === events) resolve();
        },
        { arguments: { 'x-stream-offset': 'first' } },
      );
    });
    Promise.all(channels).catch(reject);
  });
  const rate = events / ((performance.now() - started) / 1000);
  await connection.close();
  return rate;
}

async function fill(topic: string, events: number): Promise<Receipt[]> {
  const transport = createRabbitMqTransport(transportOptions);
  await transport.admin.createTopic(topic, { partitions });
  const bus = createBus({ service: 'fill', transport, logger: silentLogger });
  const event = measuredEvent(topic);
  const receipts: Receipt[] = [];
  for (let i = 0; i < events; i += 500) {
    const items = [];
    for (let j = 0; j < 500 && i + j < events; j++)
      items.push({ event, data: { sensorId: keys[(i + j) % keys.length]!, payload } });
    receipts.push(...(await bus.publishMany(items)));
  }
  await bus.close();
  await transport.close();
  return receipts;
}

/** Deletes the run's exchanges, streams and queues (names as the transport builds them for plain names). */
async function removeEverything(): Promise<void> {
  const connection = await connect(url);
  try {
    const channel = await connection.createChannel();
    for (const topic of created) {
      await channel.deleteExchange(`${namePrefix}.t.${topic}`);
      for (let p = 0; p < partitions; p++) {
        await channel.deleteQueue(`${namePrefix}.t.${topic}.${p}`);
        await channel.deleteQueue(`${namePrefix}.o.${group}.${topic}.${p}`);
      }
    }
    await channel.deleteQueue(`${namePrefix}.g.${group}`);
    await channel.deleteQueue(`${namePrefix}.registry`);
  } finally {
    await connection.close().catch(() => undefined);
  }
}

function lastPerPartition<T extends { partition: number; offset: number }>(receipts: readonly T[]): T[] {
  const last = new Map<number, T>();
  for (const receipt of receipts)
    if ((last.get(receipt.partition)?.offset ?? -1) < receipt.offset) last.set(receipt.partition, receipt);
  return [...last.values()];
}
