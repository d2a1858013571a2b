/**
 * Names and hashes shared by the outbox and the inbox: table names (validated, then quoted per dialect), the 32-bit
 * hash behind lock slots and lanes, and the fixed number of relay lanes.
 */
import { ErrorCode, TidingsError } from '../core/errors.js';

/**
 * Relay lanes: every outbox row belongs to lane `hash(key) % outboxLanes`; a relay publishes a lane only while it
 * holds that lane's lock, so a key is never published by two relays at once. Fixed, so rows written by any version
 * agree on their lane.
 */
export const outboxLanes = 16;

/** Lock slots for keys (MariaDB/MySQL lock rows): enqueues of keys in one slot wait for each other's commit. */
export const keyLockSlots = 65_536;

/** A table name as given (`name` or `schema.name`), split into its validated parts. */
export interface TableName {
  /** The parts, unquoted: `[name]` or `[schema, name]`. */
  parts: readonly string[];
  /** The last part: the table's own name, used to name its indexes and companion tables. */
  base: string;
  /** The name as given, for messages and lock names. */
  text: string;
}

const part = /^[A-Za-z_][A-Za-z0-9_]{0,47}$/;

/**
 * Validates a table name: one or two dot-separated identifiers of letters, digits and `_` (at most 48 characters
 * each, so that derived index and companion names stay within every database's limit).
 *
 * @throws {TidingsError} `INVALID_CONFIG` for anything else.
 */
export function parseTableName(text: unknown, where: string): TableName {
  const parts = typeof text === 'string' ? text.split('.') : [];
  if (parts.length < 1 || parts.length > 2 || !parts.every((p) => part.test(p))) {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `${where}: "table" must be a name like tidings_outbox or app.tidings_outbox (letters, digits, '_', at most 48 ` +
        `characters per part); got ${JSON.stringify(text)}`,
    );
  }
  return { parts, base: parts[parts.length - 1]!, text: text as string };
}

/** FNV-1a over the UTF-8 bytes of `text`: a stable unsigned 32-bit hash, the same in every process and version. */
export function hash32(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/** The same hash as a signed 32-bit integer (PostgreSQL advisory lock keys are `int4`). */
export function hashInt32(text: string): number {
  return hash32(text) | 0;
}

/** The relay lane of a key. */
export function laneOf(key: string): number {
  return hash32(key) % outboxLanes;
}
