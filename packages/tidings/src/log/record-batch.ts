/**
 * Kafka's RecordBatch v2 (magic 2) layout, the on-disk form of the embedded log: one stored row holds one batch of
 * records of one topic partition, so a later Kafka-protocol front end could serve stored batches unchanged.
 *
 * ```
 * offset  field                 type     notes
 *      0  baseOffset            int64    outside the checksum: patched in when the batch is appended
 *      8  batchLength           int32    bytes after this field
 *     12  partitionLeaderEpoch  int32    0
 *     16  magic                 int8     2
 *     17  crc                   uint32   CRC-32C of bytes 21..end
 *     21  attributes            int16    0: no compression, create time, not transactional, not control
 *     23  lastOffsetDelta       int32    record count - 1 (offsets are dense)
 *     27  baseTimestamp         int64    timestamp of the first record
 *     35  maxTimestamp          int64    largest record timestamp
 *     43  producerId            int64    -1
 *     51  producerEpoch         int16    -1
 *     53  baseSequence          int32    -1
 *     57  records count         int32
 *     61  records: length varint, attributes int8, timestampDelta varlong, offsetDelta varint,
 *         keyLength varint, key, valueLength varint, value, header count varint,
 *         then per header: keyLength varint, key (UTF-8), valueLength varint, value (UTF-8)
 * ```
 * Every varint is zigzag-encoded (Kafka's `ByteUtils.writeVarint` / `writeVarlong`). Values that are JavaScript
 * numbers (offsets, timestamps) must stay within ±2^53.
 */
import { murmur2 } from '../core/partitioner.js';
import { crc32c } from './crc32c.js';

/** Size of the fixed batch header, before the first record. */
export const batchHeaderBytes = 61;
/** Where the checksummed part of a batch starts (the attributes field). */
const crcStart = 21;
const magicV2 = 2;
const twoPow32 = 4_294_967_296;

/** A record to encode: headers are UTF-8 strings, as the transport contract has them. */
export interface EncodableRecord {
  readonly key: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly value: Uint8Array;
  /** ms since the epoch. */
  readonly timestamp: number;
}

/** A decoded record, with its absolute offset. `value` and `headers` are its own, never shared with the batch. */
export interface DecodedRecord {
  readonly offset: number;
  readonly timestamp: number;
  readonly key: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly value: Uint8Array;
}

/** The fixed header of a batch. */
export interface BatchHeader {
  readonly baseOffset: number;
  readonly lastOffsetDelta: number;
  readonly baseTimestamp: number;
  readonly maxTimestamp: number;
  readonly recordCount: number;
}

/** A batch whose bytes do not decode: a failed checksum, a bad length, a wrong magic byte. */
export class CorruptBatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CorruptBatchError';
  }
}

const emptyHeaders: Readonly<Record<string, string>> = Object.freeze({});

/**
 * Encodes `records` (at least one) as one RecordBatch v2 with the given base offset. Offsets are dense:
 * record `i` gets `baseOffset + i`. The result is a `Buffer` of exactly the batch's size.
 */
export function encodeRecordBatch(records: readonly EncodableRecord[], baseOffset: number): Buffer {
  const prepared = records.map(
    (r) => prepareRecord(r.key, r.headers, r.value, r.timestamp, Number.POSITIVE_INFINITY) as PreparedRecord,
  );
  return encodePreparedBatch(prepared, 0, prepared.length, baseOffset);
}

/**
 * A record encoded ahead of its batch: everything of a Kafka record body that does not depend on the batch (key,
 * value, headers) in `tail`, so the batch is assembled later by prefixing each tail with its length, attributes,
 * timestamp delta and offset delta. Made when a record is published, outside the write transaction.
 */
export interface PreparedRecord {
  /** keyLength varint, key, valueLength varint, value, header count varint, headers. */
  readonly tail: Buffer;
  readonly timestamp: number;
  /** Kafka's murmur2 of the key's UTF-8 bytes, made positive: the partition is `hash % partitionCount`. */
  readonly hash: number;
  /** Value bytes plus the UTF-8 bytes of the key and of every header name and value. */
  readonly bytes: number;
}

/**
 * Encodes the batch-independent part of a record (see {@link PreparedRecord}). Returns the record's size in bytes
 * instead when it is larger than `maxRecordBytes`, without encoding anything.
 */
export function prepareRecord(
  key: string,
  headers: Readonly<Record<string, string>>,
  value: Uint8Array,
  timestamp: number,
  maxRecordBytes: number,
): PreparedRecord | number {
  const keyLength = Buffer.byteLength(key, 'utf8');
  const names = Object.keys(headers);
  const lengths = new Array<number>(names.length * 2);
  let bytes = keyLength + value.byteLength;
  let tailLength =
    varintSize(zigzag(keyLength)) +
    keyLength +
    varintSize(zigzag(value.byteLength)) +
    value.byteLength +
    varintSize(zigzag(names.length));
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    const nameLength = Buffer.byteLength(name, 'utf8');
    const valueLength = Buffer.byteLength(headers[name]!, 'utf8');
    lengths[2 * i] = nameLength;
    lengths[2 * i + 1] = valueLength;
    bytes += nameLength + valueLength;
    tailLength += varintSize(zigzag(nameLength)) + nameLength + varintSize(zigzag(valueLength)) + valueLength;
  }
  if (bytes > maxRecordBytes) return bytes;
  const tail = Buffer.allocUnsafe(tailLength);
  let pos = writeVarint(tail, 0, zigzag(keyLength));
  const keyStart = pos;
  if (keyLength > 0) pos += tail.write(key, pos, keyLength, 'utf8');
  const hash = murmur2(tail.subarray(keyStart, pos)) & 0x7fffffff;
  pos = writeVarint(tail, pos, zigzag(value.byteLength));
  tail.set(value, pos);
  pos += value.byteLength;
  pos = writeVarint(tail, pos, zigzag(names.length));
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    const nameLength = lengths[2 * i]!;
    const valueLength = lengths[2 * i + 1]!;
    pos = writeVarint(tail, pos, zigzag(nameLength));
    if (nameLength > 0) pos += tail.write(name, pos, nameLength, 'utf8');
    pos = writeVarint(tail, pos, zigzag(valueLength));
    if (valueLength > 0) pos += tail.write(headers[name]!, pos, valueLength, 'utf8');
  }
  return { tail, timestamp, hash, bytes };
}

/** Assembles `records[start, end)` (at least one) into one RecordBatch v2 with the given base offset. */
export function encodePreparedBatch(
  records: readonly PreparedRecord[],
  start: number,
  end: number,
  baseOffset: number,
): Buffer {
  const count = end - start;
  if (count <= 0) throw new RangeError('encodePreparedBatch needs at least one record');
  const baseTimestamp = records[start]!.timestamp;
  let maxTimestamp = baseTimestamp;
  let total = batchHeaderBytes;
  for (let i = start; i < end; i++) {
    const record = records[i]!;
    if (record.timestamp > maxTimestamp) maxTimestamp = record.timestamp;
    const body =
      1 +
      varintSize(zigzag(record.timestamp - baseTimestamp)) +
      varintSize(zigzag(i - start)) +
      record.tail.length;
    total += varintSize(zigzag(body)) + body;
  }
  const buf = Buffer.allocUnsafe(total);
  writeBatchHeader(buf, total, baseOffset, count, baseTimestamp, maxTimestamp);
  let pos = batchHeaderBytes;
  for (let i = start; i < end; i++) {
    const record = records[i]!;
    const timestampDelta = zigzag(record.timestamp - baseTimestamp);
    const offsetDelta = zigzag(i - start);
    const body = 1 + varintSize(timestampDelta) + varintSize(offsetDelta) + record.tail.length;
    pos = writeVarint(buf, pos, zigzag(body));
    buf[pos++] = 0; // record attributes
    pos = writeVarint(buf, pos, timestampDelta);
    pos = writeVarint(buf, pos, offsetDelta);
    record.tail.copy(buf, pos);
    pos += record.tail.length;
  }
  if (pos !== total) throw new Error(`encodePreparedBatch: wrote ${pos} bytes, expected ${total}`);
  buf.writeUInt32BE(crc32c(buf, crcStart, total), 17);
  return buf;
}

function writeBatchHeader(
  buf: Buffer,
  total: number,
  baseOffset: number,
  count: number,
  baseTimestamp: number,
  maxTimestamp: number,
): void {
  writeInt64(buf, 0, baseOffset);
  buf.writeInt32BE(total - 12, 8);
  buf.writeInt32BE(0, 12); // partitionLeaderEpoch
  buf[16] = magicV2;
  buf.writeInt16BE(0, 21); // attributes
  buf.writeInt32BE(count - 1, 23);
  writeInt64(buf, 27, baseTimestamp);
  writeInt64(buf, 35, maxTimestamp);
  writeInt64(buf, 43, -1); // producerId
  buf.writeInt16BE(-1, 51); // producerEpoch
  buf.writeInt32BE(-1, 53); // baseSequence
  buf.writeInt32BE(count, 57);
}

/** Overwrites the base offset of an encoded batch. The checksum does not cover it, so nothing else changes. */
export function setBaseOffset(batch: Uint8Array, baseOffset: number): void {
  writeInt64(asBuffer(batch), 0, baseOffset);
}

/**
 * Reads and checks the fixed header: length, magic byte, checksum over the whole batch, no compression.
 * Throws {@link CorruptBatchError} when any check fails.
 */
export function readBatchHeader(batch: Uint8Array): BatchHeader {
  const buf = asBuffer(batch);
  if (buf.length < batchHeaderBytes) {
    throw new CorruptBatchError(
      `batch is ${buf.length} bytes, shorter than the ${batchHeaderBytes}-byte header`,
    );
  }
  const batchLength = buf.readInt32BE(8);
  if (batchLength !== buf.length - 12) {
    throw new CorruptBatchError(
      `batchLength field says ${batchLength + 12} bytes but the batch is ${buf.length}`,
    );
  }
  const magic = buf.readInt8(16);
  if (magic !== magicV2) throw new CorruptBatchError(`magic byte is ${magic}, expected ${magicV2}`);
  const stored = buf.readUInt32BE(17);
  const computed = crc32c(buf, crcStart, buf.length);
  if (stored !== computed) {
    throw new CorruptBatchError(
      `CRC-32C mismatch: stored 0x${hex32(stored)}, computed 0x${hex32(computed)} over bytes ${crcStart}..${buf.length}`,
    );
  }
  const attributes = buf.readInt16BE(21);
  if ((attributes & 0x07) !== 0) {
    throw new CorruptBatchError(
      `batch is compressed (attributes 0x${attributes.toString(16)}), which is not supported`,
    );
  }
  const recordCount = buf.readInt32BE(57);
  const lastOffsetDelta = buf.readInt32BE(23);
  if (recordCount < 0 || recordCount > buf.length - batchHeaderBytes) {
    throw new CorruptBatchError(`record count ${recordCount} does not fit in ${buf.length} bytes`);
  }
  return {
    baseOffset: readInt64(buf, 0),
    lastOffsetDelta,
    baseTimestamp: readInt64(buf, 27),
    maxTimestamp: readInt64(buf, 35),
    recordCount,
  };
}

/**
 * Decodes the records of a batch whose offset is at least `fromOffset`, at most `limit` of them, after checking the
 * header and checksum (see {@link readBatchHeader}). Throws {@link CorruptBatchError} on any inconsistency.
 */
export function decodeRecordBatch(
  batch: Uint8Array,
  fromOffset = Number.NEGATIVE_INFINITY,
  limit = Number.POSITIVE_INFINITY,
): { header: BatchHeader; records: DecodedRecord[] } {
  const header = readBatchHeader(batch);
  const buf = asBuffer(batch);
  const records: DecodedRecord[] = [];
  const cursor = new Cursor(buf, batchHeaderBytes);
  const end = buf.length;
  for (let i = 0; i < header.recordCount; i++) {
    const length = cursor.varint();
    const recordEnd = cursor.pos + length;
    if (length < 0 || recordEnd > end) throw new CorruptBatchError(`record ${i} overruns the batch`);
    if (records.length >= limit) break;
    cursor.pos++; // attributes
    const timestampDelta = cursor.varint();
    const offsetDelta = cursor.varint();
    const offset = header.baseOffset + offsetDelta;
    if (offset < fromOffset) {
      cursor.pos = recordEnd;
      continue;
    }
    const keyLength = cursor.varint();
    const key = keyLength <= 0 ? '' : cursor.utf8(keyLength);
    const valueLength = cursor.varint();
    const value = new Uint8Array(Math.max(0, valueLength));
    if (valueLength > 0) {
      cursor.check(valueLength);
      value.set(buf.subarray(cursor.pos, cursor.pos + valueLength));
      cursor.pos += valueLength;
    }
    const headerCount = cursor.varint();
    let headers = emptyHeaders;
    if (headerCount > 0) {
      const decoded: Record<string, string> = {};
      for (let j = 0; j < headerCount; j++) {
        const nameLength = cursor.varint();
        const name = nameLength <= 0 ? '' : cursor.utf8(nameLength);
        const valueBytes = cursor.varint();
        const headerValue = valueBytes <= 0 ? '' : cursor.utf8(valueBytes);
        if (name === '__proto__') {
          Object.defineProperty(decoded, name, {
            value: headerValue,
            enumerable: true,
            writable: true,
            configurable: true,
          });
        } else {
          decoded[name] = headerValue;
        }
      }
      headers = decoded;
    }
    if (cursor.pos !== recordEnd) {
      throw new CorruptBatchError(
        `record ${i} is ${length} bytes by its length field but decodes differently`,
      );
    }
    records.push({ offset, timestamp: header.baseTimestamp + timestampDelta, key, headers, value });
  }
  return { header, records };
}

/** The timestamps of every record of a batch, in offset order, after checking it. */
export function batchTimestamps(batch: Uint8Array): number[] {
  const header = readBatchHeader(batch);
  const buf = asBuffer(batch);
  const cursor = new Cursor(buf, batchHeaderBytes);
  const timestamps: number[] = [];
  for (let i = 0; i < header.recordCount; i++) {
    const length = cursor.varint();
    const recordEnd = cursor.pos + length;
    if (length < 0 || recordEnd > buf.length) throw new CorruptBatchError(`record ${i} overruns the batch`);
    cursor.pos++;
    timestamps.push(header.baseTimestamp + cursor.varint());
    cursor.pos = recordEnd;
  }
  return timestamps;
}

// -----------------------------------------------------------------------------------------------------------------
// Varints and fixed-width integers

function zigzag(n: number): number {
  return n >= 0 ? n * 2 : -n * 2 - 1;
}

function unzigzag(n: number): number {
  return n % 2 === 0 ? n / 2 : -(n + 1) / 2;
}

/** Bytes of the unsigned varint `v` (0 <= v < 2^53). */
function varintSize(v: number): number {
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x200000) return 3;
  if (v < 0x10000000) return 4;
  let size = 4;
  v = Math.floor(v / 0x10000000);
  while (v > 0) {
    size++;
    v = Math.floor(v / 0x80);
  }
  return size;
}

function writeVarint(buf: Buffer, pos: number, v: number): number {
  if (v < 0x80000000) {
    while (v >= 0x80) {
      buf[pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    buf[pos++] = v;
    return pos;
  }
  while (v >= 0x80) {
    buf[pos++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  buf[pos++] = v;
  return pos;
}

function writeInt64(buf: Buffer, pos: number, n: number): void {
  const hi = Math.floor(n / twoPow32);
  buf.writeInt32BE(hi, pos);
  buf.writeUInt32BE(n - hi * twoPow32, pos + 4);
}

function readInt64(buf: Buffer, pos: number): number {
  return buf.readInt32BE(pos) * twoPow32 + buf.readUInt32BE(pos + 4);
}

function hex32(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** A read position in a batch; every read checks bounds and throws {@link CorruptBatchError} past the end. */
class Cursor {
  readonly buf: Buffer;
  pos: number;

  constructor(buf: Buffer, pos: number) {
    this.buf = buf;
    this.pos = pos;
  }

  check(bytes: number): void {
    if (this.pos + bytes > this.buf.length) {
      throw new CorruptBatchError(`a field at byte ${this.pos} overruns the batch`);
    }
  }

  /** A zigzag varint (up to 2^53 in magnitude). */
  varint(): number {
    const buf = this.buf;
    let result = 0;
    let multiplier = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= buf.length)
        throw new CorruptBatchError(`a varint at byte ${this.pos} overruns the batch`);
      const byte = buf[this.pos++]!;
      result += (byte & 0x7f) * multiplier;
      if ((byte & 0x80) === 0) return unzigzag(result);
      multiplier *= 0x80;
    }
    throw new CorruptBatchError(`a varint at byte ${this.pos} is longer than 10 bytes`);
  }

  utf8(length: number): string {
    this.check(length);
    const text = this.buf.toString('utf8', this.pos, this.pos + length);
    this.pos += length;
    return text;
  }
}
