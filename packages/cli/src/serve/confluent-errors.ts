/**
 * Errors of the Confluent Schema Registry REST API: `{ error_code, message }` with the HTTP status and the error
 * codes Confluent clients look for.
 */
import { isTidingsError } from 'tidings';

/** Confluent's error codes used here. */
export const ConfluentError = {
  SUBJECT_NOT_FOUND: 40401,
  VERSION_NOT_FOUND: 40402,
  SCHEMA_NOT_FOUND: 40403,
  SUBJECT_COMPATIBILITY_NOT_CONFIGURED: 40408,
  INCOMPATIBLE_SCHEMA: 409,
  INVALID_SCHEMA: 42201,
  INVALID_VERSION: 42202,
  INVALID_COMPATIBILITY_LEVEL: 42203,
  INTERNAL: 50001,
} as const;

/** A failure to answer with a Confluent error body. */
export class RegistryHttpError extends Error {
  constructor(
    readonly status: number,
    readonly errorCode: number,
    message: string,
  ) {
    super(message);
    this.name = 'RegistryHttpError';
  }
}

export const notFound = (errorCode: number, message: string) =>
  new RegistryHttpError(404, errorCode, message);
export const unprocessable = (errorCode: number, message: string) =>
  new RegistryHttpError(422, errorCode, message);

/** Maps any failure to status, Confluent code and message. */
export function toHttpError(error: unknown): RegistryHttpError {
  if (error instanceof RegistryHttpError) return error;
  if (isTidingsError(error)) {
    switch (error.code) {
      case 'SCHEMA_INCOMPATIBLE':
        return new RegistryHttpError(409, ConfluentError.INCOMPATIBLE_SCHEMA, error.message);
      case 'INVALID_CONFIG':
      case 'CONFLICT':
        return unprocessable(ConfluentError.INVALID_SCHEMA, error.message);
      case 'NOT_FOUND':
        return notFound(ConfluentError.SUBJECT_NOT_FOUND, error.message);
      default:
        break;
    }
  }
  const message = error instanceof Error ? error.message : String(error);
  return new RegistryHttpError(500, ConfluentError.INTERNAL, `internal error: ${message}`);
}
