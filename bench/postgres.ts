// Tidings over PostgreSQL against `pg` used directly, in the same run, on 256-byte events: publish (batches of 100,
// each batch one committed transaction) and consume (a whole backlog). The raw client writes the same events to an
// event table of its own (bigserial id, key, jsonb headers, bytea value, timestamp) with one multi-row INSERT per
// batch, and reads them back in pages of 1,000 by id. Tidings adds the bus (envelope, validation), per-partition
// offsets from counter rows, the wake-up NOTIFY, group membership and committed offsets. Two more rows measure the
// transport without the bus (transport.publish, a raw subscription), to tell the transport's cost from the bus's.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { z } from 'zod';
import { createBus, defineEvent, silentLogger, type OutgoingRecord, type Receipt } from 'tidings';
import { createPostgresTransport } from 'tidings/postgres';
import { result, type BenchResult } from './report.js';

const url = process.env['TIDINGS_POSTGRES_URL'] ?? 'postgresql://postgres@127.0.0.1:5432/test';
const partitions = 4;
const batch = 100;
const pageSize = 1000;
const payload = 'x'.repeat(180); // with the envelope, about 256 bytes on the wire
const keys = Array.from({ length: 1000 }, (_, i) => `sensor-${i}`);

function measuredEvent(topic: string) {
  return defineEvent('ReadingRecorded', {
    schema: z.object({ sensorId: z.string(), payload: z.string() }),
    key: 'sensorId',
    topic,
  });
}

/** This run's schema: topics and the raw tables live there, and it is dropped at the end. */
const runId = randomBytes(4).toString('hex');
const schema = `tidings_bench_${runId}`;
let seq = 0;
const next = (label: string) => `${label}_${++seq}`;

export async function benchPostgres(events: number, runs: number): Promise<BenchResult[]> {
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  try {
    // The cases of one run follow each other (raw, bus, transport), so a change in the machine's load hits all three.
    const samples = new Map<string, number[]>();
    const sample = (name: string, rate: number) => samples.set(name, [...(samples.get(name) ?? []), rate]);
    for (let run = 0; run < runs; run++) {
      sample('rawPublish', await rawPublishRate(await createRawTable(admin, next('raw_pub')), events));
      sample('busPublish', await busPublishRate(next('bus_pub'), events));
      sample('transportPublish', await transportPublishRate(next('tr_pub'), events));
      const rawTable = await createRawTable(admin, next('raw_con'));
      await rawPublishRate(rawTable, events);
      sample('rawConsume', await rawConsumeRate(rawTable, events));
      sample('busConsume', await busConsumeRate(next('bus_con'), events));
      sample('transportConsume', await transportConsumeRate(next('tr_con'), events));
    }
    const median = (name: string) => {
      const values = [...(samples.get(name) ?? [0])].sort((a, b) => a - b);
      return values[Math.floor(values.length / 2)]!;
    };
    return [
      result(
        'postgres: publish via bus (batches of 100)',
        median('busPublish'),
        'events/s',
        'raw pg, 100-row INSERT',
        median('rawPublish'),
      ),
      result(
        'postgres: consume via bus.handle',
        median('busConsume'),
        'events/s',
        'raw pg, pages of 1000 by id',
        median('rawConsume'),
      ),
      result(
        'postgres: transport.publish (batches of 100)',
        median('transportPublish'),
        'events/s',
        'raw pg, 100-row INSERT',
        median('rawPublish'),
      ),
      result(
        'postgres: transport.subscribe, ack each',
        median('transportConsume'),
        'events/s',
        'raw pg, pages of 1000 by id',
        median('rawConsume'),
      ),
    ];
  } finally {
    await admin.query(`DROP SCHEMA IF EXISTS ${pg.escapeIdentifier(schema)} CASCADE`).catch(() => undefined);
    await admin.end();
  }
}

/** The bus publishing batches of 100 events (`publishMany`), one after the other. */
async function busPublishRate(topic: string, events: number): Promise<number> {
  const transport = createPostgresTransport({ url, schema });
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
}

/** The transport alone, with what the raw client writes: 256-byte values and two headers per record. */
async function transportPublishRate(topic: string, events: number): Promise<number> {
  const transport = createPostgresTransport({ url, schema });
  await transport.admin.createTopic(topic, { partitions });
  const headers = { 'ce-type': 'ReadingRecorded', 'ce-specversion': '1.0' };
  const started = performance.now();
  for (let i = 0; i < events; i += batch) {
    const records: OutgoingRecord[] = [];
    for (let j = 0; j < batch; j++) {
      const key = keys[(i + j) % keys.length]!;
      records.push({
        key,
        headers,
        value: Buffer.from(JSON.stringify({ sensorId: key, payload }).padEnd(256)),
      });
    }
    await transport.publish(topic, records);
  }
  const rate = events / ((performance.now() - started) / 1000);
  await transport.close();
  return rate;
}

async function busConsumeRate(topic: string, events: number): Promise<number> {
  const receipts = await fill(topic, events);
  const transport = createPostgresTransport({ url, schema });
  const bus = createBus({ service: 'bench', transport, logger: silentLogger });
  const started = performance.now();
  const consumer = bus.handle(`bench_${topic}`, [measuredEvent(topic)], () => undefined, {
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
}

/** A raw subscription: each value parsed as JSON and acknowledged (offsets committed as the acks come). */
async function transportConsumeRate(topic: string, events: number): Promise<number> {
  await fill(topic, events);
  const transport = createPostgresTransport({ url, schema });
  const subscription = transport.subscribe({
    group: `bench_${topic}`,
    topics: [topic],
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
}

/** The raw client's event table. */
async function createRawTable(client: pg.Client, name: string): Promise<string> {
  const table = `${pg.escapeIdentifier(schema)}.${pg.escapeIdentifier(name)}`;
  await client.query(`CREATE SCHEMA IF NOT EXISTS ${pg.escapeIdentifier(schema)}`);
  await client.query(
    `CREATE TABLE ${table} (id bigserial PRIMARY KEY, key text NOT NULL, headers jsonb NOT NULL, ` +
      `value bytea NOT NULL, "timestamp" bigint NOT NULL)`,
  );
  return table;
}

/** Batches of 100 rows, one INSERT (so one committed transaction) each, one after the other. */
async function rawPublishRate(table: string, events: number): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const text = `INSERT INTO ${table} (key, headers, value, "timestamp") SELECT * FROM unnest($1::text[], $2::jsonb[], $3::bytea[], $4::bigint[])`;
  const headers = JSON.stringify({ 'ce-type': 'ReadingRecorded', 'ce-specversion': '1.0' });
  const started = performance.now();
  for (let i = 0; i < events; i += batch) {
    const batchKeys: string[] = [];
    const values: Buffer[] = [];
    for (let j = 0; j < batch; j++) {
      const key = keys[(i + j) % keys.length]!;
      batchKeys.push(key);
      values.push(Buffer.from(JSON.stringify({ sensorId: key, payload }).padEnd(256)));
    }
    await client.query({
      name: 'raw-insert',
      text,
      values: [batchKeys, batchKeys.map(() => headers), values, batchKeys.map(() => Date.now())],
    });
  }
  const rate = events / ((performance.now() - started) / 1000);
  await client.end();
  return rate;
}

/** Pages of 1,000 rows by id, each value parsed as JSON. */
async function rawConsumeRate(table: string, events: number): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const started = performance.now();
  let seen = 0;
  let last = 0;
  while (seen < events) {
    const page = await client.query<{ id: string; key: string; headers: unknown; value: Buffer }>({
      name: 'raw-page',
      text: `SELECT id, key, headers, value, "timestamp" FROM ${table} WHERE id > $1 ORDER BY id LIMIT ${pageSize}`,
      values: [last],
    });
    for (const row of page.rows) JSON.parse(row.value.toString());
    seen += page.rows.length;
    last = Number(page.rows[page.rows.length - 1]?.id ?? last);
  }
  const rate = events / ((performance.now() - started) / 1000);
  await client.end();
  return rate;
}

async function fill(topic: string, events: number): Promise<Receipt[]> {
  const transport = createPostgresTransport({ url, schema });
  await transport.admin.createTopic(topic, { partitions });
  const bus = createBus({ service: 'fill', transport, logger: silentLogger });
  const event = measuredEvent(topic);
  const receipts: Receipt[] = [];
  for (let i = 0; i < events; i += 500) {
    const items = [];
    for (let j = 0; j < 500 && i + j < events; j++) {
      items.push({ event, data: { sensorId: keys[(i + j) % keys.length]!, payload } });
    }
    receipts.push(...(await bus.publishMany(items)));
  }
  await bus.close();
  await transport.close();
  return receipts;
}

function lastPerPartition<T extends { partition: number; offset: number }>(receipts: readonly T[]): T[] {
  const last = new Map<number, T>();
  for (const receipt of receipts) {
    if ((last.get(receipt.partition)?.offset ?? -1) < receipt.offset) last.set(receipt.partition, receipt);
  }
  return [...last.values()];
}
