/**
 * The outcome journal behind `tidings trace`: what it writes, and that it keeps its topic bounded.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  createBus,
  createMemoryTransport,
  defineEvent,
  outcomesRetentionMs,
  outcomesTopic,
  parseOutcomeRecord,
  silentLogger,
  type Bus,
} from 'tidings';

const OrderPlaced = defineEvent('OrderPlaced', {
  schema: z.object({ orderId: z.string() }),
  key: 'orderId',
  topic: 'orders',
});

let bus: Bus | undefined;
afterEach(async () => {
  await bus?.close();
  bus = undefined;
});

describe('the outcome journal', () => {
  it('journals a delivery handled after a retry, on a topic created with its retention', async () => {
    const transport = createMemoryTransport();
    bus = createBus({ service: 'shop', transport, logger: silentLogger });
    let calls = 0;
    const consumer = bus.handle(
      'billing',
      [OrderPlaced],
      () => {
        if (++calls === 1) throw new Error('flaky');
      },
      { retry: { maxAttempts: 3, initialDelayMs: 1 } },
    );
    const receipt = await bus.publish(OrderPlaced, { orderId: 'o-1' });
    await consumer.waitFor([receipt]);
    await bus.close();

    const topic = await transport.admin.describeTopic(outcomesTopic);
    expect(topic.retentionMs).toBe(outcomesRetentionMs);
    const records = await transport.admin.read(outcomesTopic, 0, 0, 10);
    expect(records.map((r) => parseOutcomeRecord(r))).toMatchObject([
      { outcome: 'retried', group: 'billing', eventId: receipt.id, attempts: 2 },
    ]);
  });

  it('writes nothing for a first-attempt success', async () => {
    const transport = createMemoryTransport();
    bus = createBus({ service: 'shop', transport, logger: silentLogger });
    const consumer = bus.handle('billing', [OrderPlaced], () => undefined);
    await consumer.waitFor([await bus.publish(OrderPlaced, { orderId: 'o-1' })]);
    await bus.close();
    expect(await transport.admin.listTopics()).not.toContain(outcomesTopic);
  });
});
