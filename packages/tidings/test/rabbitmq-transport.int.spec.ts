// The RabbitMQ transport on the real broker (TIDINGS_RABBITMQ_URL, default 127.0.0.1:5672): what the conformance
// suite does not pin down: option checks, the mapping onto AMQP (native headers a plain AMQP consumer can read),
// prefetch, fencing of a member that lost its partition, delivery counts, offset resets and clear errors.
import { connect, type ConsumeMessage } from 'amqplib';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ErrorCode,
  isTidingsError,
  partitionForKey,
  type Delivery,
  type Subscription,
  type Transport,
} from 'tidings';
import { createRabbitMqTransport } from 'tidings/rabbitmq';
import { waitUntil } from 'tidings/testing';
import { Connector } from '../src/rabbitmq/connection.js';
import { Names } from '../src/rabbitmq/names.js';
import { resolveOptions } from '../src/rabbitmq/options.js';
import { settleQueue } from '../src/rabbitmq/streams.js';
import {
  brokerMissing,
  brokerUrl,
  namePrefix,
  finishRun,
  registerRun,
  testOptions,
} from './conformance/children/rabbitmq.js';

const missing = await brokerMissing();
const bytes = (text: string) => new TextEncoder().encode(text);
const text = (value: Uint8Array) => new TextDecoder().decode(value);
const unique = (label: string) => `${label}_${randomBytes(4).toString('hex')}`;

describe('rabbitmq transport: options', () => {
  it('rejects unknown and out-of-range options with INVALID_CONFIG, naming the option', () => {
    const bad: Array<[Record<string, unknown>, string]> = [
      [{ url: brokerUrl, partitions: 4 }, "unknown option 'partitions'"],
      [{ url: 'http://127.0.0.1:5672' }, 'amqp:// or amqps:// URL'],
      [{ url: brokerUrl, defaultPartitions: 0 }, 'defaultPartitions'],
      [{ url: brokerUrl, maxRecordBytes: 512 * 1024 * 1024 }, 'maxRecordBytes'],
      [{ url: brokerUrl, heartbeatMs: 1_000, memberLeaseMs: 1_500 }, 'at least twice heartbeatMs'],
      [{ url: brokerUrl, namePrefix: 'has.dots' }, 'namePrefix'],
    ];
    for (const [options, words] of bad) {
      let caught: unknown;
      try {
        createRabbitMqTransport(options as never);
      } catch (error) {
        caught = error;
      }
      expect(isTidingsError(caught, ErrorCode.INVALID_CONFIG), JSON.stringify(options)).toBe(true);
      expect((caught as Error).message).toContain(words);
    }
  });

  it('never shows the password: the url it reports has it masked', async () => {
    const transport = createRabbitMqTransport({ url: 'amqp://user:secret@127.0.0.1:1/vh' });
    expect(transport.url).toBe('amqp://user:***@127.0.0.1:1/vh');
    await transport.close();
  });

  it('rejects publish and admin calls with TRANSPORT_UNAVAILABLE naming the URL while the broker is unreachable', async () => {
    const transport = createRabbitMqTransport({
      url: 'amqp://guest:guest@127.0.0.1:1',
      connectTimeoutMs: 2_000,
    });
    for (const call of [
      () => transport.publish('t', [{ key: 'k', headers: {}, value: bytes('v') }]),
      () => transport.admin.listTopics(),
      () => transport.connect(),
    ]) {
      const error: unknown = await call().then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(isTidingsError(error, ErrorCode.TRANSPORT_UNAVAILABLE), String(error)).toBe(true);
      expect((error as Error).message).toContain('amqp://guest:***@127.0.0.1:1');
    }
    await transport.close();
  });
});

describe.skipIf(missing !== undefined)(
  `rabbitmq transport on the broker${missing ? ` — skipped: ${missing}` : ''}`,
  () => {
    const opened: Array<Transport | Subscription> = [];
    const open = () => {
      const transport = createRabbitMqTransport({ url: brokerUrl, ...testOptions });
      opened.push(transport);
      return transport;
    };
    const subscribe = (transport: Transport, options: Parameters<Transport['subscribe']>[0]) => {
      const subscription = transport.subscribe(options);
      opened.push(subscription);
      return subscription;
    };
    beforeAll(() => registerRun(brokerUrl, namePrefix), 120_000);
    afterAll(async () => {
      for (const item of opened.reverse()) await item.close();
      await finishRun(brokerUrl, namePrefix);
    }, 120_000);

    /** Iterates in the background, recording deliveries; `settle` decides what to do with each. */
    function collect(subscription: Subscription, settle: (delivery: Delivery) => void = (d) => d.ack()) {
      const received: Delivery[] = [];
      void (async () => {
        for await (const delivery of subscription) {
          received.push(delivery);
          settle(delivery);
        }
      })().catch(() => undefined);
      return received;
    }

    it('acks every record in input order with dense offsets per partition; createTopic conflicts on another count', async () => {
      const transport = open();
      const topic = unique('dense');
      await transport.admin.createTopic(topic, { partitions: 3 });
      await transport.admin.createTopic(topic, { partitions: 3 }); // same count: fine
      const conflict: unknown = await transport.admin
        .createTopic(topic, { partitions: 5 })
        .catch((e: unknown) => e);
      expect(isTidingsError(conflict, ErrorCode.CONFLICT), String(conflict)).toBe(true);
      const records = Array.from({ length: 30 }, (_, i) => ({
        key: `k${i % 7}`,
        headers: {},
        value: bytes(`v${i}`),
      }));
      const acks = await transport.publish(topic, records);
      const next = new Map<number, number>();
      acks.forEach((ack, i) => {
        expect(ack.partition).toBe(partitionForKey(records[i]!.key, 3));
        expect(ack.offset).toBe(next.get(ack.partition) ?? 0);
        next.set(ack.partition, ack.offset + 1);
      });
      const description = await transport.admin.describeTopic(topic);
      for (const { partition, lowOffset, highOffset } of description.partitionOffsets) {
        expect({ partition, lowOffset, highOffset }).toEqual({
          partition,
          lowOffset: 0,
          highOffset: next.get(partition) ?? 0,
        });
      }
      expect(await transport.admin.listTopics()).toContain(topic);
      const unknown: unknown = await transport.admin.describeTopic(unique('nope')).catch((e: unknown) => e);
      expect(isTidingsError(unknown, ErrorCode.NOT_FOUND)).toBe(true);
    });

    it('refuses reserved header names and oversize records before writing anything', async () => {
      const transport = createRabbitMqTransport({ url: brokerUrl, ...testOptions, maxRecordBytes: 1_000 });
      opened.push(transport);
      const topic = unique('refuse');
      await transport.admin.createTopic(topic, { partitions: 1 });
      const reserved: unknown = await transport
        .publish(topic, [{ key: 'k', headers: { 'x-tidings-key': 'forged' }, value: bytes('v') }])
        .catch((e: unknown) => e);
      expect(isTidingsError(reserved, ErrorCode.VALIDATION_FAILED), String(reserved)).toBe(true);
      const big: unknown = await transport
        .publish(topic, [
          { key: 'small', headers: {}, value: bytes('fits') },
          { key: 'big', headers: {}, value: new Uint8Array(1_000) },
        ])
        .catch((e: unknown) => e);
      expect(isTidingsError(big, ErrorCode.EVENT_TOO_LARGE), String(big)).toBe(true);
      expect((big as Error).message).toContain('1000');
      expect((await transport.admin.describeTopic(topic)).partitionOffsets[0]!.highOffset).toBe(0);
    });

    it('publishes CloudEvents attributes as native AMQP headers and properties a plain AMQP consumer reads', async () => {
      const transport = open();
      const topic = unique('native');
      await transport.admin.createTopic(topic, { partitions: 1 });
      const headers = {
        'ce-id': 'evt-1',
        'ce-type': 'OrderPlaced',
        'ce-source': 'tidings://shop',
        'ce-specversion': '1.0',
        'ce-datacontenttype': 'application/json',
        'ce-traceparent': '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      };
      const [ack] = await transport.publish(topic, [
        { key: 'order-1', headers, value: bytes('{"total":3}'), timestamp: 1_700_000_000_123 },
      ]);
      const connection = await connect(brokerUrl);
      try {
        const channel = await connection.createChannel();
        await channel.prefetch(10);
        const message = await new Promise<ConsumeMessage>((resolve) => {
          void channel.consume(
            new Names(namePrefix).partitionStream(topic, 0),
            (m) => {
              if (m) resolve(m);
            },
            { arguments: { 'x-stream-offset': ack!.offset } },
          );
        });
        const table = message.properties.headers as Record<string, unknown>;
        for (const [name, value] of Object.entries(headers)) expect(String(table[name]), name).toBe(value);
        expect(String(table['x-tidings-key'])).toBe('order-1');
        expect(message.properties.messageId).toBe('evt-1');
        expect(message.properties.type).toBe('OrderPlaced');
        expect(message.properties.contentType).toBe('application/json');
        expect(message.properties.timestamp).toBe(1_700_000_000);
        expect(message.content.toString()).toBe('{"total":3}');
      } finally {
        await connection.close();
      }
      const [stored] = await transport.admin.read(topic, 0, ack!.offset, 1);
      expect(stored!.headers).toEqual(headers);
      expect(stored!.timestamp).toBe(1_700_000_000_123);
    });

    it('holds at most prefetch un-acked deliveries; acking frees a slot', async () => {
      const transport = open();
      const topic = unique('prefetch');
      await transport.admin.createTopic(topic, { partitions: 2 });
      const sub = subscribe(transport, {
        group: unique('g'),
        topics: [topic],
        startFrom: 'earliest',
        prefetch: 3,
      });
      const received = collect(sub, () => undefined);
      await transport.publish(
        topic,
        Array.from({ length: 10 }, (_, i) => ({ key: `k${i}`, headers: {}, value: bytes(`${i}`) })),
      );
      await waitUntil(() => received.length === 3, { timeoutMs: 20_000 });
      await new Promise((resolve) => setTimeout(resolve, 300)); // nothing more may come: a bound, not a wait
      expect(received).toHaveLength(3);
      received[0]!.ack();
      await waitUntil(() => received.length === 4, { timeoutMs: 20_000 });
    });

    it('redelivers what a member held when it closed, with deliveryCount 2, to the next member', async () => {
      const transport = open();
      const topic = unique('count');
      const group = unique('g');
      await transport.admin.createTopic(topic, { partitions: 1 });
      await transport.publish(
        topic,
        [0, 1, 2].map((i) => ({ key: 'k', headers: {}, value: bytes(`${i}`) })),
      );
      const first = subscribe(transport, { group, topics: [topic], startFrom: 'earliest' });
      const held = collect(first, (d) => {
        if (text(d.value) === '0') d.ack();
      });
      await waitUntil(() => held.length === 3, { timeoutMs: 20_000 });
      await first.close();
      const second = subscribe(open(), { group, topics: [topic], startFrom: 'earliest' });
      const again = collect(second);
      await waitUntil(() => again.length === 2, { timeoutMs: 20_000 });
      expect(again.map((d) => [text(d.value), d.deliveryCount])).toEqual([
        ['1', 2],
        ['2', 2],
      ]);
    });

    it('hands a partition over after rebalanceTimeoutMs when its owner never settles, and fences the old owner', async () => {
      const options = { url: brokerUrl, ...testOptions, rebalanceTimeoutMs: 500 };
      const a = createRabbitMqTransport(options);
      const b = createRabbitMqTransport(options);
      opened.push(a, b);
      const topic = unique('fence');
      const group = unique('g');
      await a.admin.createTopic(topic, { partitions: 2 });
      // Keys of partition 1: the partition the second member is assigned once it joins.
      const keys = Array.from({ length: 50 }, (_, i) => `key-${i}`).filter(
        (key) => partitionForKey(key, 2) === 1,
      );
      const subA = subscribe(a, { group, topics: [topic], startFrom: 'earliest' });
      const heldByA = collect(subA, () => undefined); // A never settles
      await a.publish(
        topic,
        [0, 1].map((i) => ({ key: keys[0]!, headers: {}, value: bytes(`${i}`) })),
      );
      await waitUntil(() => heldByA.length === 2, { timeoutMs: 20_000 });
      const subB = subscribe(b, { group, topics: [topic], startFrom: 'earliest' });
      const gotByB = collect(subB);
      await waitUntil(() => gotByB.length === 2, { timeoutMs: 20_000 });
      expect(gotByB.map((d) => [text(d.value), d.deliveryCount])).toEqual([
        ['0', 2],
        ['1', 2],
      ]);
      expect(subB.assignments()).toEqual([{ topic, partition: 1 }]);
      for (const delivery of heldByA) delivery.ack(); // too late: fenced, ignored
      await waitUntil(
        async () => (await a.admin.describeGroup(group)).lag.find((l) => l.partition === 1)?.lag === 0,
        { timeoutMs: 20_000 },
      );
      await a.publish(topic, [{ key: keys[0]!, headers: {}, value: bytes('2') }]);
      await waitUntil(() => gotByB.length === 3, { timeoutMs: 20_000 });
      expect(heldByA).toHaveLength(2); // A gets nothing of partition 1 any more
    });

    it('members of a new group joining at the same moment keep the connection: none publishes before the group stream has a leader', async () => {
      // RabbitMQ answers the declare of a stream another client is still creating before the stream has a leader;
      // a publish in that window made the broker close the whole connection (a "channel closed" in every user of it).
      const transports = Array.from({ length: 4 }, () => open());
      const topic = unique('join');
      await transports[0]!.admin.createTopic(topic, { partitions: 4 });
      await Promise.all(transports.map((transport) => transport.admin.listTopics())); // connected, registry read
      const epochOf = (transport: Transport) =>
        (transport as unknown as { connector: { epoch: number } }).connector.epoch;
      for (let round = 0; round < 20; round++) {
        const group = unique('g');
        const members = transports.map((transport) =>
          subscribe(transport, { group, topics: [topic], startFrom: 'latest' }),
        );
        await waitUntil(() => members.every((member) => member.assignments().length === 1), {
          timeoutMs: 20_000,
        });
        await Promise.all(members.map((member) => member.close()));
      }
      expect(transports.map(epochOf)).toEqual([0, 0, 0, 0]);
    });

    it('a queue the broker refuses to probe (here: missing) fails at once, not retryable, naming the queue; the probe connection closes with the transport', async () => {
      const connector = new Connector(resolveOptions({ url: brokerUrl, ...testOptions }));
      const queue = `${namePrefix}.missing-${randomBytes(4).toString('hex')}`;
      let caught: unknown;
      try {
        await settleQueue(connector, queue, 'quorum');
      } catch (error) {
        caught = error;
      }
      expect(isTidingsError(caught, ErrorCode.TRANSPORT_UNAVAILABLE), String(caught)).toBe(true);
      expect((caught as { retryable: boolean }).retryable).toBe(false);
      expect((caught as Error).message).toContain(queue);
      expect((caught as Error).message).toContain('refused its first use');
      await connector.close();
      const again: unknown = await settleQueue(connector, queue, 'quorum').catch((error: unknown) => error);
      expect(isTidingsError(again, ErrorCode.CLOSED), String(again)).toBe(true);
    });

    it('refuses resetOffsets with CONFLICT while a member is live, and resets once none is', async () => {
      const transport = open();
      const topic = unique('reset');
      const group = unique('g');
      await transport.admin.createTopic(topic, { partitions: 2 });
      await transport.publish(
        topic,
        Array.from({ length: 6 }, (_, i) => ({ key: `k${i}`, headers: {}, value: bytes(`${i}`) })),
      );
      const sub = subscribe(transport, { group, topics: [topic], startFrom: 'earliest' });
      const received = collect(sub);
      await waitUntil(() => received.length === 6, { timeoutMs: 20_000 });
      const conflict: unknown = await transport.admin
        .resetOffsets(group, topic, 'earliest')
        .catch((e: unknown) => e);
      expect(isTidingsError(conflict, ErrorCode.CONFLICT), String(conflict)).toBe(true);
      await waitUntil(
        async () => (await transport.admin.describeGroup(group)).lag.reduce((sum, l) => sum + l.lag, 0) === 0,
        { timeoutMs: 20_000 },
      );
      await sub.close();
      const other = open(); // another process: the member's announcements must say it left
      await other.admin.resetOffsets(group, topic, 'earliest');
      const lag = (await other.admin.describeGroup(group)).lag;
      expect(lag.reduce((sum, l) => sum + l.lag, 0)).toBe(6);
      expect((await other.admin.describeGroup(group)).members).toEqual([]);
      expect(await other.admin.listGroups()).toContain(group);
    });
  },
);
