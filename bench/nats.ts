// Tidings over NATS JetStream against @nats-io/jetstream used directly, in the same run, on 256-byte events: publish
// (batches of 100 in flight, each record acknowledged by JetStream) and consume (a whole backlog, every record
// acknowledged). The raw client writes to and reads from the same layout Tidings uses (a stream per partition, the
// partition chosen by the key), the same bytes (payload and CloudEvents headers as the bus wrote them), and reads
// what a handler gets (the payload parsed, the headers read); Tidings adds the bus (envelope, validation, router),
// the group protocol (leases, ownership, one durable consumer per owner) and prefetch accounting.
import { randomBytes } from 'node:crypto';
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  type JetStreamManager,
} from '@nats-io/jetstream';
import { connect, headers as natsHeaders, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';
import { z } from 'zod';
import { createBus, defineEvent, partitionForKey, silentLogger, type Receipt } from 'tidings';
import { createNatsTransport, type NatsTransport } from 'tidings/nats';
import { median, result, type BenchResult } from './report.js';

const url = process.env['TIDINGS_NATS_URL'] ?? 'nats://127.0.0.1:4222';
const partitions = 4;
const batch = 100;
const payload = 'x'.repeat(180); // with the envelope, about 256 bytes on the wire
const keys = Array.from({ length: 1000 }, (_, i) => `sensor-${i}`);
/** Every stream of this run carries this prefix; all are deleted at the end. */
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

function transport(): NatsTransport {
  return createNatsTransport({ servers: url, prefix, defaultPartitions: partitions });
}

export async function benchNats(events: number, runs: number): Promise<BenchResult[]> {
  const nc = await connect({ servers: url, noAsyncTraces: true });
  const jsm = await jetstreamManager(nc);
  try {
    return await measure(nc, jsm, events, runs);
  } finally {
    await removeStreams(jsm);
    await nc.close();
  }
}

async function measure(
  nc: NatsConnection,
  jsm: JetStreamManager,
  events: number,
  runs: number,
): Promise<BenchResult[]> {
  const js = jetstream(nc);

  const busPublish = await median(runs, async () => {
    const topic = nextTopic('bus-pub');
    await createTopic(topic);
    const client = transport();
    const bus = createBus({ service: 'bench', transport: client, logger: silentLogger });
    const event = measuredEvent(topic);
    await bus.publish(event, { sensorId: 'warm-up', payload }); // connects
    const started = performance.now();
    for (let i = 0; i < events; i += batch) {
      const items = [];
      for (let j = 0; j < batch; j++)
        items.push({ event, data: { sensorId: keys[(i + j) % keys.length]!, payload } });
      await bus.publishMany(items);
    }
    const rate = events / ((performance.now() - started) / 1000);
    await bus.close();
    await client.close();
    return rate;
  });

  // The raw client sends what the bus sent: the same payload and the same headers (the CloudEvents attributes).
  const sample = await sampleRecord(nextTopic('sample'));
  const value = sample.value;
  const headersOf = (key: string): MsgHdrs => {
    const h = natsHeaders();
    for (const [name, text] of Object.entries(sample.headers)) h.set(name, text);
    h.set('Tidings-Key', key);
    return h;
  };

  const rawPublish = await median(runs, async () => {
    const topic = nextTopic('raw-pub');
    await createTopic(topic);
    const started = performance.now();
    for (let i = 0; i < events; i += batch) {
      const pending = [];
      for (let j = 0; j < batch; j++) {
        const key = keys[(i + j) % keys.length]!;
        const partition = partitionForKey(key, partitions);
        pending.push(js.publish(`${prefix}.${topic}.${partition}`, value, { headers: headersOf(key) }));
      }
      await Promise.all(pending);
    }
    return events / ((performance.now() - started) / 1000);
  });

  // One backlog per side, read again by a new group (or new raw consumers) in every run.
  const rawTopic = nextTopic('raw-con');
  await createTopic(rawTopic);
  for (let i = 0; i < events; i += batch) {
    const pending = [];
    for (let j = 0; j < batch && i + j < events; j++) {
      const key = keys[(i + j) % keys.length]!;
      pending.push(
        js.publish(`${prefix}.${rawTopic}.${partitionForKey(key, partitions)}`, value, {
          headers: headersOf(key),
        }),
      );
    }
    await Promise.all(pending);
  }
  const rawConsume = await median(runs, async () => {
    const durable = `raw-${randomBytes(4).toString('hex')}`;
    const started = performance.now();
    let seen = 0;
    await Promise.all(
      Array.from({ length: partitions }, async (_, partition) => {
        const stream = `${prefix}_${rawTopic}_${partition}`;
        const info = await jsm.consumers.add(stream, {
          durable_name: durable,
          ack_policy: AckPolicy.Explicit,
          deliver_policy: DeliverPolicy.All,
          max_ack_pending: 1024,
        });
        const pending = info.num_pending;
        if (pending === 0) return;
        const messages = await js.consumers.getConsumerFromInfo(info).consume({ max_messages: 1024 });
        let mine = 0;
        for await (const message of messages) {
          // What Tidings hands a handler: the payload and the attributes (CloudEvents binary mode: headers).
          const attributes: Record<string, string> = {};
          for (const [name, values] of message.headers ?? []) attributes[name] = values[0] ?? '';
          JSON.parse(new TextDecoder().decode(message.data));
          message.ack();
          seen++;
          if (++mine === pending) break;
        }
        await jsm.consumers.delete(stream, durable);
      }),
    );
    if (seen !== events) throw new Error(`raw consume read ${seen} of ${events}`);
    return events / ((performance.now() - started) / 1000);
  });

  const busTopic = nextTopic('bus-con');
  const filler = transport();
  const fillBus = createBus({ service: 'bench', transport: filler, logger: silentLogger });
  const receipts: Receipt[] = [];
  for (let i = 0; i < events; i += 500) {
    const items = [];
    for (let j = 0; j < 500 && i + j < events; j++)
      items.push({
        event: measuredEvent(busTopic),
        data: { sensorId: keys[(i + j) % keys.length]!, payload },
      });
    receipts.push(...(await fillBus.publishMany(items)));
  }
  await fillBus.close();
  await filler.close();
  const subscriptionConsume = await median(runs, async () => {
    const client = transport();
    const started = performance.now();
    const subscription = client.subscribe({
      group: `bench-${randomBytes(4).toString('hex')}`,
      topics: [busTopic],
      startFrom: 'earliest',
      prefetch: 1024,
    });
    let seen = 0;
    for await (const delivery of subscription) {
      JSON.parse(new TextDecoder().decode(delivery.value));
      delivery.ack();
      if (++seen === events) break;
    }
    const rate = events / ((performance.now() - started) / 1000);
    await client.close();
    return rate;
  });

  const busConsume = await median(runs, async () => {
    const client = transport();
    const bus = createBus({ service: 'bench', transport: client, logger: silentLogger });
    const started = performance.now();
    const consumer = bus.handle(
      `bench-${randomBytes(4).toString('hex')}`,
      [measuredEvent(busTopic)],
      () => undefined,
      {
        concurrency: 64,
        prefetch: 1024,
        retry: false,
        startFrom: 'earliest',
      },
    );
    await consumer.waitFor(lastPerPartition(receipts), { timeoutMs: 300_000 });
    const rate = events / ((performance.now() - started) / 1000);
    await bus.close();
    await client.close();
    return rate;
  });

  return [
    result(
      'nats: publish via bus (batches of 100)',
      busPublish,
      'events/s',
      'raw js.publish, 100 in flight',
      rawPublish,
    ),
    result(
      'nats: consume, transport subscription + ack',
      subscriptionConsume,
      'events/s',
      'raw pull consumers + ack',
      rawConsume,
    ),
    result('nats: consume via bus.handle', busConsume, 'events/s', 'raw pull consumers + ack', rawConsume),
  ];

  /** One event as the bus writes it: its stored headers and value. */
  async function sampleRecord(
    topic: string,
  ): Promise<{ headers: Record<string, string>; value: Uint8Array }> {
    const client = transport();
    const bus = createBus({ service: 'bench', transport: client, logger: silentLogger });
    const receipt = await bus.publish(measuredEvent(topic), { sensorId: 'sensor-123', payload });
    const [record] = await client.admin.read(topic, receipt.partition, receipt.offset, 1);
    await bus.close();
    await client.close();
    return { headers: { ...record!.headers }, value: record!.value };
  }

  async function createTopic(topic: string): Promise<void> {
    const client = transport();
    await client.admin.createTopic(topic, { partitions });
    await client.close();
  }
}

async function removeStreams(jsm: JetStreamManager): Promise<void> {
  const doomed: string[] = [];
  for await (const name of jsm.streams.names()) {
    if (name.startsWith(`${prefix}_`) || name === `KV_${prefix}-groups`) doomed.push(name);
  }
  for (const name of doomed) await jsm.streams.delete(name).catch(() => false);
}

function lastPerPartition(receipts: readonly Receipt[]): Receipt[] {
  const last = new Map<number, Receipt>();
  for (const receipt of receipts)
    if ((last.get(receipt.partition)?.offset ?? -1) < receipt.offset) last.set(receipt.partition, receipt);
  return [...last.values()];
}
