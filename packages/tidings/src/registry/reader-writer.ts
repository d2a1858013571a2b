/**
 * The core of the compatibility checker: can a *reader* schema accept every document a *writer* schema accepts?
 * Compatibility modes are built from this one question (see `compatibility.ts`).
 *
 * The check is structural and conservative where it must guess, with one documented leniency: a property the reader
 * declares and the writer does not is assumed absent from the writer's data even when the writer's object is open
 * (`additionalProperties` not `false`), as schemas derived from code (zod, TypeBox) leave objects open without ever
 * writing undeclared properties.
 */
import { ErrorCode, TidingsError } from '../core/errors.js';
import type { JsonSchema } from '../core/json-schema.js';
import { jsonEqual, resolveRef, type SchemaNode } from './json-pointer.js';

/** The rules a change can break; each {@link CompatibilityIssue} names one. */
export const compatibilityRules = {
  /** The reader requires a property the writer does not declare, and gives it no default. */
  PROPERTY_ADDED_REQUIRED: 'PROPERTY_ADDED_REQUIRED',
  /** The reader requires a property the writer declares as optional, and gives it no default. */
  PROPERTY_MADE_REQUIRED: 'PROPERTY_MADE_REQUIRED',
  /** The writer declares a property the reader neither declares nor allows (`additionalProperties: false`). */
  PROPERTY_REMOVED_CLOSED: 'PROPERTY_REMOVED_CLOSED',
  /** The writer allows undeclared properties and the reader does not (or allows narrower ones). */
  ADDITIONAL_PROPERTIES_NARROWED: 'ADDITIONAL_PROPERTIES_NARROWED',
  /** The writer may write a JSON type the reader does not accept (e.g. number → integer, string|null → string). */
  TYPE_NARROWED: 'TYPE_NARROWED',
  /** The writer may write a value the reader's `enum` / `const` does not list. */
  ENUM_NARROWED: 'ENUM_NARROWED',
  /** A bound, length, pattern, format, `multipleOf` or `uniqueItems` of the reader rejects values the writer allows. */
  CONSTRAINT_TIGHTENED: 'CONSTRAINT_TIGHTENED',
  /** A branch of the writer's union (`anyOf` / `oneOf`) is accepted by no branch of the reader. */
  UNION_NARROWED: 'UNION_NARROWED',
} as const;

export type CompatibilityRule = (typeof compatibilityRules)[keyof typeof compatibilityRules];

/** One reason a reader cannot read a writer's documents. */
export interface CompatibilityIssue {
  /** The field, dotted (`customer.address.zip`, `lines[].sku`, `meta.*` for additional properties); `(root)`. */
  path: string;
  rule: CompatibilityRule;
  /** What is wrong, naming the reader and the writer, and what would fix it. */
  message: string;
}

/** How the two sides are called in messages (`the new schema`, `version 2`). */
export interface SideNames {
  reader: string;
  writer: string;
}

const maxDepth = 128;

const lowerBounds = ['minimum', 'exclusiveMinimum', 'minLength', 'minItems', 'minProperties'] as const;
const upperBounds = ['maximum', 'exclusiveMaximum', 'maxLength', 'maxItems', 'maxProperties'] as const;

/**
 * The issues that stop `reader` from reading every document `writer` accepts; empty when it can. Throws
 * `INVALID_CONFIG` for a schema nested deeper than 128 levels.
 */
export function readerIssues(reader: SchemaNode, writer: SchemaNode, names: SideNames): CompatibilityIssue[] {
  const issues: CompatibilityIssue[] = [];
  new Check(reader, writer, names, issues).run(reader, writer, [], 0);
  return issues;
}

class Check {
  readonly #seen = new Map<object, Set<object>>();

  constructor(
    readonly readerRoot: SchemaNode,
    readonly writerRoot: SchemaNode,
    readonly names: SideNames,
    readonly issues: CompatibilityIssue[],
  ) {}

  report(path: readonly string[], rule: CompatibilityRule, message: string): void {
    this.issues.push({ path: formatPath(path), rule, message });
  }

  run(readerNode: SchemaNode, writerNode: SchemaNode, path: readonly string[], depth: number): void {
    if (depth > maxDepth) {
      throw new TidingsError(
        ErrorCode.INVALID_CONFIG,
        `schema is nested deeper than ${maxDepth} levels at "${formatPath(path)}"; flatten it`,
      );
    }
    const reader = resolveRef(readerNode, this.readerRoot);
    const writer = resolveRef(writerNode, this.writerRoot);
    if (writer === false || reader === true) return;
    if (typeof reader === 'object' && typeof writer === 'object') {
      // A recursive schema revisits the same pair: it was (or is being) checked already.
      const seen = this.#seen.get(reader) ?? new Set<object>();
      if (seen.has(writer)) return;
      seen.add(writer);
      this.#seen.set(reader, seen);
    }
    const { names } = this;
    if (reader === false) {
      this.report(
        path,
        'TYPE_NARROWED',
        `${names.reader} accepts nothing here, ${names.writer} writes values`,
      );
      return;
    }
    const r = reader;
    let w: JsonSchema = writer === true ? {} : writer;

    // The writer's union: every branch must be readable.
    const writerBranches = branches(w);
    if (writerBranches !== undefined) {
      for (const branch of writerBranches) this.run(r, branch, path, depth + 1);
      return;
    }
    for (const part of allOf(w)) w = { ...w, ...part }; // approximate: merge the writer's allOf parts
    // The reader's union: one branch must read the writer's documents.
    const readerBranches = branches(r);
    if (readerBranches !== undefined) {
      let best: CompatibilityIssue[] | undefined;
      for (const branch of readerBranches) {
        const found: CompatibilityIssue[] = [];
        new Check(this.readerRoot, this.writerRoot, names, found).run(branch, w, path, depth + 1);
        if (best === undefined || found.length < best.length) best = found;
        if (found.length === 0) return;
      }
      if (best !== undefined && best.length > 0 && readerBranches.length > 0) {
        const describe = describeTypes(typesOf(w));
        this.report(
          path,
          'UNION_NARROWED',
          `${names.writer} writes ${describe} here, which no branch of ${names.reader}'s anyOf/oneOf accepts ` +
            `(closest branch: ${best.map((issue) => issue.message).join('; ')})`,
        );
      }
      return;
    }
    for (const part of allOf(r)) this.run(part, w, path, depth + 1);

    this.checkTypes(r, w, path);
    this.checkEnum(r, w, path);
    this.checkConstraints(r, w, path);
    this.checkObject(r, w, path, depth);
    this.checkArray(r, w, path, depth);
  }

  checkTypes(r: JsonSchema, w: JsonSchema, path: readonly string[]): void {
    const readerTypes = typesOf(r);
    if (readerTypes === undefined) return;
    const writerEnum = enumOf(w);
    const writerTypes =
      typesOf(w) ?? (writerEnum === undefined ? undefined : [...new Set(writerEnum.map(jsonType))]);
    if (writerTypes === undefined) {
      this.report(
        path,
        'TYPE_NARROWED',
        `${this.names.reader} accepts only ${describeTypes(readerTypes)}, ${this.names.writer} any type`,
      );
      return;
    }
    const unread = writerTypes.filter(
      (type) => !readerTypes.includes(type) && !(type === 'integer' && readerTypes.includes('number')),
    );
    if (unread.length > 0) {
      this.report(
        path,
        'TYPE_NARROWED',
        `${this.names.writer} writes ${describeTypes(unread)}, which ${this.names.reader} does not accept ` +
          `(it accepts ${describeTypes(readerTypes)}); widen the type instead of narrowing it`,
      );
    }
  }

  checkEnum(r: JsonSchema, w: JsonSchema, path: readonly string[]): void {
    const readerEnum = enumOf(r);
    if (readerEnum === undefined) return;
    const writerEnum = enumOf(w);
    if (writerEnum === undefined) {
      this.report(
        path,
        'ENUM_NARROWED',
        `${this.names.reader} accepts only ${listValues(readerEnum)}, ${this.names.writer} any value`,
      );
      return;
    }
    const missing = writerEnum.filter((value) => !readerEnum.some((known) => jsonEqual(known, value)));
    if (missing.length > 0) {
      this.report(
        path,
        'ENUM_NARROWED',
        `${this.names.writer} may write ${listValues(missing)}, which ${this.names.reader}'s enum does not list`,
      );
    }
  }

  checkConstraints(r: JsonSchema, w: JsonSchema, path: readonly string[]): void {
    // A bound at or beyond the safe-integer range (zod writes ±(2^53 - 1) for every int) constrains nothing a
    // JavaScript producer can write, so it counts as no bound.
    const number = (schema: JsonSchema, key: string): number | undefined => {
      const value = schema[key];
      return typeof value === 'number' && Math.abs(value) < Number.MAX_SAFE_INTEGER ? value : undefined;
    };
    const tightened = (what: string) =>
      this.report(
        path,
        'CONSTRAINT_TIGHTENED',
        `${this.names.reader} ${what} than ${this.names.writer} allows; loosen it back`,
      );
    for (const key of lowerBounds) {
      const bound = number(r, key);
      const writerBound = number(w, key);
      if (bound !== undefined && (writerBound === undefined || writerBound < bound))
        tightened(`has ${key} ${bound}, stricter`);
    }
    for (const key of upperBounds) {
      const bound = number(r, key);
      const writerBound = number(w, key);
      if (bound !== undefined && (writerBound === undefined || writerBound > bound))
        tightened(`has ${key} ${bound}, stricter`);
    }
    const multiple = number(r, 'multipleOf');
    const writerMultiple = number(w, 'multipleOf');
    if (
      multiple !== undefined &&
      (writerMultiple === undefined ||
        Math.abs(writerMultiple / multiple - Math.round(writerMultiple / multiple)) > 1e-9)
    )
      tightened(`has multipleOf ${multiple}, stricter`);
    for (const key of ['pattern', 'format'] as const) {
      if (r[key] !== undefined && !jsonEqual(r[key], w[key]))
        tightened(`has ${key} ${JSON.stringify(r[key])}, stricter`);
    }
    if (r['uniqueItems'] === true && w['uniqueItems'] !== true) tightened('requires unique items, stricter');
  }

  checkObject(r: JsonSchema, w: JsonSchema, path: readonly string[], depth: number): void {
    const readerProps = properties(r);
    const writerProps = properties(w);
    if (readerProps === undefined && writerProps === undefined && r['additionalProperties'] === undefined)
      return;
    const rp = readerProps ?? {};
    const wp = writerProps ?? {};
    const readerExtra = extra(r);
    const writerExtra = extra(w);
    const names = this.names;

    for (const [name, writerProp] of Object.entries(wp)) {
      const readerProp = rp[name];
      if (readerProp !== undefined) {
        this.run(readerProp, writerProp, [...path, name], depth + 1);
      } else if (readerExtra === false) {
        this.report(
          [...path, name],
          'PROPERTY_REMOVED_CLOSED',
          `${names.writer} writes this property and ${names.reader} neither declares it nor allows additional ` +
            `properties; keep it declared (it may be optional) or leave additionalProperties open`,
        );
      } else if (readerExtra !== true) {
        this.run(readerExtra, writerProp, [...path, name], depth + 1);
      }
    }
    const writerRequired = new Set(required(w));
    for (const name of required(r)) {
      if (writerRequired.has(name)) continue;
      const readerProp = resolveRef(rp[name] ?? true, this.readerRoot);
      if (typeof readerProp === 'object' && readerProp['default'] !== undefined) continue;
      if (name in wp) {
        this.report(
          [...path, name],
          'PROPERTY_MADE_REQUIRED',
          `${names.reader} requires it but ${names.writer} has it optional, so its documents may lack it; keep ` +
            `it optional or give it a default`,
        );
      } else {
        this.report(
          [...path, name],
          'PROPERTY_ADDED_REQUIRED',
          `${names.reader} requires it but ${names.writer} does not have it, so its documents lack it; make it ` +
            `optional or give it a default`,
        );
      }
    }
    for (const [name, readerProp] of Object.entries(rp)) {
      if (name in wp) continue;
      if (writerExtra !== false && writerExtra !== true)
        this.run(readerProp, writerExtra, [...path, name], depth + 1);
    }
    if (readerExtra === false && writerExtra !== false) {
      this.report(
        [...path, '*'],
        'ADDITIONAL_PROPERTIES_NARROWED',
        `${names.reader} sets additionalProperties: false but ${names.writer} allows additional properties; ` +
          `leave additionalProperties open`,
      );
    } else if (readerExtra !== true && readerExtra !== false) {
      const before = this.issues.length;
      this.run(readerExtra, writerExtra, [...path, '*'], depth + 1);
      for (const issue of this.issues.slice(before)) issue.rule = 'ADDITIONAL_PROPERTIES_NARROWED';
    }
  }

  checkArray(r: JsonSchema, w: JsonSchema, path: readonly string[], depth: number): void {
    const readerItems = r['items'];
    const writerItems = w['items'];
    const readerPrefix = Array.isArray(r['prefixItems']) ? (r['prefixItems'] as SchemaNode[]) : [];
    const writerPrefix = Array.isArray(w['prefixItems']) ? (w['prefixItems'] as SchemaNode[]) : [];
    readerPrefix.forEach((item, index) => {
      const writerItem = writerPrefix[index] ?? asNode(writerItems) ?? true;
      this.run(item, writerItem, [...path, `[${index}]`], depth + 1);
    });
    const readerNode = asNode(readerItems);
    if (readerNode === undefined) return;
    const writerNode =
      asNode(writerItems) ?? (typesOf(w)?.every((t) => t !== 'array') === true ? false : true);
    this.run(readerNode, writerNode, [...path, '[]'], depth + 1);
  }
}

function asNode(value: unknown): SchemaNode | undefined {
  if (typeof value === 'boolean') return value;
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as JsonSchema;
  return undefined;
}

function branches(schema: JsonSchema): SchemaNode[] | undefined {
  const list = Array.isArray(schema['anyOf'])
    ? schema['anyOf']
    : Array.isArray(schema['oneOf'])
      ? schema['oneOf']
      : undefined;
  if (list === undefined) return undefined;
  const rest: Record<string, unknown> = { ...schema };
  delete rest['anyOf'];
  delete rest['oneOf'];
  // A `false` branch accepts nothing; `true` accepts what the siblings accept.
  return (list as unknown[]).map((branch): SchemaNode =>
    typeof branch === 'object' && branch !== null
      ? { ...rest, ...(branch as JsonSchema) }
      : branch === false
        ? false
        : rest,
  );
}

function allOf(schema: JsonSchema): JsonSchema[] {
  const list = schema['allOf'];
  if (!Array.isArray(list)) return [];
  return list.filter((part): part is JsonSchema => typeof part === 'object' && part !== null);
}

function properties(schema: JsonSchema): Record<string, SchemaNode> | undefined {
  const value = schema['properties'];
  return typeof value === 'object' && value !== null ? (value as Record<string, SchemaNode>) : undefined;
}

function required(schema: JsonSchema): string[] {
  const value = schema['required'];
  return Array.isArray(value) ? value.filter((name): name is string => typeof name === 'string') : [];
}

function extra(schema: JsonSchema): SchemaNode {
  const value = schema['additionalProperties'];
  return asNode(value) ?? true;
}

const jsonTypes = ['null', 'boolean', 'object', 'array', 'number', 'integer', 'string'];

function typesOf(schema: JsonSchema): string[] | undefined {
  const type = schema['type'];
  if (typeof type === 'string') return [type];
  if (Array.isArray(type))
    return type.filter((t): t is string => typeof t === 'string' && jsonTypes.includes(t));
  return undefined;
}

function enumOf(schema: JsonSchema): unknown[] | undefined {
  if (Array.isArray(schema['enum'])) return schema['enum'] as unknown[];
  if ('const' in schema) return [schema['const']];
  return undefined;
}

function jsonType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

function describeTypes(types: readonly string[] | undefined): string {
  if (types === undefined) return 'any type';
  return types.length === 1 ? `type ${types[0]}` : `types ${types.join(', ')}`;
}

function listValues(values: readonly unknown[]): string {
  const shown = values.slice(0, 10).map((value) => JSON.stringify(value));
  return `${values.length === 1 ? 'the value' : 'the values'} ${shown.join(', ')}${values.length > 10 ? ', ...' : ''}`;
}

function formatPath(path: readonly string[]): string {
  if (path.length === 0) return '(root)';
  return path.reduce(
    (text, part) => (part.startsWith('[') ? `${text}${part}` : text === '' ? part : `${text}.${part}`),
    '',
  );
}
