/**
 * `tidings topology`, `tidings trace`, `tidings asyncapi` and `tidings serve --metrics`, in-process on a transport
 * that buses of several services share: the topology they record, a flow's causal chain with every outcome, an
 * AsyncAPI document that @asyncapi/parser (a validator no one here wrote) accepts, and Prometheus metrics.
 */
import { Parser } from '@asyncapi/parser';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  createBus,
  defineCommand,
  defineEvent,
  silentLogger,
  topologyHeader,
  topologyTopic,
  type Bus,
  type Receipt,
} from 'tidings';
import { waitUntil } from 'tidings/testing';
import type { CliDeps } from '../src/context.js';
import { buildServeApp } from '../src/serve/app.js';
import { createTestTransport, lines, run } from './support.js';

const OrderPlaced = defineEvent('OrderPlaced', {
  schema: z.object({ orderId: z.string(), total: z.number().positive() }),
  key: 'orderId',
  topic: 'orders',
});
const OrderCancelled = defineEvent('OrderCancelled', {
  schema: z.object({ orderId: z.string() }),
  key: 'orderId',
  topic: 'orders',
});
const PaymentReceived = defineEvent('PaymentReceived', {
  schema: z.object({ orderId: z.string(), amount: z.number() }),
  key: 'orderId',
  topic: 'payments',
});
const RefundIssued = defineEvent('RefundIssued', {
  schema: z.object({ orderId: z.string() }),
  key: 'orderId',
  topic: 'payments',
});
const ShipOrder = defineCommand('ShipOrder', {
  schema: z.object({ orderId: z.string() }),
  key: 'orderId',
});

let transport: ReturnType<typeof createTestTransport>;
let buses: Bus[];
const tidings = (args: string[]) => run(transport, args);

/**
 * Four services on one transport: `orders` publishes (and declares OrderCancelled, which no one consumes); `mailer`
 * runs group email; `stock` runs warehouse (parks order `poison`); `billing` handles payments in `ledger` (fails
 * once, then succeeds), in `audit` (always fails: dead-lettered) and consumes RefundIssued, which no one produces.
 */
async function shop(): Promise<{ placed: Receipt; payment: Receipt; poison: Receipt }> {
  const bus = (service: string, produces: Parameters<typeof createBus>[0] = {}) => {
    const b = createBus({ service, transport, logger: silentLogger, ...produces });
    buses.push(b);
    return b;
  };
  const orders = bus('orders', { produces: [OrderPlaced, OrderCancelled] });
  bus('mailer').handle('email', [OrderPlaced], () => undefined);
  bus('stock').handle(
    'warehouse',
    [OrderPlaced],
    ({ data }) => {
      if (data.orderId === 'poison') throw new Error('no such SKU');
    },
    { onFailure: 'park', retry: { maxAttempts: 2, initialDelayMs: 1 } },
  );
  const billing = bus('billing');
  let failedOnce = false;
  billing.handle(
    'ledger',
    [PaymentReceived, RefundIssued],
    () => {
      if (!failedOnce) {
        failedOnce = true;
        throw new Error('ledger busy');
      }
    },
    { retry: { maxAttempts: 3, initialDelayMs: 1 } },
  );
  billing.handle(
    'audit',
    [PaymentReceived],
    () => {
      throw new Error('audit store down');
    },
    { retry: false },
  );
  const placed = await orders.publish(OrderPlaced, { orderId: 'o-1', total: 10 });
  const payment = await orders.publish(
    PaymentReceived,
    { orderId: 'o-1', amount: 10 },
    { correlationId: placed.id, causationId: placed.id },
  );
  const poison = await orders.publish(OrderPlaced, { orderId: 'poison', total: 5 });
  for (const b of buses)
    for (const c of b.consumers())
      await c.waitFor(c.topics.includes('orders') ? [placed, poison] : [payment]);
  await Promise.all(buses.map((b) => b.close().then(() => undefined))); // flushes topology and journal
  return { placed, payment, poison };
}

beforeEach(() => {
  transport = createTestTransport();
  buses = [];
});
afterEach(async () => {
  await Promise.all(buses.map((b) => b.close()));
  await transport.shutdown();
});

describe('tidings topology', () => {
  it('prints who produces and consumes each type, and flags what is never consumed or never produced', async () => {
    await shop();
    const result = await tidings(['topology']);
    expect(result.code).toBe(0);
    expect(lines(result.stdout)).toEqual([
      'TYPE             KIND   TOPIC     PRODUCED BY  CONSUMED BY (GROUPS)',
      'OrderCancelled   event  orders    orders       (none)',
      'OrderPlaced      event  orders    orders       email, warehouse',
      'PaymentReceived  event  payments  orders       audit, ledger',
      'RefundIssued     event  payments  (none)       ledger',
      'warning: OrderCancelled is produced (declared or published) but no group consumes it',
      'warning: RefundIssued is consumed but no service was seen or declared to produce it',
    ]);
  });

  it('answers --who-subscribes with groups and services, and suggests a type for a typo', async () => {
    await shop();
    const who = await tidings(['topology', '--who-subscribes', 'OrderPlaced']);
    expect(lines(who.stdout)).toEqual([
      'OrderPlaced (topic orders) is consumed by 2 groups:',
      'GROUP      SERVICES',
      'email      mailer',
      'warehouse  stock',
    ]);
    const json = JSON.parse((await tidings(['topology', '-w', 'OrderPlaced', '--json'])).stdout) as {
      consumers: unknown;
      producers: unknown;
    };
    expect(json.consumers).toEqual([
      { group: 'email', services: ['mailer'] },
      { group: 'warehouse', services: ['stock'] },
    ]);
    expect(json.producers).toEqual([{ service: 'orders', declared: true, observed: true }]);
    expect((await tidings(['topology', '-w', 'OrderCancelled'])).stdout).toBe(
      'No group consumes OrderCancelled (topic orders).\n',
    );
    const typo = await tidings(['topology', '-w', 'OrderPlace']);
    expect(typo.code).toBe(1);
    expect(typo.stderr).toMatch(/no message type "OrderPlace" .*did you mean "OrderPlaced"\?/);
  });

  it('prints the graph as Mermaid, DOT and JSON', async () => {
    await shop();
    const mermaid = (await tidings(['topology', '--format', 'mermaid'])).stdout;
    expect(mermaid.split('\n')[0]).toBe('flowchart LR');
    expect(mermaid).toContain('service_orders -->|publishes| type_OrderPlaced');
    expect(mermaid).toContain('type_OrderPlaced --> group_warehouse');
    const dot = (await tidings(['topology', '--format', 'dot'])).stdout;
    expect(dot).toMatch(/^digraph tidings \{/);
    expect(dot).toContain('"service:orders" -> "type:OrderPlaced";');
    expect(dot).toContain('"type:PaymentReceived" -> "group:audit";');
    const json = JSON.parse((await tidings(['topology', '--format', 'json'])).stdout) as {
      neverConsumed: string[];
      neverProduced: string[];
      types: Array<{ type: string; hasSchema: boolean }>;
    };
    expect(json.neverConsumed).toEqual(['OrderCancelled']);
    expect(json.neverProduced).toEqual(['RefundIssued']);
    expect(json.types.every((t) => t.hasSchema)).toBe(true);
    const bad = await tidings(['topology', '--format', 'svg']);
    expect(bad.code).toBe(2);
  });

  it('says when nothing was recorded yet', async () => {
    expect((await tidings(['topology'])).stdout).toMatch(/^No topology recorded in .* yet/);
  });

  it("takes a type's kind and schema from a fact that states them, when an outbox relay's fact came first", async () => {
    // What a bus relaying stored envelopes records: type, topic and schema version, no kind, no schema.
    const relayed = {
      v: 1,
      fact: 'produces',
      service: 'relayer',
      how: 'observed',
      messages: [{ type: 'ShipOrder', topic: 'commands.ShipOrder', version: 1 }],
      at: Date.now(),
    };
    await transport.publish(topologyTopic, [
      {
        key: 'relayer',
        headers: { [topologyHeader]: '1', 'content-type': 'application/json' },
        value: Buffer.from(JSON.stringify(relayed)),
      },
    ]);
    const shipping = createBus({ service: 'shipping', transport, logger: silentLogger });
    buses.push(shipping);
    shipping.handle('shipper', [ShipOrder], () => undefined);
    await shipping.close();
    const json = JSON.parse((await tidings(['topology', '--format', 'json'])).stdout) as {
      types: Array<{ type: string; kind: string; hasSchema: boolean; producers: Array<{ service: string }> }>;
    };
    expect(json.types).toEqual([
      expect.objectContaining({
        type: 'ShipOrder',
        kind: 'command',
        hasSchema: true,
        producers: [{ service: 'relayer', declared: false, observed: true }],
      }),
    ]);
  });

  it('records each fact once per bus life, and nothing for a bus with topology: false', async () => {
    const bus = createBus({ service: 'orders', transport, logger: silentLogger });
    buses.push(bus);
    for (let i = 0; i < 5; i++) await bus.publish(OrderPlaced, { orderId: `o-${i}`, total: 1 });
    const quiet = createBus({ service: 'quiet', transport, logger: silentLogger, topology: false });
    buses.push(quiet);
    await quiet.publish(PaymentReceived, { orderId: 'o', amount: 1 });
    await bus.close();
    await quiet.close();
    const description = await transport.admin.describeTopic('__topology');
    expect(description.partitionOffsets.reduce((n, p) => n + p.highOffset, 0)).toBe(1);
  });
});

describe('tidings trace', () => {
  it('prints a flow as a tree with each group outcome: handled, retried, parked, dead-lettered', async () => {
    const { placed, payment, poison } = await shop();
    const result = await tidings(['trace', placed.id]);
    expect(result.code).toBe(0);
    const out = lines(result.stdout);
    expect(out[0]).toBe(`Correlation ${placed.id}: 2 events`);
    expect(out[1]).toMatch(
      new RegExp(
        `^OrderPlaced ${placed.id} {2}orders\\[${placed.partition}\\]@${placed.offset} {2}service orders {2}\\d{4}-`,
      ),
    );
    expect(out.slice(2)).toEqual([
      '├─ email (mailer)     handled',
      '├─ warehouse (stock)  handled',
      expect.stringMatching(
        new RegExp(
          `^└─ PaymentReceived ${payment.id} {2}payments\\[${payment.partition}\\]@${payment.offset} {2}service orders`,
        ),
      ) as unknown as string,
      '   ├─ audit (billing)    dead-lettered after 1 attempt (Error: audit store down)',
      '   └─ ledger (billing)   retried after 2 attempts',
    ]);

    const parked = lines((await tidings(['trace', poison.id])).stdout);
    expect(parked).toContain('├─ email (mailer)     handled');
    expect(parked).toContain('└─ warehouse (stock)  parked after 2 attempts (Error: no such SKU)');
  });

  it('shows a parked event skipped by an operator, and JSON with nested children', async () => {
    const { placed, poison } = await shop();
    const stock = createBus({ service: 'stock', transport, logger: silentLogger });
    buses.push(stock);
    stock.handle('warehouse', [OrderPlaced], () => undefined, { onFailure: 'park' });
    await stock.parked.skip({ group: 'warehouse', topic: 'orders', key: 'poison' });
    await stock.close();
    const skipped = lines((await tidings(['trace', poison.id])).stdout);
    expect(skipped, skipped.join('\n')).toContain(
      '└─ warehouse (stock)  parked after 2 attempts (Error: no such SKU), then skipped',
    );
    const json = JSON.parse((await tidings(['trace', placed.id, '--json'])).stdout) as {
      events: number;
      roots: Array<{
        type: string;
        outcomes: Array<{ group: string; outcome: string }>;
        children: Array<{ type: string }>;
      }>;
    };
    expect(json.events).toBe(2);
    expect(json.roots).toHaveLength(1);
    expect(json.roots[0]!.children.map((c) => c.type)).toEqual(['PaymentReceived']);
    expect(json.roots[0]!.outcomes).toEqual([
      { group: 'email', services: ['mailer'], outcome: 'handled' },
      { group: 'warehouse', services: ['stock'], outcome: 'handled' },
    ]);
  });

  it('shows a re-published event (same id, correlation and causation) as a copy, not a second event', async () => {
    const orders = createBus({ service: 'orders', transport, logger: silentLogger });
    buses.push(orders);
    const billing = orders.handle('ledger', [PaymentReceived], () => undefined);
    const placed = await orders.publish(OrderPlaced, { orderId: 'o-1', total: 10 });
    const flow = { correlationId: placed.id, causationId: placed.id };
    const payment = await orders.publish(PaymentReceived, { orderId: 'o-1', amount: 10 }, flow);
    const copy = await orders.publish(
      PaymentReceived,
      { orderId: 'o-1', amount: 10 },
      { id: payment.id, ...flow }, // a producer retry
    );
    await billing.waitFor([payment, copy]);
    await orders.close();
    const out = lines((await tidings(['trace', placed.id])).stdout);
    expect(out[0]).toBe(`Correlation ${placed.id}: 2 events (+1 re-published copy of the same id)`);
    expect(out.slice(2)).toEqual([
      expect.stringMatching(
        new RegExp(`^├─ PaymentReceived ${payment.id} {2}payments\\[\\d\\]@${payment.offset} `),
      ),
      '│  └─ ledger (orders)  handled',
      expect.stringMatching(
        new RegExp(
          `^└─ PaymentReceived ${payment.id} \\(re-published copy\\) {2}payments\\[\\d\\]@${copy.offset} `,
        ),
      ),
      '   └─ ledger (orders)  passed (handled again, or dropped by an inbox)',
    ] as unknown[]);
    const json = JSON.parse((await tidings(['trace', placed.id, '--json'])).stdout) as {
      events: number;
      copies: number;
      roots: Array<{ children: Array<{ id: string; copy?: boolean }> }>;
    };
    expect(json.events).toBe(2);
    expect(json.copies).toBe(1);
    expect(json.roots[0]!.children.map((c) => [c.id, c.copy ?? false])).toEqual([
      [payment.id, false],
      [payment.id, true],
    ]);
  });

  it('shows pending for a group that has not processed an event yet, and fails in one line for an unknown id', async () => {
    const bus = createBus({ service: 'orders', transport, logger: silentLogger });
    buses.push(bus);
    const slow = bus.handle(
      'slow',
      [OrderPlaced],
      (_message, ctx) =>
        new Promise<void>((_resolve, reject) => ctx.signal.addEventListener('abort', reject)),
      { closeTimeoutMs: 0, retry: false },
    );
    const placed = await bus.publish(OrderPlaced, { orderId: 'o-9', total: 1 });
    await waitUntil(async () => (await transport.admin.listTopics()).includes('__topology'));
    await waitUntil(async () => lines((await tidings(['topology'])).stdout).some((l) => l.includes('slow')));
    const pending = lines((await tidings(['trace', placed.id])).stdout);
    expect(pending, pending.join('\n')).toContain('└─ slow (orders)  pending');
    void slow;
    const unknown = await tidings(['trace', 'no-such-id']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/^error: no event with correlation id "no-such-id" in /);
  });
});

describe('tidings asyncapi', () => {
  it('writes an AsyncAPI 3.0 document that @asyncapi/parser validates without errors', async () => {
    await shop();
    const result = await tidings(['asyncapi', '--title', 'Shop', '--api-version', '2.1.0']);
    expect(result.code).toBe(0);
    const document = JSON.parse(result.stdout) as {
      asyncapi: string;
      info: { title: string; version: string };
      channels: Record<string, { address: string; messages: Record<string, unknown> }>;
      operations: Record<string, { action: string }>;
      components: { messages: Record<string, { payload?: { properties?: Record<string, unknown> } }> };
    };
    const parser = new Parser();
    const diagnostics = await parser.validate(result.stdout);
    const errors = diagnostics.filter((d) => (d.severity as number) === 0); // DiagnosticSeverity.Error;
    expect(errors, JSON.stringify(errors, null, 2)).toEqual([]);
    const { document: parsed } = await parser.parse(result.stdout);
    expect(parsed).toBeDefined();
    expect(
      parsed!
        .channels()
        .all()
        .map((c) => c.address())
        .sort(),
    ).toEqual(['orders', 'payments']);
    expect(
      parsed!
        .messages()
        .all()
        .map((m) => m.name())
        .sort(),
    ).toEqual(['OrderCancelled', 'OrderPlaced', 'PaymentReceived', 'RefundIssued']);
    expect(
      parsed!
        .operations()
        .filterBySend()
        .map((o) => o.id())
        .sort(),
    ).toEqual(['orders.send.orders', 'orders.send.payments']);
    expect(
      parsed!
        .operations()
        .filterByReceive()
        .map((o) => o.id())
        .sort(),
    ).toEqual([
      'audit.receive.payments',
      'email.receive.orders',
      'ledger.receive.payments',
      'warehouse.receive.orders',
    ]);

    expect(document.asyncapi).toBe('3.0.0');
    expect(document.info).toEqual({ title: 'Shop', version: '2.1.0' });
    expect(Object.keys(document.channels['orders']!.messages).sort()).toEqual([
      'OrderCancelled',
      'OrderPlaced',
    ]);
    expect(document.components.messages['OrderPlaced']!.payload?.properties).toMatchObject({
      orderId: { type: 'string' },
      total: { type: 'number' },
    });
  });

  it('fails in one line when no topology was recorded', async () => {
    const result = await tidings(['asyncapi']);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^error: no topology recorded in /);
  });
});

describe('tidings serve --metrics', () => {
  it('serves lag, offsets, parked keys and dead letters in the Prometheus text format', async () => {
    await shop();
    const deps: CliDeps = {
      stdout: { write: () => true },
      stderr: { write: () => true },
      stdin: Object.assign(Readable.from([]), { isTTY: true }),
      env: {},
      cwd: '/tmp',
      signal: new AbortController().signal,
      open: () => Promise.resolve(transport),
      version: '0.0.0-test',
    };
    const app = await buildServeApp({
      deps,
      common: { dataDir: '/tmp/tidings-metrics', json: false, open: { dataDir: '/tmp/tidings-metrics' } },
      metrics: true,
    });
    try {
      const address = await app.listen({ port: 0, host: '127.0.0.1' });
      const response = await fetch(`${address}/metrics`);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      const text = await response.text();
      expect(text).toContain('# TYPE tidings_consumer_lag gauge');
      expect(text).toMatch(/^tidings_consumer_lag\{group="email",topic="orders",partition="\d+"\} 0$/m);
      expect(text).toMatch(/^tidings_parked_keys\{group="warehouse"\} 1$/m);
      expect(text).toMatch(/^tidings_parked_events\{group="warehouse"\} 1$/m);
      expect(text).toMatch(/^tidings_dead_letters\{group="audit",topic="payments"\} 1$/m);
      expect(text).toMatch(/^tidings_topic_records\{topic="orders"\} 2$/m);
      const committed = [
        ...text.matchAll(/^tidings_group_committed_offset\{group="email",topic="orders",[^}]*\} (\d+)$/gm),
      ];
      expect(committed.reduce((n, m) => n + Number(m[1]), 0)).toBe(2);
      expect(text).not.toContain('topic="__topology"');
    } finally {
      await app.close();
    }
  });
});
