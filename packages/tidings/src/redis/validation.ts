/** Input checks of the Redis transport: the shared transport checks, and its own wording of an oversize record. */
import type { TidingsError } from '../core/errors.js';
import { recordTooLarge } from '../core/transport-checks.js';

export * from '../core/transport-checks.js';

/** The error for a record over the Redis transport's `maxRecordBytes`. */
export function tooLarge(
  topic: string,
  key: string,
  index: number,
  bytes: number,
  maxRecordBytes: number,
): TidingsError {
  return recordTooLarge(
    "the Redis transport's",
    topic,
    key,
    index,
    bytes,
    maxRecordBytes,
    " (at most 512 MiB, Redis's proto-max-bulk-len)",
  );
}
