/** Small helpers shared by the Redis transport's modules. */
import type { StartPosition } from '../core/transport.js';

/** A start position as the scripts take it: `{ k: kind, v: value }`. */
export function positionArg(position: StartPosition): { k: string; v?: number } {
  if (position === 'earliest' || position === 'latest') return { k: position };
  if ('offset' in position) return { k: 'offset', v: position.offset };
  return { k: 'timestamp', v: position.timestamp };
}

/** A list from Lua's cjson, which encodes an empty table as an object. */
export function list<T>(value: T[] | Record<string, never> | undefined): T[] {
  return Array.isArray(value) ? value : [];
}

export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function noop(): void {}
