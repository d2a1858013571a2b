import type { StandardSchemaV1 } from '@standard-schema/spec';
import { TidingsError, type ErrorCode, type ErrorDetails } from './errors.js';

export type { StandardSchemaV1 };

/** The output type of a Standard Schema (what a handler receives). */
export type SchemaOutput<S extends StandardSchemaV1> = StandardSchemaV1.InferOutput<S>;
/** The input type of a Standard Schema (what a publisher passes). */
export type SchemaInput<S extends StandardSchemaV1> = StandardSchemaV1.InferInput<S>;

/** True when `value` implements the Standard Schema v1 interface (zod 4, valibot 1, ArkType, TypeBox...). */
export function isStandardSchema(value: unknown): value is StandardSchemaV1 {
  if ((typeof value !== 'object' && typeof value !== 'function') || value === null) return false;
  const props = (value as { '~standard'?: { version?: unknown; validate?: unknown } })['~standard'];
  return (
    typeof props === 'object' && props !== null && props.version === 1 && typeof props.validate === 'function'
  );
}

/** Formats Standard Schema issues as `path: message; path: message`. */
export function formatIssues(issues: ReadonlyArray<StandardSchemaV1.Issue>): string {
  return issues
    .map((issue) => {
      const path = (issue.path ?? [])
        .map((segment) => (typeof segment === 'object' ? String(segment.key) : String(segment)))
        .join('.');
      return path ? `${path}: ${issue.message}` : issue.message;
    })
    .join('; ');
}

/**
 * Validates `value` against `schema` and returns the schema's output. Rejects with a {@link TidingsError} of
 * `code` (not retryable) listing every issue.
 */
export async function validateWithSchema<S extends StandardSchemaV1>(
  schema: S,
  value: unknown,
  code: ErrorCode,
  context: string,
  details: ErrorDetails = {},
): Promise<SchemaOutput<S>> {
  let result = schema['~standard'].validate(value);
  if (result instanceof Promise) result = await result;
  if (result.issues) {
    throw new TidingsError(code, `${context}: ${formatIssues(result.issues)}`, {
      ...details,
      issues: result.issues,
      retryable: false,
    });
  }
  return result.value;
}
