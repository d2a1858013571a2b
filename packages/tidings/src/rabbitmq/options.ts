/**
 * Options of {@link createRabbitMqTransport}: validated and defaulted once, at construction.
 */
import type { Options } from 'amqplib';
import { checkInteger, describeValue, invalid, limits } from './validation.js';

/** Socket options handed to amqplib's `connect` unchanged: TLS (`ca`, `cert`, `key`, `servername`, ...), timeouts. */
export type RabbitMqSocketOptions = Record<string, unknown>;

/** Options of {@link createRabbitMqTransport}. Only `url` is required. */
export interface RabbitMqTransportOptions {
  /**
   * The broker: an AMQP URL (`amqp://user:pass@host:5672/vhost`, `amqps://...` for TLS) or amqplib's connect object
   * (`{ protocol, hostname, port, username, password, vhost, heartbeat, frameMax }`). Passed to amqplib unchanged.
   */
  url: string | Options.Connect;
  /** Socket and TLS options passed to amqplib's `connect` unchanged (`ca`, `cert`, `key`, `passphrase`, `servername`). */
  socketOptions?: RabbitMqSocketOptions;
  /** Partition count of topics created implicitly by `publish` or `subscribe`. Integer in [1, 1_000]. Default 4. */
  defaultPartitions?: number;
  /**
   * Largest record accepted, in bytes (value + UTF-8 key + header names and values). Integer in [1, 128 MiB].
   * Default 8 MiB. Larger records are refused with `EVENT_TOO_LARGE` before anything is written.
   */
  maxRecordBytes?: number;
  /** How long a publish or admin call waits for a connection before `TRANSPORT_UNAVAILABLE`, in ms. Default 5_000. */
  connectTimeoutMs?: number;
  /**
   * How long a partition that moves between members waits for its previous owner to settle its deliveries before the
   * owner gives it up anyway (its late acks are then fenced), in ms. Default 30_000.
   */
  rebalanceTimeoutMs?: number;
  /** How often a member announces itself to its group, in ms. Default 1_000. */
  heartbeatMs?: number;
  /** A member not heard from for this long is presumed gone and its partitions are reassigned, in ms. Default 6_000. */
  memberLeaseMs?: number;
  /** How often acknowledged progress is committed to the broker while consuming, in ms. Default 100. */
  commitIntervalMs?: number;
  /**
   * How long admin reads of a stream wait for one more record before concluding they reached its end, in ms
   * (AMQP 0-9-1 does not tell a stream reader where the end is). Default 60.
   */
  readIdleMs?: number;
  /** How long a publish waits for the broker to confirm and to report the records' offsets, in ms. Default 30_000. */
  publishTimeoutMs?: number;
  /** Prefix of every exchange and queue the transport declares. Default `tidings`. */
  namePrefix?: string;
}

export interface ResolvedOptions {
  url: string | Options.Connect;
  socketOptions: RabbitMqSocketOptions;
  /** The URL with the password removed, for error messages. */
  displayUrl: string;
  defaultPartitions: number;
  maxRecordBytes: number;
  connectTimeoutMs: number;
  rebalanceTimeoutMs: number;
  heartbeatMs: number;
  memberLeaseMs: number;
  commitIntervalMs: number;
  readIdleMs: number;
  publishTimeoutMs: number;
  namePrefix: string;
}

const optionNames: ReadonlySet<string> = new Set([
  'url',
  'socketOptions',
  'defaultPartitions',
  'maxRecordBytes',
  'connectTimeoutMs',
  'rebalanceTimeoutMs',
  'heartbeatMs',
  'memberLeaseMs',
  'commitIntervalMs',
  'readIdleMs',
  'publishTimeoutMs',
  'namePrefix',
]);

const maxMs = 2_147_483_647;

export function resolveOptions(options: RabbitMqTransportOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null) {
    throw invalid(
      `createRabbitMqTransport needs an options object with a url, got ${describeValue(options)}.`,
    );
  }
  for (const key of Object.keys(options)) {
    if (!optionNames.has(key)) {
      throw invalid(
        `createRabbitMqTransport got unknown option '${key}'; the options are ${[...optionNames].join(', ')}. ` +
          `Check the spelling.`,
      );
    }
  }
  const url = options.url;
  if (!(typeof url === 'string' && /^amqps?:\/\//.test(url)) && !(typeof url === 'object' && url !== null)) {
    throw invalid(
      `createRabbitMqTransport option url must be an amqp:// or amqps:// URL or an amqplib connect object, got ` +
        `${describeValue(url)}.`,
    );
  }
  const socketOptions = options.socketOptions ?? {};
  if (typeof socketOptions !== 'object' || socketOptions === null) {
    throw invalid(
      `createRabbitMqTransport option socketOptions must be an object, got ${describeValue(socketOptions)}.`,
    );
  }
  const int = (name: keyof RabbitMqTransportOptions, fallback: number, min: number, max: number): number => {
    const value = options[name];
    return value === undefined
      ? fallback
      : checkInteger(value, `createRabbitMqTransport option ${name}`, min, max);
  };
  const namePrefix = options.namePrefix ?? 'tidings';
  if (typeof namePrefix !== 'string' || !/^[A-Za-z0-9_-]{1,32}$/.test(namePrefix)) {
    throw invalid(
      `createRabbitMqTransport option namePrefix must be 1 to 32 letters, digits, '_' or '-', got ` +
        `${describeValue(namePrefix)}.`,
    );
  }
  const heartbeatMs = int('heartbeatMs', 1_000, 50, 60_000);
  const memberLeaseMs = int('memberLeaseMs', 6_000, 200, maxMs);
  if (memberLeaseMs < heartbeatMs * 2) {
    throw invalid(
      `createRabbitMqTransport option memberLeaseMs (${memberLeaseMs}) must be at least twice heartbeatMs ` +
        `(${heartbeatMs}), or live members would be presumed gone between two heartbeats.`,
    );
  }
  return {
    url,
    socketOptions,
    displayUrl: displayUrl(url),
    defaultPartitions: int('defaultPartitions', 4, 1, limits.partitions),
    maxRecordBytes: int('maxRecordBytes', 8 * 1024 * 1024, 1, limits.maxRecordBytes),
    connectTimeoutMs: int('connectTimeoutMs', 5_000, 1, maxMs),
    rebalanceTimeoutMs: int('rebalanceTimeoutMs', 30_000, 0, maxMs),
    heartbeatMs,
    memberLeaseMs,
    commitIntervalMs: int('commitIntervalMs', 100, 1, 60_000),
    readIdleMs: int('readIdleMs', 60, 1, 60_000),
    publishTimeoutMs: int('publishTimeoutMs', 30_000, 1, maxMs),
    namePrefix,
  };
}

/** The broker address without its password, for messages and logs. */
export function displayUrl(url: string | Options.Connect): string {
  if (typeof url === 'string') {
    try {
      const parsed = new URL(url);
      if (parsed.password !== '') parsed.password = '***';
      return parsed.toString().replace(/\/$/, '');
    } catch {
      return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
    }
  }
  const protocol = url.protocol ?? 'amqp';
  const user = url.username === undefined ? '' : `${url.username}:***@`;
  return `${protocol}://${user}${url.hostname ?? 'localhost'}:${url.port ?? (protocol === 'amqps' ? 5671 : 5672)}${
    url.vhost === undefined ? '' : `/${encodeURIComponent(url.vhost)}`
  }`;
}
