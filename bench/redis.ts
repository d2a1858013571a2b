// Tidings over Redis Streams against ioredis used directly, in the same run, on 256-byte events: publish (batches of
// 100: one pipeline of XADDs for the raw client, one publishMany for the bus, one transport.publish call) and consume
// (a whole backlog, every record acknowledged: XREADGROUP COUNT 1024 + XACK per partition for the raw client,
// bus.handle and a raw subscription for Tidings). The raw client writes to and reads from the same layout Tidings uses
// (a stream per partition, the partition chosen by the key, the CloudEvents attributes as stream fields); Tidings adds
// the bus (envelope, validation, router), the offset counter and index kept beside each stream, the group protocol
// (leases, ownership, fencing) and prefetch accounting. The cases run interleaved (raw, Tidings, raw, ...) and each
// figure is the median of its runs, so that other work on the machine weighs on both sides alike.
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { z } from 'zod';
import { createBus, defineEvent, partitionForKey, silentLogger, type Receipt } from 'tidings';
import { createRedisTransport, type RedisTransport } from 'tidings/redis';
import { result, type BenchResult } from './report.js';

const url = process.env['TIDINGS_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const partitions = 4;
const batch = 100;
const payload = 'x'.repeat(180); // with the envelope, about 256 bytes on the wire
const keys = Array.from({ length: 1000 }, (_, i) => `sensor-${i}`);
/** Every key of this run carries this prefix; all are deleted at the end. */
const prefix = `bench-${randomBytes(4).toString('hex')}`;
let topicSeq = 0;
const nextTopic = (label: string) => `${label}-${++topicSeq}`;

function measuredEvent(topic: string) {
  return defineEvent('ReadingRecorded', {
    schema: z.object({ sensorId: z.string(), payload: z.string() }),
    key: 'sensorId',
    topic,
  });
}

function transport(): RedisTransport {
  return createRedisTransport({ url, keyPrefix: prefix, defaultPartitions: partitions });
}

export async function benchRedis(events: number, runs: number): Promise<BenchResult[]> {
  const client = new Redis(url, { protocol: 2 });
  try {
    return await measure(client, events, runs);
  } finally {
    await removeKeys(client);
    client.disconnect();
  }
}

async function measure(client: Redis, events: number, runs: number): Promise<BenchResult[]> {
  // The raw client sends what the bus sends: the same payload and the same headers (the CloudEvents attributes).
  const sample = await sampleRecord(nextTopic('sample'));
  const fieldsOf = (key: string): Array<string | Buffer> => {
    const fields: Array<string | Buffer> = ['key', key];
    for (const [name, text] of Object.entries(sample.headers)) fields.push(name, text);
    fields.push('value', Buffer.from(sample.value));
    return fields;
  };
  const rawAppend = async (topic: string, from: number, count: number) => {
    const pipeline = client.pipeline();
    for (let j = 0; j < count; j++) {
      const key = keys[(from + j) % keys.length]!;
      pipeline.xadd(`${prefix}:raw:${topic}:${partitionForKey(key, partitions)}`, '*', ...fieldsOf(key));
    }
    const results = (await pipeline.exec()) ?? [];
    for (const [error] of results) if (error) throw error;
  };

  // One backlog per side, read again by a new group in every run.
  const rawTopic = nextTopic('raw-con');
  for (let i = 0; i < events; i += 500) await rawAppend(rawTopic, i, Math.min(500, events - i));
  const busTopic = nextTopic('bus-con');
  const receipts = await fill(busTopic, events);

  const cases: Record<string, () => Promise<number>> = {
    rawPublish: async () => {
      const topic = nextTopic('raw-pub');
      const started = performance.now();
      for (let i = 0; i < events; i += batch) await rawAppend(topic, i, batch);
      return events / ((performance.now() - started) / 1000);
    },

    busPublish: async () => {
      const topic = nextTopic('bus-pub');
      const tidings = transport();
      await tidings.admin.createTopic(topic, { partitions });
      const bus = createBus({ service: 'bench', transport: tidings, logger: silentLogger });
      const event = measuredEvent(topic);
      await bus.publish(event, { sensorId: 'warm-up', payload });
      const started = performance.now();
      for (let i = 0; i < events; i += batch) {
        const items = [];
        for (let j = 0; j < batch; j++)
          items.push({ event, data: { sensorId: keys[(i + j) % keys.length]!, payload } });
        await bus.publishMany(items);
      }
      const rate = events / ((performance.now() - started) / 1000);
      await bus.close();
      await tidings.close();
      return rate;
    },

    transportPublish: async () => {
      const topic = nextTopic('tr-pub');
      const tidings = transport();
      await tidings.admin.createTopic(topic, { partitions });
      const started = performance.now();
      for (let i = 0; i < events; i += batch) {
        const records = [];
        for (let j = 0; j < batch; j++)
          records.push({ key: keys[(i + j) % keys.length]!, headers: sample.headers, value: sample.value });
        await tidings.publish(topic, records);
      }
      const rate = events / ((performance.now() - started) / 1000);
      await tidings.close();
      return rate;
    },

    rawConsume: async () => {
      const group = `raw-${randomBytes(4).toString('hex')}`;
      const started = performance.now();
      let seen = 0;
      await Promise.all(
        Array.from({ length: partitions }, async (_, partition) => {
          const stream = `${prefix}:raw:${rawTopic}:${partition}`;
          const reader = client.duplicate();
          try {
            await reader.xgroup('CREATE', stream, group, '0');
            for (;;) {
              const reply = (await reader.xreadgroupBuffer(
                'GROUP',
                group,
                'reader',
                'COUNT',
                1024,
                'STREAMS',
                stream,
                '>',
              )) as Array<[Buffer, Array<[Buffer, Buffer[]]>]> | null;
              const entries = reply?.[0]?.[1] ?? [];
              if (entries.length === 0) break;
              const ids: Buffer[] = [];
              for (const [id, fields] of entries) {
                JSON.parse(fields[fields.length - 1]!.toString('utf8'));
                ids.push(id);
                seen++;
              }
              void reader.xack(stream, group, ...ids);
            }
          } finally {
            reader.disconnect();
          }
        }),
      );
      if (seen !== events) throw new Error(`raw consume read ${seen} of ${events}`);
      return events / ((performance.now() - started) / 1000);
    },

    busConsume: async () => {
      const tidings = transport();
      const bus = createBus({ service: 'bench', transport: tidings, logger: silentLogger });
      const started = performance.now();
      const consumer = bus.handle(
        `bench-${randomBytes(4).toString('hex')}`,
        [measuredEvent(busTopic)],
        () => undefined,
        { concurrency: 64, prefetch: 1024, retry: false, startFrom: 'earliest' },
      );
      await consumer.waitFor(lastPerPartition(receipts), { timeoutMs: 300_000 });
      const rate = events / ((performance.now() - started) / 1000);
      await bus.close();
      await tidings.close();
      return rate;
    },

    transportConsume: async () => {
      const tidings = transport();
      const subscription = tidings.subscribe({
        group: `tr-${randomBytes(4).toString('hex')}`,
        topics: [busTopic],
        startFrom: 'earliest',
        prefetch: 1024,
      });
      const started = performance.now();
      let seen = 0;
      for await (const delivery of subscription) {
        JSON.parse(Buffer.from(delivery.value).toString('utf8'));
        delivery.ack();
        if (++seen === events) break;
      }
      const rate = events / ((performance.now() - started) / 1000);
      await tidings.close();
      return rate;
    },
  };

  const samples = new Map<string, number[]>();
  for (let run = 0; run < runs; run++) {
    for (const [name, run] of Object.entries(cases)) {
      const list = samples.get(name) ?? [];
      list.push(await run());
      samples.set(name, list);
    }
  }
  const median = (name: string) => {
    const values = [...(samples.get(name) ?? [])].sort((a, b) => a - b);
    return values[Math.floor(values.length / 2)] ?? 0;
  };

  const rawPublish = 'raw ioredis XADD, pipelines of 100';
  const rawConsume = 'raw XREADGROUP + XACK';
  return [
    result(
      'redis: publish via bus (batches of 100)',
      median('busPublish'),
      'events/s',
      rawPublish,
      median('rawPublish'),
    ),
    result(
      'redis: consume via bus.handle',
      median('busConsume'),
      'events/s',
      rawConsume,
      median('rawConsume'),
    ),
    result(
      'redis: transport.publish (batches of 100)',
      median('transportPublish'),
      'events/s',
      rawPublish,
      median('rawPublish'),
    ),
    result(
      'redis: transport.subscribe, ack each',
      median('transportConsume'),
      'events/s',
      rawConsume,
      median('rawConsume'),
    ),
  ];

  /** One event as the bus writes it: its stored headers and value. */
  async function sampleRecord(
    topic: string,
  ): Promise<{ headers: Record<string, string>; value: Uint8Array }> {
    const tidings = transport();
    const bus = createBus({ service: 'bench', transport: tidings, logger: silentLogger });
    const receipt = await bus.publish(measuredEvent(topic), { sensorId: 'sensor-123', payload });
    const [record] = await tidings.admin.read(topic, receipt.partition, receipt.offset, 1);
    await bus.close();
    await tidings.close();
    return { headers: { ...record!.headers }, value: record!.value };
  }

  /** A backlog of `count` events on `topic`, published through the bus. */
  async function fill(topic: string, count: number): Promise<Receipt[]> {
    const tidings = transport();
    await tidings.admin.createTopic(topic, { partitions });
    const bus = createBus({ service: 'bench', transport: tidings, logger: silentLogger });
    const published: Receipt[] = [];
    for (let i = 0; i < count; i += 500) {
      const items = [];
      for (let j = 0; j < 500 && i + j < count; j++)
        items.push({
          event: measuredEvent(topic),
          data: { sensorId: keys[(i + j) % keys.length]!, payload },
        });
      published.push(...(await bus.publishMany(items)));
    }
    await bus.close();
    await tidings.close();
    return published;
  }
}

async function removeKeys(client: Redis): Promise<void> {
  for (const pattern of [`${prefix}:*`, `${prefix}#*`]) {
    let cursor = '0';
    do {
      const [next, found] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      if (found.length > 0) await client.unlink(...found);
    } while (cursor !== '0');
  }
}

function lastPerPartition(receipts: readonly Receipt[]): Receipt[] {
  const last = new Map<number, Receipt>();
  for (const receipt of receipts)
    if ((last.get(receipt.partition)?.offset ?? -1) < receipt.offset) last.set(receipt.partition, receipt);
  return [...last.values()];
}
