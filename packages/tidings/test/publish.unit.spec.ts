import * as v from 'valibot';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  ErrorCode,
  createMemoryInbox,
  defineCommand,
  defineEvent,
  isTidingsError,
  type InputOf,
} from '../src/index.js';
import { OrderPlaced, OrderShipped, PaymentReceived, ShipOrder, testBus } from './fixtures.js';

describe('publish', () => {
  it('resolves with a receipt that says where the event landed, and stamps the envelope', async () => {
    const { bus, transport } = testBus();
    const receipt = await bus.publish(OrderPlaced, { orderId: 'o-1', total: 12.5 });
    expect(receipt).toMatchObject({ topic: 'orders', offset: 0 });
    expect(receipt.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const [record] = await transport.admin.read('orders', receipt.partition, receipt.offset, 1);
    expect(record?.key).toBe('o-1');
    expect(record?.headers).toMatchObject({
      'ce-id': receipt.id,
      'ce-type': 'OrderPlaced',
      'ce-source': 'tidings://test',
      'ce-subject': 'o-1',
      'ce-partitionkey': 'o-1',
      'ce-correlationid': receipt.id,
      'ce-schemaversion': '1',
      'content-type': 'application/json',
    });
    expect(JSON.parse(Buffer.from(record!.value).toString())).toEqual({
      orderId: 'o-1',
      seq: 0,
      total: 12.5,
    }); // schema default applied
    await bus.close();
  });

  it('rejects invalid data with VALIDATION_FAILED before anything is written', async () => {
    const { bus, transport } = testBus();
    const error: unknown = await bus
      .publish(OrderPlaced, { orderId: 'o-1', total: -1 })
      .catch((e: unknown) => e);
    expect(isTidingsError(error, ErrorCode.VALIDATION_FAILED)).toBe(true);
    expect((error as Error).message).toMatch(/OrderPlaced was not published, its data is invalid: total/);
    expect((error as { retryable: boolean }).retryable).toBe(false);
    expect(await transport.admin.listTopics()).toEqual([]); // nothing written, not even the topic
    await bus.close();
  });

  it('rejects the whole publishMany when one item is invalid, writing none', async () => {
    const { bus, transport } = testBus();
    await expect(
      bus.publishMany([
        { event: OrderPlaced, data: { orderId: 'o-1', total: 1 } },
        { event: OrderPlaced, data: { orderId: 'o-2', total: -1 } },
      ]),
    ).rejects.toMatchObject({ code: 'VALIDATION_FAILED' });
    expect(await transport.admin.listTopics()).toEqual([]);
    await bus.close();
  });

  it('rejects an event over maxEventBytes with a message that gives the size and the limit', async () => {
    const { bus, transport } = testBus();
    const big = 'x'.repeat(1024 * 1024);
    const error: unknown = await bus
      .publish(OrderShipped, { orderId: 'o-1', carrier: big })
      .catch((e: unknown) => e);
    expect(isTidingsError(error, ErrorCode.EVENT_TOO_LARGE)).toBe(true);
    expect((error as Error).message).toMatch(/it is \d{7} bytes encoded, over the limit of 1048576 bytes/);
    expect((error as { details: { size: number; limit: number } }).details.limit).toBe(1048576);
    expect(await transport.admin.listTopics()).toEqual([]);

    const { bus: small } = testBus({ maxEventBytes: 1000 });
    await expect(small.publish(OrderShipped, { orderId: 'o-1', carrier: 'y'.repeat(2000) })).rejects.toThrow(
      /over the limit of 1000 bytes/,
    );
    await small.close();
    await bus.close();
  });

  it('refuses to publish a command and to send an event, naming the right call', async () => {
    const { bus } = testBus();
    // @ts-expect-error a command is not an event
    await expect(bus.publish(ShipOrder, { orderId: 'o-1' })).rejects.toThrow(
      /is a command; send it with bus.send/,
    );
    // @ts-expect-error an event is not a command
    await expect(bus.send(OrderPlaced, { orderId: 'o-1', total: 1 })).rejects.toThrow(
      /is an event; publish it with bus.publish/,
    );
    await bus.close();
  });

  it('rejects with CLOSED after close', async () => {
    const { bus } = testBus();
    await bus.close();
    await expect(bus.publish(OrderPlaced, { orderId: 'o-1', total: 1 })).rejects.toMatchObject({
      code: 'CLOSED',
    });
  });
});

describe('causation and correlation', () => {
  it('carries the correlation id across three hops and sets each causation id to the handled event', async () => {
    const { bus } = testBus();
    const seen: Array<{
      type: string;
      id: string;
      correlation?: string;
      causation?: string;
      trace?: string;
    }> = [];
    const record = (ctx: {
      envelope: {
        type: string;
        id: string;
        correlationid?: string;
        causationid?: string;
        traceparent?: string;
      };
    }) =>
      seen.push({
        type: ctx.envelope.type,
        id: ctx.envelope.id,
        ...(ctx.envelope.correlationid === undefined ? {} : { correlation: ctx.envelope.correlationid }),
        ...(ctx.envelope.causationid === undefined ? {} : { causation: ctx.envelope.causationid }),
        ...(ctx.envelope.traceparent === undefined ? {} : { trace: ctx.envelope.traceparent }),
      });
    bus.handle('payments', [OrderPlaced], async ({ data }, ctx) => {
      record(ctx);
      await ctx.publish(PaymentReceived, { orderId: data.orderId, amount: data.total });
    });
    bus.handle('shipping', [PaymentReceived], async ({ data }, ctx) => {
      record(ctx);
      await ctx.send(ShipOrder, { orderId: data.orderId });
    });
    const shipped = bus.handle('shipper', [ShipOrder], (_m, ctx) => {
      record(ctx);
    });
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const first = await bus.publish(OrderPlaced, { orderId: 'o-1', total: 3 }, { traceparent });
    await expect.poll(() => seen.length, { timeout: 5_000 }).toBe(3);
    await shipped.close();
    expect(seen.map((s) => s.type)).toEqual(['OrderPlaced', 'PaymentReceived', 'ShipOrder']);
    expect(seen.every((s) => s.correlation === first.id)).toBe(true);
    expect(seen.every((s) => s.trace === traceparent)).toBe(true);
    expect(seen[0]!.causation).toBeUndefined();
    expect(seen[1]!.causation).toBe(seen[0]!.id);
    expect(seen[2]!.causation).toBe(seen[1]!.id);
    await bus.close();
  });
});

describe('commands', () => {
  it('sends a command to its one handler, and refuses a second group handling the same command', async () => {
    const { bus } = testBus();
    const got: string[] = [];
    const shipper = bus.handle('shipper', [ShipOrder], ({ data }) => {
      got.push(data.orderId);
    });
    expect(() => bus.handle('other-shipper', [ShipOrder], () => undefined)).toThrow(
      /already handled by group "shipper"/,
    );
    const receipt = await bus.send(ShipOrder, { orderId: 'o-3' });
    expect(receipt.topic).toBe('commands.ShipOrder');
    await shipper.waitFor(receipt);
    expect(got).toEqual(['o-3']);
    await bus.close();
  });
});

describe('Standard Schema libraries', () => {
  it('works with zod 4: input type for publish, output type (with defaults) for handlers', async () => {
    const Registered = defineEvent('UserRegistered', {
      schema: z.object({ userId: z.string(), plan: z.enum(['free', 'pro']).default('free') }),
      key: 'userId',
    });
    const input: InputOf<typeof Registered> = { userId: 'u-1' }; // plan optional on input
    const { bus } = testBus();
    let plan: 'free' | 'pro' | undefined;
    const consumer = bus.handle('welcome', [Registered], ({ data }) => {
      plan = data.plan; // typed as 'free' | 'pro' on output
    });
    await consumer.waitFor(await bus.publish(Registered, input));
    expect(plan).toBe('free');
    await expect(bus.publish(Registered, { userId: 'u-2', plan: 'gold' as 'pro' })).rejects.toMatchObject({
      code: 'VALIDATION_FAILED',
    });
    await bus.close();
  });

  it('works with valibot 1', async () => {
    const Deposited = defineEvent('MoneyDeposited', {
      schema: v.object({ accountId: v.string(), cents: v.pipe(v.number(), v.integer(), v.minValue(1)) }),
      key: (d) => d.accountId,
    });
    const { bus } = testBus();
    const got: number[] = [];
    const consumer = bus.handle('ledger', [Deposited], ({ data }) => {
      got.push(data.cents);
    });
    await consumer.waitFor(await bus.publish(Deposited, { accountId: 'a-1', cents: 250 }));
    expect(got).toEqual([250]);
    const error: unknown = await bus
      .publish(Deposited, { accountId: 'a-1', cents: 0.5 })
      .catch((e: unknown) => e);
    expect(isTidingsError(error, 'VALIDATION_FAILED')).toBe(true);
    expect((error as Error).message).toMatch(/cents/);
    await bus.close();
  });
});

describe('idempotent consumer (inbox)', () => {
  it('handles a redelivered event once per group and counts the duplicate', async () => {
    const { bus } = testBus();
    const inbox = createMemoryInbox();
    let effects = 0;
    const consumer = bus.handle('once', [OrderPlaced], () => void effects++, { inbox });
    const first = await bus.publish(OrderPlaced, { orderId: 'o-1', total: 1 }, { id: 'fixed-id' });
    const again = await bus.publish(OrderPlaced, { orderId: 'o-1', total: 1 }, { id: 'fixed-id' }); // a producer retry
    await consumer.waitFor([first, again]);
    expect(effects).toBe(1);
    expect(consumer.stats().duplicates).toBe(1);
    await bus.close();
  });
});

describe('definitions', () => {
  it('validates definitions at setup with clear errors', () => {
    expect(() => defineEvent('9bad', { schema: z.object({}), key: () => 'k', naming: 'off' })).toThrow(
      /must start with a letter/,
    );
    expect(() => defineEvent('ThingHappened', { schema: {} as never, key: () => 'k' })).toThrow(
      /must be a Standard Schema/,
    );
    expect(() => defineEvent('ThingHappened', { schema: z.object({}), key: () => 'k', version: 0 })).toThrow(
      /positive integer/,
    );
    expect(() => defineCommand('DoThing', { schema: z.object({}), key: 5 as never })).toThrow(
      /"key" must name a payload property/,
    );
  });

  it('flags event names that read as commands or table operations, and command names that read as events', () => {
    expect(() =>
      defineEvent('PlaceOrder', { schema: z.object({ id: z.string() }), key: 'id', naming: 'error' }),
    ).toThrow(/past-tense/);
    expect(() =>
      defineEvent('InsertOrderRow', { schema: z.object({ id: z.string() }), key: 'id', naming: 'error' }),
    ).toThrow(/table operation/);
    expect(() =>
      defineCommand('OrderPlaced', { schema: z.object({ id: z.string() }), key: 'id', naming: 'error' }),
    ).toThrow(/named like a past event/);
    expect(() =>
      defineEvent('PlaceOrder', { schema: z.object({ id: z.string() }), key: 'id', naming: 'off' }),
    ).not.toThrow();
    expect(() =>
      defineEvent('OrderPlaced', { schema: z.object({ id: z.string() }), key: 'id', naming: 'error' }),
    ).not.toThrow();
    expect(() =>
      defineCommand('PlaceOrder', { schema: z.object({ id: z.string() }), key: 'id', naming: 'error' }),
    ).not.toThrow();
  });

  it('warns (a process warning with code TIDINGS_NAMING) by default', async () => {
    const warnings: Error[] = [];
    const listener = (warning: Error) => warnings.push(warning);
    process.on('warning', listener);
    defineEvent('CreateInvoice', { schema: z.object({ id: z.string() }), key: 'id' });
    await new Promise((resolve) => setImmediate(resolve));
    process.off('warning', listener);
    expect(
      warnings.some(
        (w) => (w as Error & { code?: string }).code === 'TIDINGS_NAMING' && /CreateInvoice/.test(w.message),
      ),
    ).toBe(true);
  });
});
