/**
 * Input checks of the RabbitMQ transport: the shared transport checks under RabbitMQ's tighter limits, plus its
 * reserved header names and the frame-size bound on key plus headers.
 */
import { ErrorCode, TidingsError } from '../core/errors.js';
import {
  checkRecord as checkRecordShape,
  checkSubscribeOptions as checkAnySubscribeOptions,
  invalidRecord,
  recordTooLarge,
  type CheckedSubscribeOptions,
} from '../core/transport-checks.js';
import type { OutgoingRecord, SubscribeOptions } from '../core/transport.js';

export {
  checkInteger,
  checkName,
  checkNumber,
  checkStartPosition,
  describeValue,
  invalid,
  type CheckedSubscribeOptions,
} from '../core/transport-checks.js';

/** Bounds on everything a caller can size. */
export const limits = {
  partitions: 1_000,
  prefetch: 10_000,
  topicNameLength: 200,
  groupNameLength: 200,
  /** RabbitMQ's own ceiling on a message body (`max_message_size`, 128 MiB by default). */
  maxRecordBytes: 128 * 1024 * 1024,
  /** Headers travel in one AMQP content-header frame, which must fit in the negotiated frame size (128 KiB). */
  maxHeaderBytes: 64 * 1024,
} as const;

/** Header names the transport keeps for itself; a record may not carry them. */
export const reservedHeaderPrefixes = ['x-tidings-', 'x-stream-'] as const;

/** Checks and defaults the options of `subscribe` under RabbitMQ's name and prefetch limits. */
export function checkSubscribeOptions(options: SubscribeOptions): CheckedSubscribeOptions {
  return checkAnySubscribeOptions(options, limits);
}

/** Validates one outgoing record and returns its size in bytes (value + key + header names and values). */
export function checkRecord(
  topic: string,
  record: OutgoingRecord,
  index: number,
  maxRecordBytes: number,
): number {
  const bytes = checkRecordShape(topic, record, index);
  for (const name of Object.keys(record.headers)) {
    const lower = name.toLowerCase();
    if (reservedHeaderPrefixes.some((prefix) => lower.startsWith(prefix))) {
      throw invalidRecord(
        topic,
        index,
        `has header '${name}'; names starting with 'x-tidings-' or 'x-stream-' are reserved by the transport`,
      );
    }
  }
  const headerBytes = bytes - record.value.byteLength;
  if (bytes > maxRecordBytes) {
    throw recordTooLarge("the RabbitMQ transport's", topic, record.key, index, bytes, maxRecordBytes);
  }
  if (headerBytes > limits.maxHeaderBytes) throw headersTooLarge(topic, record.key, index, headerBytes);
  return bytes;
}

function headersTooLarge(topic: string, key: string, index: number, bytes: number): TidingsError {
  return new TidingsError(
    ErrorCode.EVENT_TOO_LARGE,
    `Record ${index} published to topic '${topic}' (key '${key}') has ${bytes} bytes of key plus headers, over the ` +
      `limit of ${limits.maxHeaderBytes} (they travel in one AMQP header frame); nothing was written. Move large ` +
      `values from headers into the event body.`,
    { topic, index, sizeBytes: bytes, maxRecordBytes: limits.maxHeaderBytes },
  );
}
