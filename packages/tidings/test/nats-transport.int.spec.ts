// The NATS JetStream transport against the shared nats-server (TIDINGS_NATS_URL, default nats://127.0.0.1:4222):
// topics as streams, publish, headers, limits, admin reads. Every stream of the run carries a prefix of its own and is
// removed afterwards. Group semantics are in nats-groups.int.spec.ts, broker faults in nats-faults.e2e.spec.ts.
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ErrorCode, isTidingsError, partitionForKey, type OutgoingRecord, type TidingsError } from 'tidings';
import { createNatsTransport, type NatsTransport, type NatsTransportOptions } from 'tidings/nats';
import {
  brokerMissing,
  removePrefix,
  serverUrl,
  testOptions,
  uniquePrefix,
} from './conformance/children/nats.js';

const missing = await brokerMissing();
const prefix = uniquePrefix('tr');
const encoder = new TextEncoder();
const decoder = new TextDecoder();

const transports: NatsTransport[] = [];
function nats(options: NatsTransportOptions = {}): NatsTransport {
  const transport = createNatsTransport({ servers: serverUrl, prefix, ...testOptions, ...options });
  transports.push(transport);
  return transport;
}

function rec(key: string, value: string, extra: Partial<OutgoingRecord> = {}): OutgoingRecord {
  return { key, headers: {}, value: encoder.encode(value), ...extra };
}

async function expectTidingsError(promise: Promise<unknown>, code: ErrorCode): Promise<TidingsError> {
  const error: unknown = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(isTidingsError(error, code), `expected TidingsError ${code}, got ${String(error)}`).toBe(true);
  return error as TidingsError;
}

afterEach(async () => {
  await Promise.all(transports.splice(0).map((transport) => transport.close()));
});

describe.skipIf(missing !== undefined)(
  `nats transport: topics and publish${missing ? ` — skipped: ${missing}` : ''}`,
  () => {
    afterAll(() => removePrefix(prefix), 30_000);

    it('maps each partition to its own stream: offsets are dense per partition and keys keep their order', async () => {
      const transport = nats();
      await transport.admin.createTopic('orders', { partitions: 3 });
      const records = Array.from({ length: 30 }, (_, i) => rec(`key-${i % 5}`, `${i}`));
      const acks = await transport.publish('orders', records);
      expect(acks).toHaveLength(30);
      acks.forEach((ack, i) => expect(ack.partition).toBe(partitionForKey(`key-${i % 5}`, 3)));
      for (let partition = 0; partition < 3; partition++) {
        const offsets = acks.filter((ack) => ack.partition === partition).map((ack) => ack.offset);
        expect(offsets).toEqual(offsets.map((_, i) => i));
      }
      const description = await transport.admin.describeTopic('orders');
      expect(description.partitions).toBe(3);
      expect(description.partitionOffsets.map((p) => p.highOffset).reduce((a, b) => a + b, 0)).toBe(30);
      const nc = await connect({ servers: serverUrl });
      try {
        const jsm = await jetstreamManager(nc);
        const info = await jsm.streams.info(`${prefix}_orders_0`);
        expect(info.config.subjects).toEqual([`${prefix}.orders.0`]);
        expect(info.state.last_seq).toBe(description.partitionOffsets[0]!.highOffset);
      } finally {
        await nc.close();
      }
      for (let k = 0; k < 5; k++) {
        const stored = await transport.admin.read('orders', partitionForKey(`key-${k}`, 3), 0, 100);
        const values = stored.filter((r) => r.key === `key-${k}`).map((r) => Number(decoder.decode(r.value)));
        expect(values).toEqual([0, 1, 2, 3, 4, 5].map((i) => i * 5 + k));
      }
    });

    it('creates topics on first publish, conflicts on another partition count, lists and describes them', async () => {
      const transport = nats({ defaultPartitions: 2 });
      await transport.publish('auto', [rec('a', '1')]);
      expect((await transport.admin.describeTopic('auto')).partitions).toBe(2);
      await transport.admin.createTopic('explicit.name/with spaces', { partitions: 5, retentionMs: 60_000 });
      await transport.admin.createTopic('explicit.name/with spaces', { partitions: 5 });
      const conflict = await expectTidingsError(
        transport.admin.createTopic('explicit.name/with spaces', { partitions: 2 }),
        ErrorCode.CONFLICT,
      );
      expect(conflict.message).toContain('5 partitions');
      const described = await transport.admin.describeTopic('explicit.name/with spaces');
      expect(described).toMatchObject({
        name: 'explicit.name/with spaces',
        partitions: 5,
        retentionMs: 60_000,
      });
      expect(await transport.admin.listTopics()).toEqual(
        expect.arrayContaining(['auto', 'explicit.name/with spaces']),
      );
      // Another client sees the same topics (they live on the server).
      const other = nats();
      expect((await other.admin.describeTopic('auto')).partitions).toBe(2);
      await expectTidingsError(other.admin.describeTopic('missing'), ErrorCode.NOT_FOUND);
      await expectTidingsError(other.admin.read('auto', 7, 0, 1), ErrorCode.NOT_FOUND);
      await expectTidingsError(other.admin.createTopic('bad', { partitions: 0 }), ErrorCode.INVALID_CONFIG);
    });

    it('carries headers natively (ce-* readable by any NATS client) and escapes what NATS cannot carry exactly', async () => {
      const transport = nats();
      await transport.admin.createTopic('headers', { partitions: 1 });
      const headers = {
        'ce-type': 'OrderPlaced',
        'ce-id': 'evt-1',
        'content-type': 'application/json',
        'x-spaces': '  padded  ',
        'x-lines': 'one\r\ntwo',
        'x-ünicode-name': 'grüße',
        'Nats-Msg-Id': 'not-a-dedupe-id',
        'tidings-key': 'not-the-key',
        'with:colon': 'v',
        'x-empty': '',
        ['__proto__']: 'an own header, not a prototype',
      };
      const key = ' key with\nnewline ';
      const [ack] = await transport.publish('headers', [rec(key, 'payload', { headers, timestamp: 1_234 })]);
      const [stored] = await transport.admin.read('headers', 0, ack!.offset, 1);
      expect(stored!.key).toBe(key);
      expect(stored!.headers).toEqual(headers);
      expect(Object.keys(stored!.headers).sort()).toEqual(Object.keys(headers).sort());
      expect(stored!.timestamp).toBe(1_234);

      const nc = await connect({ servers: serverUrl });
      try {
        const jsm = await jetstreamManager(nc);
        const message = await jsm.streams.getMessage(`${prefix}_headers_0`, { seq: ack!.offset + 1 });
        expect(message!.header.get('ce-type')).toBe('OrderPlaced');
        expect(message!.header.get('content-type')).toBe('application/json');
        expect(message!.header.get('Tidings-Time')).toBe('1234');
        expect(message!.header.get('Nats-Msg-Id')).toBe(''); // escaped: the server never saw a dedupe id
        expect(decoder.decode(message!.data)).toBe('payload');
      } finally {
        await nc.close();
      }
    });

    it('refuses an oversize record before writing anything, naming the limit', async () => {
      const transport = nats({ maxRecordBytes: 100 });
      await transport.admin.createTopic('limits', { partitions: 1 });
      expect(transport.features.maxRecordBytes).toBe(100);
      const fits = rec('k', 'x'.repeat(99));
      const tooBig = rec('k', 'x'.repeat(90), { headers: { h: 'y'.repeat(9) } });
      const error = await expectTidingsError(
        transport.publish('limits', [fits, tooBig]),
        ErrorCode.EVENT_TOO_LARGE,
      );
      expect(error.message).toContain('101 bytes');
      expect(error.message).toContain('100');
      expect((await transport.admin.describeTopic('limits')).partitionOffsets[0]!.highOffset).toBe(0);
      await expect(transport.publish('limits', [fits])).resolves.toEqual([
        { topic: 'limits', partition: 0, offset: 0 },
      ]);

      // Without a configured limit, the server's max_payload decides, headers included.
      const unlimited = nats();
      await unlimited.connect();
      const maxRecordBytes = unlimited.features.maxRecordBytes;
      const nc = await connect({ servers: serverUrl });
      const maxPayload = nc.info!.max_payload;
      await nc.close();
      expect(maxRecordBytes).toBe(maxPayload - 1024);
      const manyHeaders = Object.fromEntries(Array.from({ length: 400 }, (_, i) => [`h${i}`, 'v']));
      const headerBytes = Object.entries(manyHeaders).reduce((sum, [n, v]) => sum + n.length + v.length, 0);
      const framed = rec('k', 'x'.repeat(maxRecordBytes - headerBytes - 1), { headers: manyHeaders });
      const framing = await expectTidingsError(
        unlimited.publish('limits', [framed]),
        ErrorCode.EVENT_TOO_LARGE,
      );
      expect(framing.message).toContain('max_payload');
    });

    it('reads by offset and finds offsets by time', async () => {
      const transport = nats();
      await transport.admin.createTopic('timeline', { partitions: 1 });
      const acks = await transport.publish(
        'timeline',
        Array.from({ length: 10 }, (_, i) => rec('k', `${i}`, { timestamp: 10_000 + 100 * i })),
      );
      expect(acks.map((a) => a.offset)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      const page = await transport.admin.read('timeline', 0, 4, 3);
      expect(page.map((r) => [r.offset, decoder.decode(r.value), r.timestamp])).toEqual([
        [4, '4', 10_400],
        [5, '5', 10_500],
        [6, '6', 10_600],
      ]);
      expect(await transport.admin.read('timeline', 0, 8, 100)).toHaveLength(2);
      expect(await transport.admin.read('timeline', 0, 50, 10)).toEqual([]);
      expect(await transport.admin.offsetForTime('timeline', 0, 10_450)).toBe(5);
      expect(await transport.admin.offsetForTime('timeline', 0, 10_500)).toBe(5);
      expect(await transport.admin.offsetForTime('timeline', 0, 0)).toBe(0);
      expect(await transport.admin.offsetForTime('timeline', 0, 99_999)).toBe(10);
      await expectTidingsError(transport.admin.read('timeline', 0, 0, 0), ErrorCode.INVALID_CONFIG);
    });

    it('validates options and records, and is closed for good after close()', async () => {
      const invalid = (options: NatsTransportOptions) => {
        let error: unknown;
        try {
          createNatsTransport(options);
        } catch (caught) {
          error = caught;
        }
        expect(isTidingsError(error, ErrorCode.INVALID_CONFIG), JSON.stringify(options)).toBe(true);
      };
      invalid({ prefix: 'has_underscore' });
      invalid({ defaultPartitions: 0 });
      invalid({ leaseMs: 10 });
      invalid({ replicas: 2 });
      invalid({ servers: [] });
      invalid({ connection: { servers: 'nats://x' } } as unknown as NatsTransportOptions);
      invalid({ unknown: 1 } as unknown as NatsTransportOptions);
      const transport = nats();
      expect(transport.name).toBe('nats');
      expect(transport.features).toMatchObject({
        persistent: true,
        consumerGroups: true,
        perKeyOrder: true,
        replayByOffset: true,
        replayByTime: true,
        nativeDelay: true,
      });
      const bad = { key: 'k', headers: {}, value: 'not bytes' } as unknown as OutgoingRecord;
      await expectTidingsError(
        transport.publish('validated', [rec('k', 'ok'), bad]),
        ErrorCode.VALIDATION_FAILED,
      );
      await expectTidingsError(transport.admin.describeTopic('validated'), ErrorCode.NOT_FOUND);
      await transport.close();
      await expectTidingsError(transport.publish('validated', [rec('k', 'v')]), ErrorCode.CLOSED);
      await expectTidingsError(transport.admin.listTopics(), ErrorCode.CLOSED);
      expect(() => transport.subscribe({ group: 'g', topics: ['t'] })).toThrow(/closed/);
    });
  },
);
