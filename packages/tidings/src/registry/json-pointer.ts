/**
 * Small helpers over JSON Schema documents: resolving local `$ref`s, canonical JSON text, deep equality.
 */
import type { JsonSchema } from '../core/json-schema.js';

/** A schema node: an object schema, or `true` / `false`. */
export type SchemaNode = JsonSchema | boolean;

/**
 * Follows local references (`#`, `#/$defs/x`, `#/definitions/x`) of `node` within `root`, up to 32 hops. Returns
 * `true` (accepts anything) for a reference it cannot resolve (a remote one), so checks stay permissive there.
 */
export function resolveRef(node: SchemaNode, root: SchemaNode): SchemaNode {
  let current = node;
  for (let hop = 0; hop < 32; hop++) {
    if (typeof current !== 'object') return current;
    const ref = current['$ref'];
    if (typeof ref !== 'string') return current;
    const target = pointer(root, ref);
    if (target === undefined) return true;
    const rest: Record<string, unknown> = { ...current };
    delete rest['$ref'];
    current = Object.keys(rest).length === 0 || typeof target !== 'object' ? target : { ...target, ...rest };
  }
  return true;
}

function pointer(root: SchemaNode, ref: string): SchemaNode | undefined {
  if (!ref.startsWith('#')) return undefined;
  const parts = ref
    .slice(1)
    .split('/')
    .filter((part) => part !== '')
    .map((part) => decodeURIComponent(part).replace(/~1/g, '/').replace(/~0/g, '~'));
  let value: unknown = root;
  for (const part of parts) {
    if (typeof value !== 'object' || value === null) return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return typeof value === 'boolean' || (typeof value === 'object' && value !== null && !Array.isArray(value))
    ? (value as SchemaNode)
    : undefined;
}

/** JSON text with object keys sorted at every level: equal documents give equal text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (typeof value !== 'object' || value === null) return value;
  const sorted: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort())
    sorted[key] = sortKeys((value as Record<string, unknown>)[key]);
  return sorted;
}

/** Structural equality of two JSON values. */
export function jsonEqual(a: unknown, b: unknown): boolean {
  return canonicalJson(a) === canonicalJson(b);
}
