/**
 * The instrumentation seam: how tracing and metrics (e.g. `tidings/otel`) observe the bus without the core knowing
 * any telemetry library. The bus calls {@link Instrumentation.publish} for every message it is about to write and
 * {@link Instrumentation.deliver} for every delivery its consumers settle; a transactional outbox calls `publish`
 * (operation `create`) for every event it stores, and an outbox relay (operation `publish`, `relayed`) for every
 * stored event it publishes. When no instrumentation is configured these calls are skipped entirely: nothing is
 * allocated per event for the seam.
 */
import type { Envelope } from './envelope.js';
import type { PublishAck } from './transport.js';

/** What the bus (or an outbox, or an outbox relay) is about to publish, before the envelope is encoded. */
export interface PublishInfo {
  /** The publishing bus's service name; for `create`, the outbox's; for a relayed event, the relaying bus's. */
  readonly service: string;
  /**
   * `publish` for an event, `send` for a command, `create` for a message stored in a transactional outbox
   * (`outbox.enqueue`): created now, inside the caller's transaction, and sent later by a relay, which reports its
   * own `publish` with {@link PublishInfo.relayed} set. A relay cannot tell a stored event from a stored command, so
   * it always reports `publish`.
   */
  readonly operation: 'publish' | 'send' | 'create';
  /**
   * The transport's name (`log`, `memory`, `nats`, ...). For `create` it is `tidings`: the outbox's database is not a
   * messaging system, and the transport is only chosen when a relay publishes the event.
   */
  readonly system: string;
  readonly topic: string;
  readonly type: string;
  /** The event id. */
  readonly id: string;
  /** The aggregate key (the partition key). */
  readonly key: string;
  readonly correlationId: string;
  readonly causationId: string | undefined;
  /**
   * The trace context the caller asked to carry (`PublishOptions.traceparent`, set by `ctx.publish` to the handled
   * event's). An instrumentation may use it as the parent when it has no active span of its own.
   */
  readonly traceparent: string | undefined;
  readonly tracestate: string | undefined;
  /**
   * `true` when an outbox relay publishes an event stored earlier by `outbox.enqueue`. `traceparent` / `tracestate`
   * are then the stored ones (those of the `create` span when the outbox had an instrumentation): they belong to the
   * event, not to whatever span happens to be active in the relay's loop, so an instrumentation should make them
   * the parent. The returned scope's `traceparent` is ignored: the relay publishes the stored envelope unchanged, so
   * consumers stay children of the `create` span and a re-publish after a crash carries the same trace context.
   */
  readonly relayed?: boolean;
}

/**
 * How a publish ended. `ack` says where the message landed; it is absent for a `create` (the outbox row is written
 * in the caller's transaction, nothing is on a transport yet).
 */
export type PublishOutcome =
  | { readonly ok: true; readonly ack?: PublishAck | undefined }
  | { readonly ok: false; readonly error: unknown };

/** What an instrumentation returns for one publish: the trace context to write, and the end of the operation. */
export interface PublishScope {
  /**
   * Written into the envelope's `traceparent` (replacing the carried one) when defined; ignored for a relayed
   * publish (see {@link PublishInfo.relayed}).
   */
  readonly traceparent?: string | undefined;
  /** Written into the envelope's `tracestate` when `traceparent` is defined. */
  readonly tracestate?: string | undefined;
  /**
   * Called exactly once, when the publish settled (durable, rejected, or refused before writing); for a `create`,
   * when the outbox row was inserted (not when the caller's transaction commits) or the insert failed.
   */
  end(outcome: PublishOutcome): void;
}

/** One delivery a consumer is about to settle. */
export interface DeliveryInfo {
  readonly service: string;
  readonly system: string;
  readonly group: string;
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
  readonly key: string;
  /** How many times the transport handed this record to the group. */
  readonly deliveryCount: number;
  /** The decoded envelope; undefined when the record could not be decoded (it is then dead-lettered). */
  readonly envelope: Envelope | undefined;
}

/**
 * How a delivery was settled. `processed`: the handler succeeded; `duplicate`: the inbox recognised it;
 * `parked`: it failed and its key is parked, or it waits behind a parked key; `deadLettered`: moved to the
 * dead-letter topic (after failing, or undecodable); `abandoned`: the consumer closed before it settled (it is
 * redelivered later).
 */
export type DeliveryStatus = 'processed' | 'duplicate' | 'parked' | 'deadLettered' | 'abandoned';

/** How a delivery ended. */
export interface DeliveryOutcome {
  readonly status: DeliveryStatus;
  /** Handler attempts made (0 when the handler never ran). */
  readonly attempts: number;
  /** The last handler error, when attempts failed. */
  readonly error?: unknown;
}

/** What an instrumentation returns for one delivery. */
export interface DeliveryScope {
  /**
   * Runs the handling of the delivery (every attempt) inside this scope, e.g. with its span active so that spans
   * and publishes made by the handler descend from it. Must call `fn` exactly once and return what it returns.
   */
  run<T>(fn: () => Promise<T>): Promise<T>;
  /** Called when handler attempt `attempt` (1, 2, ...) failed with `error`; another attempt may follow. */
  attemptFailed?(attempt: number, error: unknown): void;
  /** Fields bound into the handler's logger and the consumer's log lines (e.g. `traceId`, `spanId`). */
  readonly logFields?: Readonly<Record<string, unknown>>;
  /** Called exactly once when the delivery is settled or abandoned. */
  end(outcome: DeliveryOutcome): void;
}

/**
 * Observes publishing and handling. Every method is optional and synchronous; an instrumentation must not throw
 * (the bus logs and ignores anything it throws from `end` and `attemptFailed`; an outbox and its relay also from
 * `publish`). `tidings/otel` provides one built on OpenTelemetry; pass it as `createBus({ instrumentation })`, and to
 * `createOutbox({ instrumentation })` so that stored events continue the caller's trace.
 */
export interface Instrumentation {
  /**
   * Called for each message after it was validated and its envelope built, before the envelope is encoded: a
   * `traceparent` in the returned scope replaces the envelope's.
   */
  publish?(info: PublishInfo): PublishScope | undefined;
  /** Called for each delivery a consumer takes up (including undecodable ones), before it is handled. */
  deliver?(info: DeliveryInfo): DeliveryScope | undefined;
}

/** The trace id (32 hex digits) of a W3C `traceparent`, or undefined if it is not one. */
export function traceIdOf(traceparent: string | undefined): string | undefined {
  if (traceparent === undefined || traceparent.length < 55 || traceparent[2] !== '-') return undefined;
  const id = traceparent.slice(3, 35);
  return /^[0-9a-f]{32}$/.test(id) && id !== '00000000000000000000000000000000' ? id : undefined;
}
