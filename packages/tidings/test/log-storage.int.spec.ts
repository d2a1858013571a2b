import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCode, isTidingsError } from '../src/core/errors.js';
import type { Delivery } from '../src/core/transport.js';
import { createLogTransport } from '../src/log/index.js';
import {
  cleanup,
  consume,
  createTestClock,
  expectTidingsError,
  openLog,
  rec,
  syncError,
  tempDir,
  text,
  until,
} from './log-fixtures/helpers.js';

const Database = createRequire(import.meta.url)('better-sqlite3') as typeof BetterSqlite3;

/** A raw connection to a data directory's database, as another process (or an operator with sqlite3) would open. */
function rawDb(dataDir: string): BetterSqlite3.Database {
  const db = new Database(path.join(dataDir, 'log.db'));
  db.pragma('busy_timeout = 5000');
  return db;
}

afterEach(cleanup);

describe('log transport: storage', () => {
  it('keeps records, offsets and committed group offsets across close and reopen', async () => {
    const dataDir = tempDir();
    const first = openLog({ dataDir });
    await first.admin.createTopic('orders', { partitions: 2, retentionMs: 86_400_000 });
    const acks = await first.publish(
      'orders',
      Array.from({ length: 20 }, (_, i) => rec(`k${i % 4}`, `${i}`)),
    );
    const sub = first.subscribe({ group: 'billing', topics: ['orders'], startFrom: 'earliest' });
    const c = consume(sub, (d) => (Number(text(d)) < 10 ? d.ack() : undefined));
    await until(() => expect(c.received).toHaveLength(20));
    await first.close();

    const second = openLog({ dataDir });
    const topic = await second.admin.describeTopic('orders');
    expect(topic.partitions).toBe(2);
    expect(topic.retentionMs).toBe(86_400_000);
    for (const partition of [0, 1]) {
      const count = acks.filter((a) => a.partition === partition).length;
      expect(topic.partitionOffsets[partition]).toEqual({ partition, lowOffset: 0, highOffset: count });
      const stored = await second.admin.read('orders', partition, 0, 100);
      expect(stored.map((r) => r.offset)).toEqual(stored.map((_, i) => i));
    }
    const [next] = await second.publish('orders', [rec('k0', 'after reopen')]);
    expect(next!.offset).toBe(acks.filter((a) => a.partition === next!.partition).length);

    const { lag } = await second.admin.describeGroup('billing');
    const unacked = c.received.filter((d) => Number(text(d)) >= 10);
    for (const partition of [0, 1]) {
      const firstUnacked = Math.min(...unacked.filter((d) => d.partition === partition).map((d) => d.offset));
      expect(lag[partition]!.committedOffset).toBe(firstUnacked);
    }
    const again = consume(second.subscribe({ group: 'billing', topics: ['orders'] }));
    await until(() => expect(again.received).toHaveLength(11));
    expect(again.received.map((d) => text(d)).sort()).toEqual(
      [...unacked.map((d) => text(d)), 'after reopen'].sort(),
    );
    expect(again.received.filter((d) => text(d) !== 'after reopen').every((d) => d.deliveryCount === 2)).toBe(
      true,
    );
    expect(await second.admin.listGroups()).toEqual(['billing']);
  });

  it('stores each flush as one batch row per partition (group commit), not one row per record', async () => {
    const dataDir = tempDir();
    const transport = openLog({ dataDir });
    await transport.admin.createTopic('a', { partitions: 2 });
    await transport.admin.createTopic('b', { partitions: 1 });
    // 200 concurrent calls, on two topics, queued in one macrotask: written together.
    await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        transport.publish(i % 2 === 0 ? 'a' : 'b', [rec(`k${i}`, `${i}`)]),
      ),
    );
    const db = rawDb(dataDir);
    try {
      const rows = db
        .prepare('SELECT COUNT(*) AS n, SUM(last_offset - base_offset + 1) AS records FROM batches')
        .get() as {
        n: number;
        records: number;
      };
      expect(rows.records).toBe(200);
      expect(rows.n).toBeLessThanOrEqual(3);
    } finally {
      db.close();
    }
    const stored = await transport.admin.read('b', 0, 0, 1000);
    expect(stored.map((r) => text(r))).toEqual(Array.from({ length: 100 }, (_, i) => `${2 * i + 1}`));
  });

  it('rejects a publish aborted while queued, writing nothing', async () => {
    const transport = openLog();
    await transport.admin.createTopic('t', { partitions: 1 });
    const controller = new AbortController();
    const pending = transport.publish('t', [rec('k', 'v')], { signal: controller.signal });
    controller.abort();
    await expectTidingsError(pending, ErrorCode.ABORTED);
    await expectTidingsError(
      transport.publish('t', [rec('k', 'v')], { signal: AbortSignal.abort() }),
      ErrorCode.ABORTED,
    );
    expect((await transport.admin.describeTopic('t')).partitionOffsets[0]!.highOffset).toBe(0);
  });

  it('reads a consumer far behind in bounded pages and skips what retention removed meanwhile', async () => {
    const transport = openLog({ retentionIntervalMs: 10, defaultPartitions: 1 });
    await transport.admin.createTopic('t', { partitions: 1, retentionBytes: 60_000 });
    // 10 batches of 100 records of 100 bytes (key + value): retention keeps the newest 60 KB, in whole batches.
    for (let b = 0; b < 10; b++) {
      await transport.publish(
        't',
        Array.from({ length: 100 }, (_, i) => rec('k', `${b * 100 + i}`.padStart(99, '0'))),
      );
    }
    await until(async () => {
      const { partitionOffsets } = await transport.admin.describeTopic('t');
      expect(partitionOffsets[0]).toEqual({ partition: 0, lowOffset: 400, highOffset: 1000 });
    });
    const c = consume(transport.subscribe({ group: 'g', topics: ['t'], startFrom: { offset: 0 } }));
    await until(() => expect(c.received).toHaveLength(600));
    expect(c.received[0]!.offset).toBe(400);
    await until(async () => expect((await transport.admin.describeGroup('g')).lag[0]!.lag).toBe(0));
  });

  it('finds offsets by time with producer timestamps out of order, and replays a group from a time', async () => {
    const transport = openLog();
    await transport.admin.createTopic('t', { partitions: 1 });
    const stamps = [1_000, 3_000, 2_000, 5_000, 4_000, 6_000];
    for (const [i, timestamp] of stamps.entries())
      await transport.publish('t', [rec('k', `${i}`, { timestamp })]);
    // Running maximum: 1000 3000 3000 5000 5000 6000.
    expect(await transport.admin.offsetForTime('t', 0, 2_500)).toBe(1);
    expect(await transport.admin.offsetForTime('t', 0, 4_000)).toBe(3);
    expect(await transport.admin.offsetForTime('t', 0, 6_001)).toBe(6);
    // Many batches of several records: the search lands inside a batch.
    await transport.admin.createTopic('many', { partitions: 1 });
    for (let b = 0; b < 37; b++) {
      await transport.publish(
        'many',
        Array.from({ length: 10 }, (_, i) => rec('k', `${b * 10 + i}`, { timestamp: (b * 10 + i) * 10 })),
      );
    }
    for (const [timestamp, offset] of [
      [0, 0],
      [235, 24],
      [240, 24],
      [3_000, 300],
      [3_690, 369],
      [3_691, 370],
    ] as const) {
      expect(await transport.admin.offsetForTime('many', 0, timestamp)).toBe(offset);
    }
    const c = consume(transport.subscribe({ group: 'g', topics: ['t'], startFrom: { timestamp: 4_500 } }));
    await until(() => expect(c.received.map((d) => d.offset)).toEqual([3, 4, 5]));
  });

  it('runs with relaxed durability and its data survives reopening', async () => {
    const dataDir = tempDir();
    const relaxed = openLog({ dataDir, durability: 'relaxed' });
    await relaxed.publish(
      't',
      Array.from({ length: 100 }, (_, i) => rec(`k${i}`, `${i}`)),
    );
    await relaxed.close();
    const reopened = openLog({ dataDir });
    const offsets = (await reopened.admin.describeTopic('t')).partitionOffsets;
    expect(offsets.reduce((sum, p) => sum + p.highOffset, 0)).toBe(100);
  });
});

describe('log transport: errors', () => {
  it('refuses a missing data directory or log when createIfMissing is false, naming the directory', () => {
    const parent = tempDir();
    const missing = path.join(parent, 'nope');
    const error = syncError(() => createLogTransport({ dataDir: missing, createIfMissing: false }));
    expect(isTidingsError(error, ErrorCode.NOT_FOUND)).toBe(true);
    expect((error as Error).message).toContain(missing);
    expect((error as Error).message).toContain('createIfMissing');
    expect(fs.existsSync(missing)).toBe(false);

    const empty = syncError(() => createLogTransport({ dataDir: parent, createIfMissing: false }));
    expect(isTidingsError(empty, ErrorCode.NOT_FOUND)).toBe(true);
    expect((empty as Error).message).toContain('log.db');

    const nested = path.join(parent, 'a', 'b');
    openLog({ dataDir: nested }); // mkdir -p
    expect(fs.existsSync(path.join(nested, 'log.db'))).toBe(true);
  });

  it('refuses a data directory that cannot be created or written', () => {
    const parent = tempDir();
    const file = path.join(parent, 'plain-file');
    fs.writeFileSync(file, 'not a directory');
    const under = syncError(() => createLogTransport({ dataDir: path.join(file, 'data') }));
    expect(isTidingsError(under, ErrorCode.TRANSPORT_UNAVAILABLE)).toBe(true);
    expect((under as Error).message).toContain('cannot be created or written');
    const isFile = syncError(() => createLogTransport({ dataDir: file }));
    expect(isTidingsError(isFile, ErrorCode.INVALID_CONFIG)).toBe(true);
    if (process.getuid?.() !== 0) {
      const readOnly = path.join(parent, 'read-only');
      fs.mkdirSync(readOnly, { mode: 0o555 });
      const denied = syncError(() => createLogTransport({ dataDir: readOnly }));
      expect(isTidingsError(denied, ErrorCode.TRANSPORT_UNAVAILABLE)).toBe(true);
    }
  });

  it('fails a write with TRANSPORT_UNAVAILABLE "locked by another process" past busyTimeoutMs, without blocking', async () => {
    const dataDir = tempDir();
    const transport = openLog({ dataDir, busyTimeoutMs: 300 });
    await transport.publish('t', [rec('k', 'before')]);
    const other = rawDb(dataDir);
    other.exec('BEGIN IMMEDIATE'); // another process holding the write lock
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 5);
    try {
      const error = await expectTidingsError(
        transport.publish('t', [rec('k', 'blocked')]),
        ErrorCode.TRANSPORT_UNAVAILABLE,
      );
      expect(error.message).toContain('locked by another process');
      expect(error.retryable).toBe(true);
      expect(ticks).toBeGreaterThan(3); // the event loop kept running while the write waited
      expect(
        (
          await transport.admin.read(
            't',
            (await transport.admin.describeTopic('t')).partitionOffsets.findIndex((p) => p.highOffset > 0),
            0,
            10,
          )
        ).map(text),
      ).toEqual(['before']);
    } finally {
      clearInterval(ticker);
      other.exec('ROLLBACK');
      other.close();
    }
    await expect(transport.publish('t', [rec('k', 'after')])).resolves.toHaveLength(1);
  });

  it('refuses to return a corrupt batch: admin.read rejects and a subscription ends, naming where', async () => {
    const dataDir = tempDir();
    const transport = openLog({ dataDir });
    await transport.admin.createTopic('t', { partitions: 1 });
    await transport.publish('t', [rec('k', 'first')]);
    await transport.publish('t', [rec('k', 'second'), rec('k', 'third')]);
    const db = rawDb(dataDir);
    try {
      const row = db.prepare('SELECT rowid, data FROM batches WHERE base_offset = 1').get() as {
        rowid: number;
        data: Buffer;
      };
      row.data[row.data.length - 2] = row.data[row.data.length - 2]! ^ 0x20; // a flipped bit in the value of 'third'
      db.prepare('UPDATE batches SET data = ? WHERE rowid = ?').run(row.data, row.rowid);
    } finally {
      db.close();
    }
    const error = await expectTidingsError(transport.admin.read('t', 0, 0, 10), ErrorCode.DATA_CORRUPT);
    expect(error.message).toMatch(/offset 1 of topic 't' partition 0 is corrupt/);
    expect(error.message).toContain('CRC-32C mismatch');
    expect(error.details).toMatchObject({ topic: 't', partition: 0, offset: 1 });
    expect((await transport.admin.read('t', 0, 0, 1)).map(text)).toEqual(['first']);

    const sub = transport.subscribe({ group: 'g', topics: ['t'], startFrom: 'earliest' });
    const c = consume(sub, (d: Delivery) => d.ack());
    const ended = await sub.closed;
    await c.done;
    expect(c.received.map(text)).toEqual(['first']);
    expect(isTidingsError(ended, ErrorCode.DATA_CORRUPT)).toBe(true);
    expect(ended!.message).toContain('partition 0 is corrupt');
  });

  it('rejects every call after close with CLOSED, and close is idempotent', async () => {
    const transport = openLog();
    await transport.close();
    await expectTidingsError(transport.publish('t', [rec('k', 'v')]), ErrorCode.CLOSED);
    await expectTidingsError(transport.admin.listTopics(), ErrorCode.CLOSED);
    expect(
      isTidingsError(
        syncError(() => transport.stores.inbox.has('g', 'id')),
        ErrorCode.CLOSED,
      ),
    ).toBe(true);
    await expect(transport.close()).resolves.toBeUndefined();
  });

  it('stamps records with the injected clock', async () => {
    const clock = createTestClock(42_000);
    const transport = openLog({ clock });
    await transport.publish('t', [rec('k', 'v')]);
    const partition = (await transport.admin.describeTopic('t')).partitionOffsets.findIndex(
      (p) => p.highOffset > 0,
    );
    expect((await transport.admin.read('t', partition, 0, 1))[0]!.timestamp).toBe(42_000);
  });
});
