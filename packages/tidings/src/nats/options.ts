/**
 * Options of the NATS JetStream transport: their types, defaults and bounds, validated once at construction.
 */
import type { NodeConnectionOptions } from '@nats-io/transport-node';
import { systemClock, type Clock } from '../core/clock.js';
import { checkInteger, describeValue, invalid } from '../core/transport-checks.js';
import { createConsoleLogger, type Logger } from '../core/logger.js';

export { checkInteger, describeValue, invalid };

/**
 * Connection options passed through to `connect()` of `@nats-io/transport-node` as they are: TLS (`tls`), auth
 * (`user`/`pass`, `token`, `authenticator` for nkeys and JWT credentials), `name`, ping and timeout settings.
 * Tidings sets `servers` (from {@link NatsTransportOptions.servers}), and keeps reconnecting for ever
 * (`maxReconnectAttempts: -1`, `waitOnFirstConnect: false`) unless you override those here.
 */
export type NatsConnectionOptions = Omit<NodeConnectionOptions, 'servers'>;

/** Options of {@link createNatsTransport}. Every field is optional; each is validated once, at construction. */
export interface NatsTransportOptions {
  /** Server URL(s), e.g. `nats://127.0.0.1:4222` or `tls://nats.example.com:4222`. Default `nats://127.0.0.1:4222`. */
  servers?: string | readonly string[];
  /** Passed through to the NATS client (TLS, credentials, ...). See {@link NatsConnectionOptions}. */
  connection?: NatsConnectionOptions;
  /**
   * Names every stream (`<prefix>_<topic>_<partition>`), subject (`<prefix>.<topic>.<partition>`) and the group
   * bucket (`<prefix>-groups`) this transport creates, so several applications can share one account. Letters,
   * digits and `-`, 1 to 32 characters. Default `tidings`.
   */
  prefix?: string;
  /** Partition count of topics created implicitly by `publish` or `subscribe`. Integer in [1, 1_000]. Default 4. */
  defaultPartitions?: number;
  /** Replicas of every stream and of the group bucket (JetStream `num_replicas`): 1, 3 or 5. Default 1. */
  replicas?: number;
  /**
   * The largest record accepted, in bytes (value plus UTF-8 bytes of key and header names and values). Default: the
   * server's `max_payload` (1 MiB unless configured) less 1 KiB for the NATS header framing, read when the
   * connection is made (1 MiB - 1 KiB before that). A publish holding a larger record, or one whose NATS message
   * (headers included) exceeds the server's `max_payload`, is rejected with `EVENT_TOO_LARGE` before anything is
   * written. Integer in [1, 64 MiB].
   */
  maxRecordBytes?: number;
  /**
   * Group member lease, in ms: a member that stops renewing it (a crashed, killed, paused or disconnected process)
   * loses its partitions to the other members this long after its last renewal. A member stops handing out records
   * by itself once its own lease (less a margin of min(1 s, leaseMs / 5)) has passed without a renewal.
   * Integer in [1_000, 3_600_000]. Default 10_000.
   */
  leaseMs?: number;
  /** How often members renew their lease and re-check the assignment, in ms. Integer in [50, leaseMs / 3]. Default leaseMs / 5. */
  heartbeatIntervalMs?: number;
  /**
   * How long a partition that moves between members waits for its previous owner to settle its outstanding
   * deliveries before that owner releases it anyway (fencing them), in ms. Integer in [0, 3_600_000]. Default 30_000.
   */
  rebalanceTimeoutMs?: number;
  /** Time limit of each JetStream API request and publish acknowledgement, in ms. Integer in [100, 600_000]. Default 5_000. */
  requestTimeoutMs?: number;
  /**
   * Source of join times and nack due times. Leases do not use it: a member's own lease runs on the monotonic clock
   * (`performance.now()`), and other members' leases are judged by the server's clock (see `group-session.ts`).
   * Default `systemClock`.
   */
  clock?: Clock;
  /**
   * Where background failures go (a member's join, lease renewal or pull failing while the server is away; each is
   * retried), at debug level. Default: the console logger (`TIDINGS_LOG_LEVEL`, default `warn`).
   */
  logger?: Logger;
}

export interface ResolvedNatsOptions {
  servers: string[];
  connection: NatsConnectionOptions;
  prefix: string;
  defaultPartitions: number;
  replicas: number;
  maxRecordBytes: number | undefined;
  leaseMs: number;
  heartbeatIntervalMs: number;
  rebalanceTimeoutMs: number;
  requestTimeoutMs: number;
  clock: Clock;
  logger: Logger;
}

export const natsDefaults = {
  servers: 'nats://127.0.0.1:4222',
  prefix: 'tidings',
  defaultPartitions: 4,
  replicas: 1,
  /** NATS's default `max_payload` (1 MiB) less 1 KiB of header framing. */
  maxRecordBytes: 1024 * 1024 - 1024,
  leaseMs: 10_000,
  rebalanceTimeoutMs: 30_000,
  requestTimeoutMs: 5_000,
  prefetch: 256,
} as const;

export const natsLimits = {
  partitions: 1_000,
  maxRecordBytes: 64 * 1024 * 1024,
  prefetch: 100_000,
  topicNameLength: 249,
  groupNameLength: 249,
  /** Bytes reserved for NATS header framing below the server's `max_payload` in the default `maxRecordBytes`. */
  headerReserveBytes: 1024,
} as const;

const optionNames: ReadonlySet<string> = new Set([
  'servers',
  'connection',
  'prefix',
  'defaultPartitions',
  'replicas',
  'maxRecordBytes',
  'leaseMs',
  'heartbeatIntervalMs',
  'rebalanceTimeoutMs',
  'requestTimeoutMs',
  'clock',
  'logger',
]);

/** Validates and defaults the options of `createNatsTransport`. Throws `INVALID_CONFIG`. */
export function resolveNatsOptions(options: NatsTransportOptions): ResolvedNatsOptions {
  if (typeof options !== 'object' || options === null) {
    throw invalid(`createNatsTransport takes an options object or nothing, got ${describeValue(options)}.`);
  }
  for (const key of Object.keys(options)) {
    if (!optionNames.has(key)) {
      throw invalid(
        `createNatsTransport got unknown option '${key}'; the options are ${[...optionNames].join(', ')}. ` +
          `Check the spelling; connection settings (TLS, credentials) go under 'connection'.`,
      );
    }
  }
  const rawServers: unknown = options.servers ?? natsDefaults.servers;
  const servers = typeof rawServers === 'string' ? [rawServers] : rawServers;
  if (
    !Array.isArray(servers) ||
    servers.length === 0 ||
    !servers.every((server): server is string => typeof server === 'string' && server.length > 0)
  ) {
    throw invalid(
      `createNatsTransport option servers must be a URL or a non-empty array of URLs (e.g. ` +
        `'nats://127.0.0.1:4222'), got ${describeValue(rawServers)}.`,
    );
  }
  const connection: unknown = options.connection ?? {};
  if (typeof connection !== 'object' || connection === null || Array.isArray(connection)) {
    throw invalid(
      `createNatsTransport option connection must be an object, got ${describeValue(connection)}.`,
    );
  }
  if ('servers' in connection) {
    throw invalid(`Pass the server URLs as createNatsTransport option 'servers', not inside 'connection'.`);
  }
  const prefix: unknown = options.prefix ?? natsDefaults.prefix;
  if (typeof prefix !== 'string' || !/^[A-Za-z0-9-]{1,32}$/.test(prefix)) {
    throw invalid(
      `createNatsTransport option prefix must be 1 to 32 letters, digits or '-', got ${describeValue(prefix)}.`,
    );
  }
  const replicas = options.replicas ?? natsDefaults.replicas;
  if (replicas !== 1 && replicas !== 3 && replicas !== 5) {
    throw invalid(`createNatsTransport option replicas must be 1, 3 or 5, got ${describeValue(replicas)}.`);
  }
  const leaseMs =
    options.leaseMs === undefined
      ? natsDefaults.leaseMs
      : checkInteger(options.leaseMs, 'createNatsTransport option leaseMs', 1_000, 3_600_000);
  const heartbeatIntervalMs =
    options.heartbeatIntervalMs === undefined
      ? Math.floor(leaseMs / 5)
      : checkInteger(
          options.heartbeatIntervalMs,
          'createNatsTransport option heartbeatIntervalMs',
          50,
          Math.floor(leaseMs / 3),
        );
  const clock = options.clock ?? systemClock;
  if (
    typeof clock !== 'object' ||
    clock === null ||
    typeof clock.now !== 'function' ||
    typeof clock.sleep !== 'function'
  ) {
    throw invalid(
      `createNatsTransport option clock must have now() and sleep(ms, signal), got ${describeValue(clock)}.`,
    );
  }
  return {
    servers: [...servers],
    connection: { ...connection },
    prefix,
    defaultPartitions:
      options.defaultPartitions === undefined
        ? natsDefaults.defaultPartitions
        : checkInteger(
            options.defaultPartitions,
            'createNatsTransport option defaultPartitions',
            1,
            natsLimits.partitions,
          ),
    replicas,
    maxRecordBytes:
      options.maxRecordBytes === undefined
        ? undefined
        : checkInteger(
            options.maxRecordBytes,
            'createNatsTransport option maxRecordBytes',
            1,
            natsLimits.maxRecordBytes,
          ),
    leaseMs,
    heartbeatIntervalMs,
    rebalanceTimeoutMs:
      options.rebalanceTimeoutMs === undefined
        ? natsDefaults.rebalanceTimeoutMs
        : checkInteger(
            options.rebalanceTimeoutMs,
            'createNatsTransport option rebalanceTimeoutMs',
            0,
            3_600_000,
          ),
    requestTimeoutMs:
      options.requestTimeoutMs === undefined
        ? natsDefaults.requestTimeoutMs
        : checkInteger(options.requestTimeoutMs, 'createNatsTransport option requestTimeoutMs', 100, 600_000),
    clock,
    logger: options.logger ?? createConsoleLogger(),
  };
}
