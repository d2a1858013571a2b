/**
 * Compatibility modes of the schema registry: what a new version of a subject must stay compatible with, in which
 * direction, and against how much of its history.
 */
import { ErrorCode, TidingsError } from '../core/errors.js';

/** Every compatibility mode, as the Confluent Schema Registry names them. */
export const compatibilityModes = [
  'BACKWARD',
  'BACKWARD_TRANSITIVE',
  'FORWARD',
  'FORWARD_TRANSITIVE',
  'FULL',
  'FULL_TRANSITIVE',
  'NONE',
] as const;

/**
 * A compatibility mode.
 *
 * - `BACKWARD`: the new schema reads data written with the previous one (upgrade consumers first).
 * - `FORWARD`: the previous schema reads data written with the new one (upgrade producers first).
 * - `FULL`: both. `NONE`: no check.
 * - `*_TRANSITIVE`: against every earlier version, not only the latest.
 */
export type CompatibilityMode = (typeof compatibilityModes)[number];

/** The mode of a subject that has none of its own and of a registry whose global mode was never set. */
export const defaultCompatibilityMode: CompatibilityMode = 'BACKWARD';

/** True for one of {@link compatibilityModes}. */
export function isCompatibilityMode(value: unknown): value is CompatibilityMode {
  return typeof value === 'string' && (compatibilityModes as readonly string[]).includes(value);
}

/** Returns `value` as a mode (case-insensitive), or throws `INVALID_CONFIG` listing the modes. */
export function parseCompatibilityMode(value: unknown, what = 'compatibility mode'): CompatibilityMode {
  const upper = typeof value === 'string' ? value.toUpperCase() : value;
  if (isCompatibilityMode(upper)) return upper;
  throw new TidingsError(
    ErrorCode.INVALID_CONFIG,
    `${what} ${JSON.stringify(value)} is not one of ${compatibilityModes.join(', ')}`,
  );
}

/** Which directions a mode checks and whether against the whole history. */
export interface ModeRules {
  /** The new schema must read data of the earlier version(s). */
  backward: boolean;
  /** The earlier version(s) must read data of the new schema. */
  forward: boolean;
  /** Against every earlier version rather than only the latest. */
  transitive: boolean;
}

/** The directions and reach of `mode`. */
export function modeRules(mode: CompatibilityMode): ModeRules {
  return {
    backward: mode.startsWith('BACKWARD') || mode.startsWith('FULL'),
    forward: mode.startsWith('FORWARD') || mode.startsWith('FULL'),
    transitive: mode.endsWith('_TRANSITIVE'),
  };
}
