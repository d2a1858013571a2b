/** Input checks of the embedded log: the shared transport checks, and its own wording of an oversize record. */
import type { TidingsError } from '../core/errors.js';
import { recordTooLarge } from '../core/transport-checks.js';

export * from '../core/transport-checks.js';

/** The error for a record over the log's `maxRecordBytes`. */
export function tooLarge(
  topic: string,
  key: string,
  index: number,
  bytes: number,
  maxRecordBytes: number,
): TidingsError {
  return recordTooLarge("the embedded log's", topic, key, index, bytes, maxRecordBytes);
}
