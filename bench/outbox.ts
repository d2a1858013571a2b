// The transactional outbox relay (tidings/outbox) from PostgreSQL to the embedded log and to NATS JetStream, with
// its peers measured in the same run: raw PostgreSQL inserts of the same rows (100-row INSERTs through unnest, one
// committed transaction each) and each broker's raw publish (the log's transport.publish in batches of 500, the
// relay's batch size; NATS js.publish with 100 in flight). Before each relay measurement the outbox is filled
// (enqueue in transactions of 100 events, also reported); the relay rate is events published per second from a
// full outbox until it is empty (read, publish, delete, in batches of 500).
import { randomBytes } from 'node:crypto';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import pg from 'pg';
import { createBus, silentLogger, type OutgoingRecord, type Transport } from 'tidings';
import { createLogTransport } from 'tidings/log';
import { createNatsTransport } from 'tidings/nats';
import { createOutbox, postgres, type Outbox } from 'tidings/outbox';
import { tempDir } from './disk.js';
import { Measured, keys, payload } from './events.js';
import { result, type BenchResult } from './report.js';

const url = process.env['TIDINGS_POSTGRES_URL'] ?? 'postgresql://postgres@127.0.0.1:5432/test';
const natsUrl = process.env['TIDINGS_NATS_URL'] ?? 'nats://127.0.0.1:4222';
const batch = 500;
const txSize = 100;
const schema = `tidings_bench_outbox_${randomBytes(4).toString('hex')}`;
const natsPrefix = `bench-outbox-${randomBytes(4).toString('hex')}`;
let seq = 0;

export const outboxCaseNames = [
  'outbox: enqueue in transactions of 100 (postgres)',
  'outbox: relay postgres -> log',
  'outbox: relay postgres -> log, against the log',
  'outbox: relay postgres -> nats',
  'outbox: relay postgres -> nats, against nats',
] as const;

export async function benchOutbox(events: number, runs: number): Promise<BenchResult[]> {
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  await pool.query(`CREATE SCHEMA ${schema}`);
  const samples = new Map<string, number[]>();
  const sample = (name: string, rate: number) => samples.set(name, [...(samples.get(name) ?? []), rate]);
  try {
    for (let run = 0; run < runs; run++) {
      sample('rawInsert', await rawInsertRate(pool, events));
      const toLog = await relayRate(pool, events, 'log');
      sample('enqueue', toLog.enqueue);
      sample('relayLog', toLog.relay);
      sample('rawLog', await rawLogRate(events));
      sample('relayNats', (await relayRate(pool, events, 'nats')).relay);
      sample('rawNats', await rawNatsRate(events));
    }
  } finally {
    await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
    await pool.end();
    await removeNatsStreams().catch(() => undefined);
  }
  const median = (name: string) => {
    const values = [...(samples.get(name) ?? [0])].sort((a, b) => a - b);
    return values[Math.floor(values.length / 2)]!;
  };
  const rawPg = 'raw pg, 100-row INSERT';
  return [
    result(outboxCaseNames[0], median('enqueue'), 'events/s', rawPg, median('rawInsert')),
    result(outboxCaseNames[1], median('relayLog'), 'events/s', rawPg, median('rawInsert')),
    result(
      outboxCaseNames[2],
      median('relayLog'),
      'events/s',
      'log transport.publish, 500/batch',
      median('rawLog'),
    ),
    result(outboxCaseNames[3], median('relayNats'), 'events/s', rawPg, median('rawInsert')),
    result(
      outboxCaseNames[4],
      median('relayNats'),
      'events/s',
      'raw js.publish, 100 in flight',
      median('rawNats'),
    ),
  ];
}

/** The outbox rows' size: the relay reads what enqueue wrote, a ~256-byte event. */
function items(from: number, count: number) {
  return Array.from({ length: count }, (_, j) => ({
    event: Measured,
    data: { sensorId: keys[(from + j) % keys.length]!, payload },
  }));
}

async function fill(pool: pg.Pool, outbox: Outbox, events: number): Promise<number> {
  const client = await pool.connect();
  try {
    const started = performance.now();
    for (let i = 0; i < events; i += txSize) {
      await client.query('BEGIN');
      await outbox.enqueueMany(client, items(i, Math.min(txSize, events - i)));
      await client.query('COMMIT');
    }
    return events / ((performance.now() - started) / 1000);
  } finally {
    client.release();
  }
}

async function relayRate(
  pool: pg.Pool,
  events: number,
  target: 'log' | 'nats',
): Promise<{ enqueue: number; relay: number }> {
  const outbox = createOutbox({
    database: postgres(pool),
    table: `${schema}.outbox_${++seq}`,
    service: 'bench',
  });
  await outbox.setup();
  const enqueue = await fill(pool, outbox, events);
  const dir = tempDir('outbox');
  const transport: Transport =
    target === 'log'
      ? createLogTransport({ dataDir: dir.path })
      : createNatsTransport({ servers: natsUrl, prefix: natsPrefix });
  await transport.admin.createTopic(Measured.topic, { partitions: 4 }).catch(() => undefined);
  const bus = createBus({ service: 'bench', transport, logger: silentLogger });
  try {
    const started = performance.now();
    const relay = bus.startRelay(outbox, { batchSize: batch });
    while (relay.stats().published < events) await new Promise((resolve) => setTimeout(resolve, 2));
    const rate = events / ((performance.now() - started) / 1000);
    return { enqueue, relay: rate };
  } finally {
    await bus.close();
    await transport.close();
    dir.remove();
  }
}

async function rawInsertRate(pool: pg.Pool, events: number): Promise<number> {
  const table = `${schema}.raw_${++seq}`;
  await pool.query(
    `CREATE TABLE ${table} (seq bigserial PRIMARY KEY, event_id text NOT NULL, topic text NOT NULL, ` +
      'event_key text NOT NULL, envelope text NOT NULL, created_at bigint NOT NULL)',
  );
  const client = await pool.connect();
  const envelope = JSON.stringify({ data: { sensorId: keys[0], payload } }).padEnd(256);
  try {
    const started = performance.now();
    for (let i = 0; i < events; i += txSize) {
      const n = Math.min(txSize, events - i);
      const rowKeys = Array.from({ length: n }, (_, j) => keys[(i + j) % keys.length]!);
      await client.query(
        `INSERT INTO ${table} (event_id, topic, event_key, envelope, created_at) ` +
          'SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])',
        [
          rowKeys.map(() => randomBytes(8).toString('hex')),
          rowKeys.map(() => 'readings'),
          rowKeys,
          rowKeys.map(() => envelope),
          rowKeys.map(() => Date.now()),
        ],
      );
    }
    return events / ((performance.now() - started) / 1000);
  } finally {
    client.release();
  }
}

/** A sample record as the relay publishes it: the same headers and value. */
async function sampleRecords(events: number): Promise<OutgoingRecord[]> {
  const transport = createLogTransport({ dataDir: tempDir('outbox-sample').path });
  const bus = createBus({ service: 'bench', transport, logger: silentLogger });
  const receipt = await bus.publish(Measured, { sensorId: 'sensor-1', payload });
  const [record] = await transport.admin.read(Measured.topic, receipt.partition, receipt.offset, 1);
  await bus.close();
  await transport.close();
  return Array.from({ length: events }, (_, i) => ({
    key: keys[i % keys.length]!,
    headers: { ...record!.headers },
    value: record!.value,
  }));
}

async function rawLogRate(events: number): Promise<number> {
  const records = await sampleRecords(events);
  const dir = tempDir('outbox-raw-log');
  const transport = createLogTransport({ dataDir: dir.path });
  try {
    await transport.admin.createTopic(Measured.topic, { partitions: 4 });
    const started = performance.now();
    for (let i = 0; i < events; i += batch)
      await transport.publish(Measured.topic, records.slice(i, i + batch));
    return events / ((performance.now() - started) / 1000);
  } finally {
    await transport.close();
    dir.remove();
  }
}

async function rawNatsRate(events: number): Promise<number> {
  const records = await sampleRecords(Math.min(events, 1));
  const nc = await connect({ servers: natsUrl, noAsyncTraces: true });
  const jsm = await jetstreamManager(nc);
  const stream = `${natsPrefix}_raw_${++seq}`;
  await jsm.streams.add({ name: stream, subjects: [`${stream}.>`] });
  const js = jetstream(nc);
  try {
    const value = records[0]!.value;
    const started = performance.now();
    for (let i = 0; i < events; i += 100) {
      const pending = [];
      for (let j = 0; j < 100 && i + j < events; j++) pending.push(js.publish(`${stream}.${j % 4}`, value));
      await Promise.all(pending);
    }
    return events / ((performance.now() - started) / 1000);
  } finally {
    await nc.close();
  }
}

async function removeNatsStreams(): Promise<void> {
  const nc = await connect({ servers: natsUrl, noAsyncTraces: true });
  try {
    const jsm = await jetstreamManager(nc);
    const doomed: string[] = [];
    for await (const name of jsm.streams.names())
      if (name.startsWith(natsPrefix) || name === `KV_${natsPrefix}-groups`) doomed.push(name);
    for (const name of doomed) await jsm.streams.delete(name).catch(() => false);
  } finally {
    await nc.close();
  }
}
