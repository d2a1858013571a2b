import { afterEach, describe, expect, it } from 'vitest';
import type { Delivery } from '../src/core/transport.js';
import {
  cleanup,
  consume,
  openLog,
  rec,
  sequencesByKey,
  spawnFixture,
  tempDir,
  text,
  until,
} from './log-fixtures/helpers.js';

// Real processes on one data directory: `node --import tsx --conditions=tidings-source test/log-fixtures/<script>`.

afterEach(cleanup);

interface Printed {
  partition: number;
  offset: number;
  key: string;
  value: string;
  deliveryCount: number;
}

const deliveries = (lines: readonly string[]): Printed[] =>
  lines.filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Printed);

describe('log transport: several processes on one data directory', () => {
  it('delivers what a producer process publishes to a consumer process, every record once, in key order', async () => {
    const dataDir = tempDir();
    const setup = openLog({ dataDir });
    await setup.admin.createTopic('orders', { partitions: 4 });
    await setup.close();

    const consumer = spawnFixture('consumer.ts', [dataDir, 'billing', 'orders', '200', 'ack']);
    await until(() => expect(consumer.lines.some((line) => line.startsWith('ready'))).toBe(true), 20_000);
    const producer = spawnFixture('producer.ts', [dataDir, 'orders', '20', '10']);
    expect(await producer.exited, producer.stderr()).toBe(0);
    expect(producer.lines).toContain('published 200');
    expect(await consumer.exited, consumer.stderr()).toBe(0);

    const received = deliveries(consumer.lines);
    expect(received).toHaveLength(200);
    expect(new Set(received.map((d) => `${d.key}/${d.value}`)).size).toBe(200);
    const byKey = sequencesByKey(received.map((d) => ({ key: d.key, seq: Number(d.value) })));
    expect(byKey.size).toBe(10);
    for (const [, seqs] of byKey) expect(seqs).toEqual(Array.from({ length: 20 }, (_, i) => i));

    const after = openLog({ dataDir });
    const { lag, members } = await after.admin.describeGroup('billing');
    expect(members).toEqual([]); // it left on close
    expect(lag.every((p) => p.lag === 0)).toBe(true);
  });

  it('takes over at once from a consumer process killed with SIGKILL, redelivering its deliveries', async () => {
    const dataDir = tempDir();
    const transport = openLog({ dataDir }); // default lease: 10 s
    await transport.admin.createTopic('orders', { partitions: 4 });
    await transport.publish(
      'orders',
      Array.from({ length: 20 }, (_, i) => rec(`k${i % 5}`, `${i}`)),
    );

    const doomed = spawnFixture('consumer.ts', [dataDir, 'billing', 'orders', '20', 'hold']);
    await until(() => expect(deliveries(doomed.lines)).toHaveLength(20), 20_000);
    const doomedMember = doomed.lines.find((line) => line.startsWith('ready'))!.split(' ')[1]!;
    expect((await transport.admin.describeGroup('billing')).members.map((m) => m.memberId)).toEqual([
      doomedMember,
    ]);
    doomed.child.kill('SIGKILL');
    await doomed.exited;

    // The dead process's lease has 10 s left, but it ran on this host and its pid is gone: it is not live.
    const sub = transport.subscribe({ group: 'billing', topics: ['orders'] });
    const c = consume(sub, (d: Delivery) => d.ack());
    await until(() => expect(c.received).toHaveLength(20), 5_000);
    expect(c.received.every((d) => d.deliveryCount === 2)).toBe(true);
    expect(new Set(c.received.map(text)).size).toBe(20);
    expect((await transport.admin.describeGroup('billing')).members.map((m) => m.memberId)).toEqual([
      sub.memberId,
    ]);

    // The killed process left a log that opens cleanly and continues its offsets.
    const reopened = openLog({ dataDir });
    const acks = await reopened.publish('orders', [rec('k0', 'after the kill')]);
    expect(acks[0]!.offset).toBeGreaterThan(0);
    await until(() => expect(c.received.map(text)).toContain('after the kill'));
  });

  it('drains a backlog far larger than its memory bound in bounded memory', async () => {
    const dataDir = tempDir();
    const transport = openLog({ dataDir });
    await transport.admin.createTopic('readings', { partitions: 2 });
    const value = 'x'.repeat(4_000);
    const batches = 60; // 60 x 1,000 records of 4 KB: a 240 MB backlog
    for (let b = 0; b < batches; b++) {
      await transport.publish(
        'readings',
        Array.from({ length: 1_000 }, (_, i) => rec(`sensor-${i % 50}`, value)),
      );
    }
    await transport.close();
    const drain = spawnFixture('backlog-consumer.ts', [dataDir, 'readings', String(batches * 1_000)]);
    expect(await drain.exited, drain.stderr()).toBe(0);
    const { received, baselineRss, peakRss } = JSON.parse(drain.lines.at(-1)!) as {
      received: number;
      baselineRss: number;
      peakRss: number;
    };
    expect(received).toBe(60_000);
    // Pages of at most 2,048 records / 512 KiB per partition: growth (about 50 MB here, mostly V8's heap) is a
    // fraction of the 240 MB backlog, and does not grow with it.
    expect(peakRss - baselineRss).toBeLessThan(100 * 1024 * 1024);
  });
});
