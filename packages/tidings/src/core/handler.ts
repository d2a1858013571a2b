import type { CommandDefinition, DataOf, EventDefinition, InputOf, MessageDefinition } from './define.js';
import type { Envelope } from './envelope.js';
import type { Logger } from './logger.js';

/** What `publish` and `send` resolve with once the message is durable on the transport. */
export interface Receipt {
  /** The event id (the envelope's `id`). */
  id: string;
  topic: string;
  partition: number;
  offset: number;
}

/** Per-call options of `publish`, `publishMany` and `send`. */
export interface PublishOptions {
  /** The event id. Default: a new UUIDv7. Give your own to make a retried publish recognisable downstream. */
  id?: string;
  /** Overrides the definition's key for this event. */
  key?: string;
  /** The flow this event belongs to. Default: the handled event's correlation id inside a handler, else the new id. */
  correlationId?: string;
  /** The event or command that caused this one. Set automatically by `ctx.publish`. */
  causationId?: string;
  /** W3C trace context to carry. Set automatically by `ctx.publish` and by `tidings/otel`. */
  traceparent?: string;
  tracestate?: string;
  /** When the fact happened. Default: now, from the bus's clock. */
  time?: Date;
  /** Cancels the publish while it waits for the transport. Whether the event was written is then unknown. */
  signal?: AbortSignal;
}

/** The message a handler receives: one of the definitions it subscribed to, discriminated by `type`. */
export type HandledMessage<TDefs extends readonly MessageDefinition[]> = {
  [K in keyof TDefs]: TDefs[K] extends MessageDefinition
    ? { readonly type: TDefs[K]['type']; readonly data: DataOf<TDefs[K]>; readonly key: string }
    : never;
}[number];

/** Everything a handler knows about the delivery it is handling. */
export interface HandlerContext {
  /** The decoded CloudEvent, with its schema-validated data. */
  readonly envelope: Envelope;
  readonly group: string;
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
  /** 1 for the first try of this delivery, counting up with each retry. */
  readonly attempt: number;
  /** How many times the transport has handed this record to the group (1 unless redelivered). */
  readonly deliveryCount: number;
  /** Aborted when the attempt timed out or the consumer is closing past its `closeTimeoutMs`. Honour it. */
  readonly signal: AbortSignal;
  /** Bound to the group, event id and type. */
  readonly logger: Logger;
  /**
   * Publishes a follow-up event: causation id = the handled event's id; the correlation id and trace context are
   * carried forward. Resolves as `bus.publish` does.
   */
  publish<E extends EventDefinition>(event: E, data: InputOf<E>, options?: PublishOptions): Promise<Receipt>;
  /** Sends a follow-up command, with causation and correlation set as `publish` sets them. */
  send<C extends CommandDefinition>(command: C, data: InputOf<C>, options?: PublishOptions): Promise<Receipt>;
}

/** A handler as middleware sees it: untyped message, full context. Resolving means success. */
export type HandlerFn = (
  message: { readonly type: string; readonly data: unknown; readonly key: string },
  ctx: HandlerContext,
) => Promise<void>;

/**
 * Middleware wraps the handler: it receives the next function in the chain and returns a function with the same
 * contract. Rejecting means the attempt failed; resolving means success.
 */
export type Middleware = (next: HandlerFn) => HandlerFn;

/** Composes middleware so that the first in the list is outermost. */
export function composeMiddleware(middleware: readonly Middleware[], handler: HandlerFn): HandlerFn {
  return middleware.reduceRight<HandlerFn>((next, wrap) => wrap(next), handler);
}
