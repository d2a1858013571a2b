/**
 * The one error type Tidings throws or rejects with.
 *
 * Check for it with {@link isTidingsError}, not `instanceof`: two installed copies of Tidings (a library and an
 * application each bringing one) must still recognise each other's errors, so the check reads a `Symbol.for` brand.
 */

/** Every error code Tidings uses. The code is stable; the message is for people. */
export const ErrorCode = {
  /** A configuration value is missing or out of range. Thrown at setup, never retried. */
  INVALID_CONFIG: 'INVALID_CONFIG',
  /** The payload failed the event's schema at publish time. Nothing was written. */
  VALIDATION_FAILED: 'VALIDATION_FAILED',
  /** A consumed event's payload failed the consumer's schema; the event is dead-lettered. */
  SCHEMA_INVALID: 'SCHEMA_INVALID',
  /** A consumed record could not be decoded as a CloudEvent (bad JSON, missing attributes). */
  DECODE_FAILED: 'DECODE_FAILED',
  /** A registered schema history forbids this version (schema registry). */
  SCHEMA_INCOMPATIBLE: 'SCHEMA_INCOMPATIBLE',
  /** A consumed event carries a schema version newer than the consumer knows. */
  UNKNOWN_VERSION: 'UNKNOWN_VERSION',
  /** The encoded event is larger than the bus or transport accepts. Nothing was written. */
  EVENT_TOO_LARGE: 'EVENT_TOO_LARGE',
  /** The transport did not confirm the event as durable. It may or may not have been written. */
  PUBLISH_FAILED: 'PUBLISH_FAILED',
  /** The transport cannot be reached. Usually retryable. */
  TRANSPORT_UNAVAILABLE: 'TRANSPORT_UNAVAILABLE',
  /**
   * Stored data failed its checksum or could not be parsed: it was damaged outside Tidings. Never retryable; the
   * error's details say where (topic, partition, offset).
   */
  DATA_CORRUPT: 'DATA_CORRUPT',
  /** A handler did not finish within its `timeoutMs`. Retryable. */
  HANDLER_TIMEOUT: 'HANDLER_TIMEOUT',
  /** A handler threw; the original error is the `cause`. */
  HANDLER_FAILED: 'HANDLER_FAILED',
  /** A command was sent but no handler is registered for it, or two were. */
  NO_HANDLER: 'NO_HANDLER',
  /** The bus, consumer or transport is closed, or closing. */
  CLOSED: 'CLOSED',
  /** A wait (for a position, a consumer, a close) did not finish within its deadline. */
  TIMEOUT: 'TIMEOUT',
  /** The operation was cancelled through its AbortSignal. */
  ABORTED: 'ABORTED',
  /** A topic, group, parked key or dead letter that was asked for does not exist. */
  NOT_FOUND: 'NOT_FOUND',
  /** The operation conflicts with current state (for example resetting offsets while a member is live). */
  CONFLICT: 'CONFLICT',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const brand = Symbol.for('tidings.error');

/** Structured fields an error may carry, so logs and callers need not parse messages. */
export interface ErrorDetails {
  topic?: string;
  group?: string;
  eventId?: string;
  eventType?: string;
  partition?: number;
  offset?: number;
  /** Anything else worth reporting (sizes, limits, versions). */
  [key: string]: unknown;
}

export interface TidingsErrorOptions extends ErrorDetails {
  /** Whether trying again later may succeed. Defaults per code (see {@link isRetryableByDefault}). */
  retryable?: boolean;
  cause?: unknown;
}

const retryableByDefault: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  ErrorCode.PUBLISH_FAILED,
  ErrorCode.TRANSPORT_UNAVAILABLE,
  ErrorCode.HANDLER_TIMEOUT,
  ErrorCode.HANDLER_FAILED,
]);

/** Whether an error with this code is retryable when the thrower does not say. */
export function isRetryableByDefault(code: ErrorCode): boolean {
  return retryableByDefault.has(code);
}

/**
 * An error with a stable `code`, a `retryable` flag, a `cause` chain and structured details.
 * Messages say what happened, to what, and what to do.
 */
export class TidingsError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly details: Readonly<ErrorDetails>;
  declare readonly [brand]: true;

  constructor(code: ErrorCode, message: string, options: TidingsErrorOptions = {}) {
    const { retryable, cause, ...details } = options;
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'TidingsError';
    this.code = code;
    this.retryable = retryable ?? isRetryableByDefault(code);
    this.details = details;
    Object.defineProperty(this, brand, { value: true, enumerable: false });
  }
}

/**
 * True when `value` is a {@link TidingsError} from any installed copy of Tidings; with `code`, only for that code.
 */
export function isTidingsError(value: unknown, code?: ErrorCode): value is TidingsError {
  if (typeof value !== 'object' || value === null) return false;
  if ((value as Record<symbol, unknown>)[brand] !== true) return false;
  return code === undefined || (value as TidingsError).code === code;
}

/**
 * Whether retrying may help: a {@link TidingsError} says so itself; any other error counts as retryable, since a
 * handler's own failures (a database blip, a timeout) are usually transient.
 */
export function isRetryable(error: unknown): boolean {
  return isTidingsError(error) ? error.retryable : true;
}

/** A short description of any thrown value, for logs and dead-letter reasons. */
export function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  try {
    return typeof error === 'string' ? error : JSON.stringify(error);
  } catch {
    return String(error);
  }
}
