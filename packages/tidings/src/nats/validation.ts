/**
 * Checks of caller input (names, records, positions, subscribe options): the shared transport checks under the NATS
 * transport's limits. Each rejects with a `TidingsError` that names what was wrong and what to do.
 */
import {
  checkName as checkAnyName,
  checkSubscribeOptions as checkAnySubscribeOptions,
  type CheckedSubscribeOptions,
} from '../core/transport-checks.js';
import type { SubscribeOptions } from '../core/transport.js';
import { natsLimits } from './options.js';

export {
  checkNumber,
  checkRecord,
  checkStartPosition,
  type CheckedSubscribeOptions,
} from '../core/transport-checks.js';

export function checkName(value: unknown, kind: 'topic' | 'group'): asserts value is string {
  checkAnyName(value, kind, kind === 'topic' ? natsLimits.topicNameLength : natsLimits.groupNameLength);
}

export function checkSubscribeOptions(options: SubscribeOptions): CheckedSubscribeOptions {
  return checkAnySubscribeOptions(options, natsLimits);
}
