/**
 * Schema evolution on the embedded log: events written by older definitions in the same data directory replay as
 * the current version through the upcasters; an event newer than the consumer knows is dead-lettered with
 * UNKNOWN_VERSION; and a bus with a registry refuses an incompatible version before writing anything.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  createBus,
  defineEvent,
  isTidingsError,
  silentLogger,
  type EventDefinition,
  type Receipt,
} from 'tidings';
import { createLogTransport } from 'tidings/log';
import { createSchemaRegistry, createSqliteSchemaStore, type SchemaRegistry } from 'tidings/registry';

const v1Schema = z.object({ orderId: z.string(), amount: z.number() });
const v2Schema = v1Schema.extend({ currency: z.enum(['EUR', 'USD']).default('EUR') });
const v3Schema = v2Schema.extend({ channel: z.enum(['web', 'store']).default('web') });

const OrderPlacedV1 = defineEvent('OrderPlaced', { schema: v1Schema, key: 'orderId' });
const OrderPlacedV2 = defineEvent('OrderPlaced', {
  schema: v2Schema,
  key: 'orderId',
  version: 2,
  upcast: { 1: (v1: z.infer<typeof v1Schema>) => ({ ...v1, currency: 'EUR' }) },
});
const OrderPlacedV3 = defineEvent('OrderPlaced', {
  schema: v3Schema,
  key: 'orderId',
  version: 3,
  upcast: {
    1: (v1: z.infer<typeof v1Schema>) => ({ ...v1, currency: 'EUR' }),
    // Shop orders are numbered s-...: derived, which a default could not do.
    2: (v2: z.infer<typeof v2Schema>) => ({ ...v2, channel: v2.orderId.startsWith('s-') ? 'store' : 'web' }),
  },
});
/** A breaking v4: the amount becomes integer cents, required, with no default. */
const OrderPlacedV4 = defineEvent('OrderPlaced', {
  schema: v3Schema.omit({ amount: true }).extend({ amountCents: z.number().int() }),
  key: 'orderId',
  version: 4,
  upcast: {
    1: (v1: z.infer<typeof v1Schema>) => ({ ...v1, currency: 'EUR' }),
    2: (v2: z.infer<typeof v2Schema>) => ({ ...v2, channel: 'web' }),
    3: ({ amount, ...rest }: z.infer<typeof v3Schema>) => ({
      ...rest,
      amountCents: Math.round(amount * 100),
    }),
  },
});

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tidings-evolution-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Runs `fn` with a bus on the data directory (a fresh process's worth of state), then closes it. */
async function withBus<T>(
  registry: SchemaRegistry | undefined,
  fn: (bus: ReturnType<typeof createBus>) => Promise<T>,
): Promise<T> {
  const transport = createLogTransport({ dataDir: dir });
  const bus = createBus({
    service: 'orders',
    transport,
    logger: silentLogger,
    ...(registry === undefined ? {} : { registry }),
  });
  try {
    return await fn(bus);
  } finally {
    await bus.close();
    await transport.close();
  }
}

const publish = (definition: EventDefinition, data: Record<string, unknown>, registry?: SchemaRegistry) =>
  withBus(registry, (bus) => bus.publish(definition, data as never));

describe('upcasting', () => {
  it('replays v1, v2 and v3 events of the same data directory as v3', async () => {
    const receipts = [
      await publish(OrderPlacedV1, { orderId: 'o-1', amount: 10 }),
      await publish(OrderPlacedV1, { orderId: 's-2', amount: 20 }),
      await publish(OrderPlacedV2, { orderId: 's-3', amount: 30, currency: 'USD' }),
      await publish(OrderPlacedV3, { orderId: 'o-4', amount: 40, currency: 'USD', channel: 'store' }),
    ];

    const received = await withBus(undefined, async (bus) => {
      const seen: Array<{ data: { orderId: string }; version: number | undefined }> = [];
      const consumer = bus.handle('replay', [OrderPlacedV3], (message, ctx) => {
        seen.push({ data: message.data, version: ctx.envelope.schemaversion });
      });
      await consumer.waitFor(receipts);
      // Order is promised per key only: sort by order id.
      return seen.sort((a, b) => a.data.orderId.slice(2).localeCompare(b.data.orderId.slice(2)));
    });
    expect(received.map((r) => r.version)).toEqual([1, 1, 2, 3]); // as written
    expect(received.map((r) => r.data)).toEqual([
      { orderId: 'o-1', amount: 10, currency: 'EUR', channel: 'web' },
      { orderId: 's-2', amount: 20, currency: 'EUR', channel: 'store' },
      { orderId: 's-3', amount: 30, currency: 'USD', channel: 'store' },
      { orderId: 'o-4', amount: 40, currency: 'USD', channel: 'store' },
    ]);
  });

  it('dead-letters an event newer than the consumer knows with UNKNOWN_VERSION, never misreading it', async () => {
    const newer = await publish(OrderPlacedV4, {
      orderId: 'o-1',
      amountCents: 1000,
      currency: 'EUR',
      channel: 'web',
    });
    const after = await publish(OrderPlacedV3, { orderId: 'o-2', amount: 20 });
    await withBus(undefined, async (bus) => {
      const handled: unknown[] = [];
      const consumer = bus.handle(
        'old-reader',
        [OrderPlacedV3],
        (message) => void handled.push(message.data),
      );
      await consumer.waitFor([newer, after]);
      expect(handled).toEqual([{ orderId: 'o-2', amount: 20, currency: 'EUR', channel: 'web' }]);
      const letters = await bus.deadLetters.list({ group: 'old-reader', topic: 'OrderPlaced' });
      expect(letters).toHaveLength(1);
      expect(letters[0]).toMatchObject({ reason: 'UNKNOWN_VERSION', attempts: 0 });
      expect(letters[0]!.error).toMatch(/version 4 is newer than the version this consumer knows \(3\)/);
    });
  });

  it('dead-letters with SCHEMA_INVALID when an upcaster throws', async () => {
    const Throwing = defineEvent('OrderPlaced', {
      schema: v2Schema,
      key: 'orderId',
      version: 2,
      upcast: {
        1: () => {
          throw new Error('no currency table');
        },
      },
    });
    const receipt: Receipt = await publish(OrderPlacedV1, { orderId: 'o-1', amount: 1 });
    await withBus(undefined, async (bus) => {
      const consumer = bus.handle('g', [Throwing], () => undefined);
      await consumer.waitFor(receipt);
      const [letter] = await bus.deadLetters.list({ group: 'g', topic: 'OrderPlaced' });
      expect(letter).toMatchObject({ reason: 'SCHEMA_INVALID' });
      expect(letter!.error).toMatch(
        /upcasting from version 1 to 2 failed \(no currency table\); fix upcast\[1\]/,
      );
    });
  });

  it('validates the upcast option when the event is defined', () => {
    const define = (version: number, upcast: unknown) => () =>
      defineEvent('OrderPlaced', { schema: v1Schema, key: 'orderId', version, upcast: upcast as never });
    expect(define(3, { 1: (x: unknown) => x })).toThrow(
      /one function for each earlier version, 1 to 2; missing 2/,
    );
    expect(define(2, { 1: (x: unknown) => x, 2: (x: unknown) => x })).toThrow(/unexpected 2/);
    expect(define(1, { 0: (x: unknown) => x })).toThrow(/none for version 1; unexpected 0/);
    expect(define(2, { 1: 'nope' })).toThrow(/upcast\[1\] must be a function/);
    expect(define(2, [])).toThrow(/"upcast" must be an object of functions/);
    expect(define(2, { 1: (x: unknown) => x })).not.toThrow();
  });
});

describe('a bus with a registry', () => {
  it('registers each version before its first publish and refuses a breaking one before writing', async () => {
    const registry = createSchemaRegistry({ store: createSqliteSchemaStore({ dataDir: dir }) });
    try {
      await publish(OrderPlacedV1, { orderId: 'o-1', amount: 1 }, registry);
      await publish(OrderPlacedV2, { orderId: 'o-2', amount: 2 }, registry);
      await publish(OrderPlacedV3, { orderId: 'o-3', amount: 3 }, registry);
      expect(await registry.versions('OrderPlaced')).toEqual([1, 2, 3]);
      // An old producer still running publishes v1 again: the registered version is found, nothing new.
      await publish(OrderPlacedV1, { orderId: 'o-4', amount: 4 }, registry);
      expect(await registry.versions('OrderPlaced')).toEqual([1, 2, 3]);

      const error = await withBus(registry, async (bus) => {
        try {
          await bus.publish(OrderPlacedV4, { orderId: 'o-5', amountCents: 500 });
        } catch (caught) {
          return caught;
        }
        return undefined;
      });
      expect(isTidingsError(error, 'SCHEMA_INCOMPATIBLE')).toBe(true);
      expect((error as Error).message).toMatch(
        /^OrderPlaced version 4 was not published: the schema is incompatible/,
      );
      expect((error as Error).message).toMatch(
        /field "amountCents" breaks BACKWARD compatibility with version 3 \(rule PROPERTY_ADDED_REQUIRED/,
      );
      expect(await registry.versions('OrderPlaced')).toEqual([1, 2, 3]);
      // Nothing was written: the topic still ends after the four accepted events.
      const end = await withBus(undefined, async (bus) => {
        const topic = await bus.transport.admin.describeTopic('OrderPlaced');
        let count = 0;
        for (const partition of topic.partitionOffsets) count += partition.highOffset - partition.lowOffset;
        return count;
      });
      expect(end).toBe(4);
    } finally {
      await registry.close();
    }
  });
});
