/**
 * Checks of caller input (names, records, positions, subscribe options): the shared transport checks under the NATS
 * transport's limits. Each rejects with a `TidingsError` that names what was wrong and what to do.
 */
import {
  checkName as checkAnyName,
  checkRecord as checkRecordShape,
  checkSubscribeOptions as checkAnySubscribeOptions,
  type CheckedSubscribeOptions,
} from '../core/transport-checks.js';
import type { OutgoingRecord, SubscribeOptions } from '../core/transport.js';
import { natsLimits } from './options.js';

export { checkNumber, checkStartPosition, type CheckedSubscribeOptions } from '../core/transport-checks.js';

export function checkName(value: unknown, kind: 'topic' | 'group'): asserts value is string {
  checkAnyName(value, kind, kind === 'topic' ? natsLimits.topicNameLength : natsLimits.groupNameLength);
}

export function checkSubscribeOptions(options: SubscribeOptions): CheckedSubscribeOptions {
  return checkAnySubscribeOptions(options, natsLimits);
}

/**
 * Validates one outgoing record and returns its size as the contract counts it: value length plus the UTF-8 bytes of
 * the key and of every header name and value.
 */
export function checkRecord(topic: string, record: OutgoingRecord, index: number): number {
  checkRecordShape(topic, record, index);
  let bytes = record.value.byteLength + Buffer.byteLength(record.key, 'utf8');
  for (const [name, value] of Object.entries(record.headers)) {
    bytes += Buffer.byteLength(name, 'utf8') + Buffer.byteLength(value, 'utf8');
  }
  return bytes;
}
