import { describe, expect, it } from 'vitest';
import { crc32c } from '../src/log/crc32c.js';
import {
  CorruptBatchError,
  batchHeaderBytes,
  batchTimestamps,
  decodeRecordBatch,
  encodeRecordBatch,
  readBatchHeader,
  setBaseOffset,
  type EncodableRecord,
} from '../src/log/record-batch.js';

const utf8 = (text: string) => new TextEncoder().encode(text);

describe('CRC-32C', () => {
  it('matches the published check values', () => {
    expect(crc32c(utf8('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(0))).toBe(0);
    // RFC 3720 (iSCSI) appendix B.4 vectors.
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i))).toBe(0x113fdb5c);
  });

  it('gives the same result over any split and any alignment (slicing-by-8 against the bytewise loop)', () => {
    const data = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7919 + 13) & 0xff);
    const whole = crc32c(data);
    for (const split of [0, 1, 7, 8, 9, 500, 999, 1000]) {
      expect(crc32c(data, split, data.length, crc32c(data, 0, split))).toBe(whole);
    }
    const shifted = new Uint8Array(1003);
    shifted.set(data, 3);
    expect(crc32c(shifted, 3, 1003)).toBe(whole);
  });
});

describe('RecordBatch v2', () => {
  const records: EncodableRecord[] = [
    {
      key: 'order-1',
      headers: { 'ce-type': 'OrderPlaced', 'ce-id': 'a1' },
      value: utf8('{"total":10}'),
      timestamp: 1_700_000_000_000,
    },
    { key: '', headers: {}, value: new Uint8Array(0), timestamp: 1_700_000_000_005 },
    { key: 'ключ-🔑', headers: { 'x-ünïcode': 'värde ✓' }, value: utf8('v'), timestamp: 1_699_999_999_000 },
  ];

  it('round-trips records, offsets, timestamps (also out of order) and headers', () => {
    const batch = encodeRecordBatch(records, 41);
    const { header, records: decoded } = decodeRecordBatch(batch);
    expect(header).toEqual({
      baseOffset: 41,
      lastOffsetDelta: 2,
      baseTimestamp: 1_700_000_000_000,
      maxTimestamp: 1_700_000_000_005,
      recordCount: 3,
    });
    expect(decoded.map((r) => ({ ...r, value: new TextDecoder().decode(r.value) }))).toEqual([
      {
        offset: 41,
        timestamp: 1_700_000_000_000,
        key: 'order-1',
        headers: records[0]!.headers,
        value: '{"total":10}',
      },
      { offset: 42, timestamp: 1_700_000_000_005, key: '', headers: {}, value: '' },
      {
        offset: 43,
        timestamp: 1_699_999_999_000,
        key: 'ключ-🔑',
        headers: { 'x-ünïcode': 'värde ✓' },
        value: 'v',
      },
    ]);
    expect(batchTimestamps(batch)).toEqual(records.map((r) => r.timestamp));
  });

  it('lays the header out as Kafka does: magic 2, producer fields -1, CRC over attributes..end', () => {
    const batch = encodeRecordBatch(records, 7);
    expect(batch.readBigInt64BE(0)).toBe(7n);
    expect(batch.readInt32BE(8)).toBe(batch.length - 12);
    expect(batch.readInt32BE(12)).toBe(0); // partitionLeaderEpoch
    expect(batch.readInt8(16)).toBe(2); // magic
    expect(batch.readUInt32BE(17)).toBe(crc32c(batch, 21, batch.length));
    expect(batch.readInt16BE(21)).toBe(0); // attributes
    expect(batch.readInt32BE(23)).toBe(2); // lastOffsetDelta
    expect(batch.readBigInt64BE(43)).toBe(-1n); // producerId
    expect(batch.readInt16BE(51)).toBe(-1); // producerEpoch
    expect(batch.readInt32BE(53)).toBe(-1); // baseSequence
    expect(batch.readInt32BE(57)).toBe(3); // record count
    // First record: length varint, attributes 0, timestampDelta 0, offsetDelta 0, keyLength 7 (zigzag 14).
    expect([...batch.subarray(batchHeaderBytes + 1, batchHeaderBytes + 5)]).toEqual([0, 0, 0, 14]);
  });

  it('patches the base offset outside the checksum', () => {
    const batch = encodeRecordBatch(records, 0);
    setBaseOffset(batch, 2 ** 40 + 5);
    expect(readBatchHeader(batch).baseOffset).toBe(2 ** 40 + 5);
    expect(decodeRecordBatch(batch).records.map((r) => r.offset)).toEqual([
      2 ** 40 + 5,
      2 ** 40 + 6,
      2 ** 40 + 7,
    ]);
  });

  it('decodes from an offset with a limit, copying values out of the batch', () => {
    const many = Array.from({ length: 300 }, (_, i) => ({
      key: `k${i}`,
      headers: { n: String(i) },
      value: utf8('x'.repeat(i)), // lengths cross the 1- and 2-byte varint boundaries
      timestamp: 5_000 + i * 1_000_000,
    }));
    const batch = encodeRecordBatch(many, 1000);
    const { records: page } = decodeRecordBatch(batch, 1150, 20);
    expect(page.map((r) => r.offset)).toEqual(Array.from({ length: 20 }, (_, i) => 1150 + i));
    expect(page[0]!.value.byteLength).toBe(150);
    expect(page[0]!.headers).toEqual({ n: '150' });
    expect(page[0]!.value.buffer).not.toBe(batch.buffer);
    batch.fill(0, batchHeaderBytes);
    expect(new TextDecoder().decode(page[0]!.value)).toBe('x'.repeat(150));
  });

  it('refuses a batch with a flipped byte, a wrong length, a wrong magic or compression', () => {
    const batch = encodeRecordBatch(records, 0);
    for (const position of [21, 40, batchHeaderBytes + 3, batch.length - 1]) {
      const copy = Buffer.from(batch);
      copy[position] = copy[position]! ^ 0x01;
      expect(() => decodeRecordBatch(copy)).toThrow(/CRC-32C mismatch/);
    }
    expect(() => decodeRecordBatch(batch.subarray(0, batch.length - 1))).toThrow(CorruptBatchError);
    expect(() => decodeRecordBatch(batch.subarray(0, 20))).toThrow(/shorter than/);
    const badMagic = Buffer.from(batch);
    badMagic[16] = 1;
    expect(() => decodeRecordBatch(badMagic)).toThrow(/magic byte is 1/);
    const compressed = Buffer.from(batch);
    compressed.writeInt16BE(1, 21); // gzip
    compressed.writeUInt32BE(crc32c(compressed, 21, compressed.length), 17);
    expect(() => decodeRecordBatch(compressed)).toThrow(/compressed/);
  });

  it('refuses records whose lengths disagree with their contents even under a valid checksum', () => {
    const batch = encodeRecordBatch([records[0]!], 0);
    const broken = Buffer.from(batch);
    broken[batchHeaderBytes] = broken[batchHeaderBytes]! + 2; // the record's length varint, now 1 byte too long
    broken.writeUInt32BE(crc32c(broken, 21, broken.length), 17);
    expect(() => decodeRecordBatch(broken)).toThrow(CorruptBatchError);
  });
});
