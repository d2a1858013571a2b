/**
 * What changed between two JSON Schema documents, field by field, for people reading `tidings schema diff`: not a
 * verdict (see `compatibility.ts` for that), a list of changes.
 */
import type { JsonSchema } from '../core/json-schema.js';
import { jsonEqual, resolveRef, type SchemaNode } from './json-pointer.js';

/** One change between two schemas. */
export interface SchemaChange {
  /** The field, dotted (`customer.email`, `lines[].sku`), or `(root)`. */
  path: string;
  /** What kind of change. */
  kind:
    | 'property added'
    | 'property removed'
    | 'now required'
    | 'now optional'
    | 'type changed'
    | 'enum values added'
    | 'enum values removed'
    | 'additionalProperties changed'
    | 'default changed'
    | 'constraint changed';
  /** Before → after, in words. */
  detail: string;
}

const constraintKeys = [
  'minimum',
  'exclusiveMinimum',
  'maximum',
  'exclusiveMaximum',
  'minLength',
  'maxLength',
  'pattern',
  'format',
  'multipleOf',
  'minItems',
  'maxItems',
  'uniqueItems',
  'minProperties',
  'maxProperties',
  'const',
];

/** The changes from `before` to `after`, in document order; empty when they are the same. */
export function diffSchemas(before: JsonSchema, after: JsonSchema): SchemaChange[] {
  const changes: SchemaChange[] = [];
  walk(before, after, before, after, [], changes, 0);
  return changes;
}

function show(value: unknown): string {
  return value === undefined ? '(none)' : JSON.stringify(value);
}

function obj(node: SchemaNode): JsonSchema {
  return typeof node === 'object' ? node : node ? {} : { not: {} };
}

function walk(
  beforeNode: SchemaNode,
  afterNode: SchemaNode,
  beforeRoot: SchemaNode,
  afterRoot: SchemaNode,
  path: string[],
  changes: SchemaChange[],
  depth: number,
): void {
  if (depth > 64) return;
  const a = obj(resolveRef(beforeNode, beforeRoot));
  const b = obj(resolveRef(afterNode, afterRoot));
  const at = formatPath(path);
  const add = (kind: SchemaChange['kind'], detail: string) => changes.push({ path: at, kind, detail });
  if (!jsonEqual(a['type'], b['type'])) add('type changed', `${show(a['type'])} → ${show(b['type'])}`);
  const enumA = Array.isArray(a['enum']) ? (a['enum'] as unknown[]) : undefined;
  const enumB = Array.isArray(b['enum']) ? (b['enum'] as unknown[]) : undefined;
  if (enumA !== undefined || enumB !== undefined) {
    const added = (enumB ?? []).filter((v) => !(enumA ?? []).some((w) => jsonEqual(v, w)));
    const removed = (enumA ?? []).filter((v) => !(enumB ?? []).some((w) => jsonEqual(v, w)));
    if (enumA === undefined) add('constraint changed', `enum added: ${show(enumB)}`);
    else if (enumB === undefined) add('constraint changed', `enum removed (was ${show(enumA)})`);
    else {
      if (added.length > 0) add('enum values added', added.map((v) => JSON.stringify(v)).join(', '));
      if (removed.length > 0) add('enum values removed', removed.map((v) => JSON.stringify(v)).join(', '));
    }
  }
  for (const key of constraintKeys) {
    if (!jsonEqual(a[key], b[key])) add('constraint changed', `${key} ${show(a[key])} → ${show(b[key])}`);
  }
  if (!jsonEqual(a['default'], b['default']))
    add('default changed', `${show(a['default'])} → ${show(b['default'])}`);

  const propsA = (a['properties'] ?? {}) as Record<string, SchemaNode>;
  const propsB = (b['properties'] ?? {}) as Record<string, SchemaNode>;
  const reqA = new Set(Array.isArray(a['required']) ? (a['required'] as string[]) : []);
  const reqB = new Set(Array.isArray(b['required']) ? (b['required'] as string[]) : []);
  const names = [...new Set([...Object.keys(propsA), ...Object.keys(propsB), ...reqA, ...reqB])];
  for (const name of names) {
    const inner = [...path, name];
    const where = formatPath(inner);
    const pa = propsA[name];
    const pb = propsB[name];
    if (pa === undefined && pb !== undefined) {
      changes.push({
        path: where,
        kind: 'property added',
        detail: `${reqB.has(name) ? 'required' : 'optional'}, ${describe(resolveRef(pb, afterRoot))}`,
      });
      continue;
    }
    if (pa !== undefined && pb === undefined) {
      changes.push({
        path: where,
        kind: 'property removed',
        detail: `was ${reqA.has(name) ? 'required' : 'optional'}`,
      });
      continue;
    }
    if (reqA.has(name) && !reqB.has(name))
      changes.push({ path: where, kind: 'now optional', detail: 'was required' });
    if (!reqA.has(name) && reqB.has(name))
      changes.push({ path: where, kind: 'now required', detail: 'was optional' });
    if (pa !== undefined && pb !== undefined) walk(pa, pb, beforeRoot, afterRoot, inner, changes, depth + 1);
  }
  const extraA = a['additionalProperties'];
  const extraB = b['additionalProperties'];
  if (typeof extraA === 'object' && typeof extraB === 'object' && extraA !== null && extraB !== null) {
    walk(
      extraA as JsonSchema,
      extraB as JsonSchema,
      beforeRoot,
      afterRoot,
      [...path, '*'],
      changes,
      depth + 1,
    );
  } else if (!jsonEqual(extraA, extraB)) {
    add('additionalProperties changed', `${show(extraA)} → ${show(extraB)}`);
  }
  const itemsA = a['items'];
  const itemsB = b['items'];
  if (itemsA !== undefined || itemsB !== undefined) {
    walk(
      (itemsA ?? true) as SchemaNode,
      (itemsB ?? true) as SchemaNode,
      beforeRoot,
      afterRoot,
      [...path, '[]'],
      changes,
      depth + 1,
    );
  }
  for (const keyword of ['anyOf', 'oneOf'] as const) {
    const listA = Array.isArray(a[keyword]) ? (a[keyword] as SchemaNode[]) : [];
    const listB = Array.isArray(b[keyword]) ? (b[keyword] as SchemaNode[]) : [];
    if (listA.length !== listB.length) {
      add('type changed', `${keyword} with ${listA.length} → ${listB.length} branches`);
    } else {
      listA.forEach((branch, index) =>
        walk(
          branch,
          listB[index] ?? true,
          beforeRoot,
          afterRoot,
          [...path, `<${keyword}[${index}]>`],
          changes,
          depth + 1,
        ),
      );
    }
  }
}

function describe(node: SchemaNode): string {
  if (typeof node !== 'object') return node ? 'any value' : 'no value';
  const parts = [node['type'] === undefined ? 'untyped' : `type ${show(node['type'])}`];
  if (node['default'] !== undefined) parts.push(`default ${show(node['default'])}`);
  if (Array.isArray(node['enum'])) parts.push(`enum ${show(node['enum'])}`);
  return parts.join(', ');
}

function formatPath(path: readonly string[]): string {
  if (path.length === 0) return '(root)';
  return path.reduce(
    (text, part) =>
      part.startsWith('[') || part.startsWith('<')
        ? `${text}${part}`
        : text === ''
          ? part
          : `${text}.${part}`,
    '',
  );
}
