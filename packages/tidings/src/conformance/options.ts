import type { Transport } from '../core/transport.js';

/**
 * Every case of the conformance suite, by name. A transport that cannot pass a case skips it by this name, with the
 * reason beside it (in its conformance spec and in its docs).
 */
export const conformanceCases = [
  'round trip keeps every attribute and header',
  'concurrent publishers lose nothing',
  'topics are isolated',
  'every group gets every event (fan-out)',
  'members of a group split the work without duplicates',
  'per-key order across partitions with concurrency',
  'per-key order while a member joins',
  'per-key order while a member leaves',
  'nack redelivers',
  'a killed consumer process gets its uncommitted events again',
  'close while consuming loses nothing',
  'a late group reads the history',
  'replay from earliest',
  'replay from an offset',
  'replay from a time',
  'lag is reported and reaches zero',
  'parking holds a key and releases it in order',
  'dead letters carry reason and original',
  'trace and correlation attributes are preserved',
  'a 1 MiB event round trips',
  'an event over the limit is refused clearly',
  'a broker restart during a stream loses nothing acknowledged',
  'a broker down at start-up gives a clear error and the bus reconnects',
] as const;

export type ConformanceCase = (typeof conformanceCases)[number];

/** A broker instance the suite starts, stops and restarts itself, on a private port. */
export interface PrivateBroker {
  /** The URL the transport connects to; the error a publish gives while the broker is down must contain it. */
  readonly url: string;
  /**
   * A new transport connected to this broker. Must not fail while the broker is down: the transport connects (and
   * reconnects) by itself, and reports `TRANSPORT_UNAVAILABLE` from `publish` meanwhile.
   */
  create(): Transport | Promise<Transport>;
  /** Starts the broker (again), on the same port and data; resolves when it accepts connections. */
  start(): Promise<void>;
  /** Stops the broker (killed, as a crash would, or gracefully); resolves when it is down. */
  stop(): Promise<void>;
  /** Stops it for good and removes its data. Called once per case, after the case's transports are closed. */
  dispose(): Promise<void>;
}

/** How a transport is put through the suite. */
export interface ConformanceOptions {
  /** The transport's name, as in the report: `memory`, `log`, `nats`, ... The top-level `describe` has this title. */
  name: string;
  /**
   * A new transport on the shared test broker. Each call is a separate client, as a separate process would be;
   * the suite closes what it creates. Topics and groups are named uniquely per case, so cases never see each
   * other's records (the suite never deletes topics: the contract has no call for it).
   */
  create(): Transport | Promise<Transport>;
  /**
   * Set to true when each `create()` call makes a broker of its own, so that two instances share nothing (the
   * in-memory transport). The suite then runs every client of a case on one instance, and "closing a client" closes
   * only what the case opened on it. Default false: instances share topics, groups and offsets, as clients of one
   * broker (or processes on one data directory) do.
   */
  isolatedInstances?: boolean;
  /**
   * How a child process creates the same transport, for the SIGKILL case: a module (absolute path; run with
   * `node --import tsx --conditions=tidings-source`, from the current directory, so `tsx` must be installed there)
   * whose export `exportName` (default `createTransport`) returns the transport or a promise of it. `env` is added to
   * the child's environment. Without it the SIGKILL case is skipped, and the report says why.
   */
  childProcess?: { module: string; exportName?: string; env?: Record<string, string> };
  /**
   * Starts a private broker (its own port and data) for the broker-restart and down-at-start-up cases; called once
   * in each of them. Without it those cases are skipped, and the report says why.
   */
  privateBroker?: () => Promise<PrivateBroker>;
  /**
   * Cases this transport does not pass, each with the reason (a sentence the report prints beside the case). A
   * case the transport's `features` rule out (e.g. `replayByTime: false`) must be listed here: the suite fails it
   * otherwise, so that no case is skipped silently.
   */
  skip?: Partial<Record<ConformanceCase, string>>;
  /**
   * Per-case time limit, in ms; every wait inside a case shares it. Default 60,000; the broker-restart case gets
   * twice as much.
   */
  timeoutMs?: number;
}
