/**
 * The seam between the bus and an outbox relay (`tidings/outbox`): what a relay gets from the bus it publishes
 * through, and what a running relay offers. The core never imports a database client; an outbox brings its relay.
 */
import type { Clock } from './clock.js';
import type { WireMode } from './codec.js';
import type { Instrumentation } from './instrumentation.js';
import type { Logger } from './logger.js';
import type { TopologyRecorder } from './topology.js';
import type { Transport } from './transport.js';

/**
 * What a relay publishes through: the bus's transport, wire mode, logger and clock, and what observes the bus's
 * publishes. A relay publishes each stored envelope unchanged (same id, same trace context); `instrumentation` and
 * `topology` only observe it.
 */
export interface RelayTarget {
  transport: Transport;
  wireMode: WireMode;
  logger: Logger;
  clock: Clock;
  /** The bus's service name, for logs, the instrumentation and topology. */
  service: string;
  /**
   * The bus's instrumentation, given only when it observes publishes. For each event it sends, the relay calls
   * `publish` with `relayed: true` and the stored `traceparent` as the carried context, and ends the scope when the
   * transport acknowledged or refused the event; the scope's `traceparent` is not written (consumers stay children
   * of the enqueue's `create` span). Absent: no call, nothing allocated per event.
   */
  instrumentation?: Instrumentation | undefined;
  /**
   * The bus's topology recorder, absent when topology is off: each type the relay published is recorded once as
   * produced by the bus's service.
   */
  topology?: Pick<TopologyRecorder, 'relayed'> | undefined;
}

/** Counts since the relay started. */
export interface RelayStats {
  /** Events published to the transport (a re-publish after a failed mark counts again). */
  published: number;
  /** Batches published. */
  batches: number;
  /**
   * Failed attempts (a database step, or a lane's publish); each is logged and retried with backoff, except an
   * unrecoverable one, which stops the relay (see {@link Relay.closed}).
   */
  errors: number;
  /** The last failure's description, until a step succeeds with no lane held back by a failed publish. */
  lastError?: string;
}

/**
 * A running relay: it moves stored events from an outbox to the transport until closed. Created by
 * `bus.startRelay(outbox)`.
 */
export interface Relay extends AsyncDisposable {
  /**
   * Resolves once the relay has stopped: with `undefined` after `close()` (or its signal), or with the error that
   * stopped it on its own. Only an error retrying cannot fix stops a relay — the outbox table missing, the database
   * refusing its credentials or grants (`NOT_FOUND` or `INVALID_CONFIG`, the driver's error as `cause`); anything
   * else is logged and retried with backoff. Never rejects.
   */
  readonly closed: Promise<Error | undefined>;
  stats(): RelayStats;
  /** Looks for new rows now instead of at the next poll (PostgreSQL relays also wake on NOTIFY). */
  wake(): void;
  /** Finishes the batch in flight, releases the relay's locks and connection, and stops. Idempotent. */
  close(): Promise<void>;
}

/** Anything a bus can start a relay for: an outbox from `tidings/outbox`. */
export interface RelaySource<TOptions> {
  /** Starts a relay publishing through `target`. Called by `bus.startRelay`; throws `INVALID_CONFIG` at once. */
  startRelay(target: RelayTarget, options?: TOptions): Relay;
}
