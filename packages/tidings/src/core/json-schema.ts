import { ErrorCode, TidingsError } from './errors.js';
import type { StandardSchemaV1 } from './schema.js';

/** A JSON Schema document (draft 2020-12 unless it says otherwise in `$schema`). */
export type JsonSchema = { readonly [keyword: string]: unknown };

/**
 * Turns a Standard Schema into a JSON Schema, for schema libraries that cannot do it themselves. Returns `undefined`
 * for a schema it does not know, so converters can be chained.
 */
export type JsonSchemaConverter = (schema: StandardSchemaV1) => JsonSchema | undefined;

/** The Standard JSON Schema interface (zod 4.2+, ArkType, valibot through `toStandardJsonSchema`). */
interface StandardJsonSchemaProps {
  jsonSchema?: {
    input?: (options: { target: string }) => unknown;
  };
}

const typeBoxKind = Symbol.for('TypeBox.Kind');

/** True for a plain JSON Schema object: a TypeBox schema, or a document written by hand. */
function isJsonSchemaObject(value: unknown): value is JsonSchema {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  if (typeBoxKind in value) return true;
  return ['type', 'properties', '$schema', '$ref', 'anyOf', 'oneOf', 'allOf', 'enum', 'const'].some(
    (keyword) => keyword in value,
  );
}

/**
 * A copy holding only JSON: symbols (TypeBox's `Kind`), functions, `undefined` and the Standard Schema member
 * (`~standard`, which a TypeBox adapter may add) are dropped.
 */
function plainJson(schema: object): JsonSchema {
  return JSON.parse(
    JSON.stringify(schema, (key, value: unknown) => (key === '~standard' ? undefined : value)),
  ) as JsonSchema;
}

/**
 * True for a Standard Schema that is a JSON Schema document itself (TypeBox). Other libraries' schema objects may
 * carry JSON Schema-looking members (valibot's `type: 'object'`) without being one.
 */
function isSelfDescribing(schema: StandardSchemaV1): boolean {
  return typeBoxKind in schema || (schema['~standard'].vendor === 'typebox' && isJsonSchemaObject(schema));
}

/**
 * The JSON Schema of what a schema accepts (its *input* side: what a publisher writes and a consumer validates).
 *
 * Tried in order: `given` (a JSON Schema object, e.g. a TypeBox schema, used as is); the schema's own Standard JSON
 * Schema (`~standard.jsonSchema`, zod 4.2+ and others), targeting draft 2020-12; `schema` itself when it is already
 * a JSON Schema (TypeBox); then `converter`. Throws `INVALID_CONFIG` naming `what` when none of them yields one, and
 * says how to give one.
 */
export function toJsonSchema(
  what: string,
  schema: StandardSchemaV1,
  given?: JsonSchema,
  converter?: JsonSchemaConverter,
): JsonSchema {
  if (given !== undefined) {
    if (!isJsonSchemaObject(given)) {
      throw new TidingsError(
        ErrorCode.INVALID_CONFIG,
        `${what}: "jsonSchema" must be a JSON Schema object (e.g. { type: 'object', properties: {...} })`,
      );
    }
    return plainJson(given);
  }
  const standard = (schema as { '~standard': StandardJsonSchemaProps })['~standard'];
  const input = standard.jsonSchema?.input;
  if (typeof input === 'function') {
    const derived = input.call(standard.jsonSchema, { target: 'draft-2020-12' });
    if (isJsonSchemaObject(derived)) return plainJson(derived);
  }
  if (isSelfDescribing(schema)) return plainJson(schema);
  const converted = converter?.(schema);
  if (converted !== undefined) return plainJson(converted);
  const vendor = (schema as { '~standard': { vendor?: unknown } })['~standard'].vendor;
  throw new TidingsError(
    ErrorCode.INVALID_CONFIG,
    `${what}: cannot derive a JSON Schema from this ${String(vendor)} schema; pass "jsonSchema" in its definition ` +
      `or a converter (for valibot: toStandardJsonSchema from @valibot/to-json-schema)`,
  );
}
