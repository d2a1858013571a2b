import { afterEach, describe, expect, it } from 'vitest';
import {
  createBus,
  createMemoryTransport,
  parseTopologyFact,
  silentLogger,
  topologyTopic,
  type TopologyFact,
  type Transport,
} from '../../src/index.js';
import { waitUntil } from '../../src/testing/index.js';
import { OrderPlaced, openOutbox, type TestDb } from './helpers.js';

// Topology from an outbox relay, on the real PostgreSQL server: the relaying bus's service is recorded as a producer
// of each type it relays (once per bus life), and nothing is recorded when the bus's topology is off.

const opened: TestDb[] = [];
afterEach(async () => {
  for (const db of opened.splice(0)) await db.close();
});

/** Every topology fact on the transport, in write order per partition. */
async function facts(transport: Transport): Promise<TopologyFact[]> {
  if (!(await transport.admin.listTopics()).includes(topologyTopic)) return [];
  const out: TopologyFact[] = [];
  const { partitionOffsets } = await transport.admin.describeTopic(topologyTopic);
  for (const { partition, lowOffset, highOffset } of partitionOffsets) {
    if (highOffset === lowOffset) continue;
    for (const record of await transport.admin.read(
      topologyTopic,
      partition,
      lowOffset,
      highOffset - lowOffset,
    )) {
      const fact = parseTopologyFact(record);
      if (fact) out.push(fact);
    }
  }
  return out;
}

describe('topology of an outbox relay', () => {
  it("records the relaying bus's service as producer of each relayed type, once, then the full fact on a direct publish", async () => {
    const { db, outbox } = await openOutbox(opened, 'postgres', { service: 'orders-api' });
    await db.tx(async (tx) => {
      for (let n = 0; n < 3; n++) await outbox.enqueue(tx, OrderPlaced, { orderId: `o-${n}`, n });
    });
    const transport = createMemoryTransport();
    const bus = createBus({ service: 'relayer', transport, logger: silentLogger });
    try {
      const seen: string[] = [];
      const consumer = bus.handle(
        'billing',
        [OrderPlaced],
        (_message, ctx) => void seen.push(ctx.envelope.id),
      );
      const relay = bus.startRelay(outbox, { pollIntervalMs: 5 });
      await waitUntil(() => seen.length === 3, { message: 'three relayed events handled' });
      await relay.close();
      // Facts are written in the background: wait for the first. The envelopes keep the enqueuing service as their
      // source; topology names the relaying service, whose transport the events went to.
      await waitUntil(async () => (await facts(transport)).some((f) => f.fact === 'produces'));
      const produces = (await facts(transport)).filter((f) => f.fact === 'produces');
      expect(produces).toEqual([
        {
          v: 1,
          fact: 'produces',
          service: 'relayer',
          how: 'observed',
          messages: [{ type: 'OrderPlaced', topic: 'orders', version: 1 }],
          at: expect.any(Number) as number,
        },
      ]);
      // A direct publish of the same type by the same bus still records the full fact (kind and schema).
      const receipt = await bus.publish(OrderPlaced, { orderId: 'o-9', n: 9 });
      await consumer.waitFor(receipt);
      await bus.close();
      const after = (await facts(transport)).filter((f) => f.fact === 'produces');
      expect(after).toHaveLength(2);
      expect(after[1]!.messages[0]).toMatchObject({ type: 'OrderPlaced', kind: 'event', topic: 'orders' });
      expect(after[1]!.messages[0]!.schema).toBeDefined();
    } finally {
      await bus.close();
    }
  });

  it('records nothing for a bus with topology: false', async () => {
    const { db, outbox } = await openOutbox(opened, 'postgres');
    await db.tx((tx) => outbox.enqueue(tx, OrderPlaced, { orderId: 'o-1', n: 1 }));
    const transport = createMemoryTransport();
    const bus = createBus({ service: 'quiet', transport, logger: silentLogger, topology: false });
    try {
      const seen: string[] = [];
      bus.handle('billing', [OrderPlaced], (_message, ctx) => void seen.push(ctx.envelope.id));
      bus.startRelay(outbox, { pollIntervalMs: 5 });
      await waitUntil(() => seen.length === 1, { message: 'the relayed event handled' });
    } finally {
      await bus.close();
    }
    expect(await facts(transport)).toEqual([]);
  });
});
