/**
 * Options of the Redis transport: what a caller may set, the defaults, and their validation (once, at construction).
 */
import type { RedisOptions } from 'ioredis';
import { systemClock, type Clock } from '../core/clock.js';
import { checkInteger, describeValue, invalid, limits } from './validation.js';

/** Options of {@link createRedisTransport}. Every field is optional; each is validated once, at construction. */
export interface RedisTransportOptions {
  /**
   * The server: `redis://[[user]:password@]host[:port][/db]`, or `rediss://...` for TLS. Default
   * `redis://127.0.0.1:6379`. Error messages name it, with any password replaced by `***`.
   */
  url?: string;
  /**
   * Passed through to ioredis (`new Redis(url, redis)`): `tls` (a `tls.connect` options object: `ca`, `cert`,
   * `key`, `servername`, ...), `username`, `password`, `db`, `connectionName`, `family`, `keepAlive`,
   * `connectTimeout`, ... Fields given here win over the URL's. The transport sets these itself, and refuses them
   * here: `keyPrefix` (use {@link RedisTransportOptions.keyPrefix}), `lazyConnect`, `enableOfflineQueue`,
   * `maxRetriesPerRequest`, `autoResendUnfulfilledCommands`, `autoResubscribe`, `retryStrategy` (see
   * `reconnectDelayMsMax`), `enableAutoPipelining`, and `protocol` / `replyMapping` (it speaks RESP2).
   */
  redis?: RedisOptions;
  /**
   * Prefix of every key the transport writes. Partition `p` of topic `t` is the stream `<keyPrefix>:<t>:<p>`; its
   * bookkeeping (offset counters, offset index, group members, leases) lives under `<keyPrefix>#...`. Transports
   * that share data must use the same prefix. Default `tidings`.
   */
  keyPrefix?: string;
  /** Partition count of topics created implicitly by `publish` or `subscribe`. Integer in [1, 10_000]. Default 4. */
  defaultPartitions?: number;
  /**
   * The largest record accepted, in bytes: value length plus the UTF-8 bytes of the key and of every header name and
   * value. Larger records are rejected with `EVENT_TOO_LARGE` before anything is written. Integer in
   * [1, 512 MiB] (Redis's default `proto-max-bulk-len`). Default 8 MiB.
   */
  maxRecordBytes?: number;
  /**
   * Whether the server keeps what it acknowledged across its own restart: true only if it runs with
   * `appendonly yes` (with `appendfsync always`, every acknowledged record; with `everysec`, all but about the last
   * second). Reported as `features.persistent`. When true the transport checks `INFO persistence` at connect time
   * and refuses to publish (`INVALID_CONFIG`) to a server whose AOF is off. Default false: a Redis with RDB
   * snapshots or no persistence loses recent or all records when it restarts.
   */
  persistent?: boolean;
  /**
   * After every publish, `WAIT` until this many replicas have the records (0: do not wait). A publish that does not
   * reach them within `waitTimeoutMs` rejects with `PUBLISH_FAILED` (the records are on the primary). Integer in
   * [0, 100]. Default 0.
   */
  waitReplicas?: number;
  /** Timeout of that `WAIT`, in ms. Integer in [1, 600_000]. Default 1_000. */
  waitTimeoutMs?: number;
  /**
   * How long an operation (a publish, an admin call, a subscription's join) waits for a connection to the server
   * before it fails with `TRANSPORT_UNAVAILABLE` naming the URL. Integer in [0, 600_000] ms. Default 5_000.
   */
  connectTimeoutMs?: number;
  /**
   * Upper bound of the delay between reconnection attempts, in ms (the delay doubles from 50 ms up to this). The
   * transport keeps trying for as long as it is open. Integer in [50, 60_000]. Default 1_000.
   */
  reconnectDelayMsMax?: number;
  /**
   * Group member lease, in ms: a member that stops heartbeating (a crashed, killed or paused process, a lost
   * network) loses its partitions to the other members this long after its last heartbeat. A member on this host
   * whose process no longer exists loses them at the next heartbeat of another member on this host. A member stops
   * handing out records by itself once its own lease (less a margin of min(1 s, leaseMs / 5)) has passed without a
   * renewal. Integer in [100, 3_600_000]. Default 10_000.
   */
  leaseMs?: number;
  /** How often members renew their lease and rebalance, in ms. Integer in [10, leaseMs / 2]. Default leaseMs / 5. */
  heartbeatIntervalMs?: number;
  /**
   * How long a partition that moves between members waits for its previous owner to settle its outstanding
   * deliveries before the previous owner releases it anyway (fencing them), in ms. Integer in
   * [0, 2_147_483_647]. Default 30_000.
   */
  rebalanceTimeoutMs?: number;
  /**
   * How often retention (`retentionMs`, `retentionBytes` of a topic) runs in the background over the topics this
   * transport published to or consumed, in ms. Retention also runs on every publish to a partition and before admin
   * reads of it. Integer in [10, 86_400_000]. Default 30_000.
   */
  retentionIntervalMs?: number;
  /** Source of record timestamps, nack delays and rebalance timeouts. Leases run on Redis's own clock. */
  clock?: Clock;
}

export interface ResolvedOptions {
  url: string;
  redis: RedisOptions;
  keyPrefix: string;
  defaultPartitions: number;
  maxRecordBytes: number;
  persistent: boolean;
  waitReplicas: number;
  waitTimeoutMs: number;
  connectTimeoutMs: number;
  reconnectDelayMsMax: number;
  leaseMs: number;
  heartbeatIntervalMs: number;
  rebalanceTimeoutMs: number;
  retentionIntervalMs: number;
  clock: Clock;
}

export const defaults = {
  url: 'redis://127.0.0.1:6379',
  keyPrefix: 'tidings',
  defaultPartitions: 4,
  maxRecordBytes: 8 * 1024 * 1024,
  waitTimeoutMs: 1_000,
  connectTimeoutMs: 5_000,
  reconnectDelayMsMax: 1_000,
  leaseMs: 10_000,
  rebalanceTimeoutMs: 30_000,
  retentionIntervalMs: 30_000,
} as const;

const optionNames: ReadonlySet<string> = new Set([
  'url',
  'redis',
  'keyPrefix',
  'defaultPartitions',
  'maxRecordBytes',
  'persistent',
  'waitReplicas',
  'waitTimeoutMs',
  'connectTimeoutMs',
  'reconnectDelayMsMax',
  'leaseMs',
  'heartbeatIntervalMs',
  'rebalanceTimeoutMs',
  'retentionIntervalMs',
  'clock',
]);

/** ioredis options the transport sets itself; see {@link RedisTransportOptions.redis}. */
const reservedClientOptions = [
  'keyPrefix',
  'lazyConnect',
  'enableOfflineQueue',
  'maxRetriesPerRequest',
  'autoResendUnfulfilledCommands',
  'retryStrategy',
  'enableAutoPipelining',
  'autoResubscribe',
  'protocol',
  'replyMapping',
] as const;

export function validateOptions(options: RedisTransportOptions): ResolvedOptions {
  const where = 'createRedisTransport option';
  if (typeof options !== 'object' || options === null) {
    throw invalid(`createRedisTransport takes an options object or nothing, got ${describeValue(options)}.`);
  }
  for (const key of Object.keys(options)) {
    if (!optionNames.has(key)) {
      throw invalid(
        `createRedisTransport got unknown option '${key}'; the options are ${[...optionNames].join(', ')}. ` +
          `Check the spelling.`,
      );
    }
  }
  const url = options.url ?? defaults.url;
  if (typeof url !== 'string' || !/^rediss?:\/\/[^/]/.test(url)) {
    throw invalid(
      `${where} url must be a redis:// or rediss:// URL such as 'redis://127.0.0.1:6379', got ${describeValue(url)}.`,
    );
  }
  try {
    new URL(url);
  } catch {
    throw invalid(`${where} url ${describeValue(redactUrl(url))} is not a valid URL.`);
  }
  const redis = options.redis ?? {};
  if (typeof redis !== 'object' || redis === null || Array.isArray(redis)) {
    throw invalid(`${where} redis must be an ioredis options object, got ${describeValue(redis)}.`);
  }
  for (const name of reservedClientOptions) {
    if (name in redis) {
      throw invalid(
        `${where} redis.${name} is set by the transport itself and cannot be passed through` +
          (name === 'keyPrefix' ? '; use the keyPrefix option instead.' : '.'),
      );
    }
  }
  const keyPrefix = options.keyPrefix ?? defaults.keyPrefix;
  if (typeof keyPrefix !== 'string' || keyPrefix.length === 0 || keyPrefix.length > 100) {
    throw invalid(
      `${where} keyPrefix must be a string of 1 to 100 characters, got ${describeValue(keyPrefix)}.`,
    );
  }
  const persistent = options.persistent ?? false;
  if (typeof persistent !== 'boolean') {
    throw invalid(`${where} persistent must be true or false, got ${describeValue(persistent)}.`);
  }
  const clock = options.clock ?? systemClock;
  if (
    typeof clock !== 'object' ||
    clock === null ||
    typeof clock.now !== 'function' ||
    typeof clock.sleep !== 'function'
  ) {
    throw invalid(`${where} clock must have now() and sleep(ms, signal), got ${describeValue(clock)}.`);
  }
  const int = (value: unknown, fallback: number, name: string, min: number, max: number) =>
    value === undefined ? fallback : checkInteger(value, `${where} ${name}`, min, max);
  const leaseMs = int(options.leaseMs, defaults.leaseMs, 'leaseMs', 100, 3_600_000);
  return {
    url,
    redis,
    keyPrefix,
    defaultPartitions: int(
      options.defaultPartitions,
      defaults.defaultPartitions,
      'defaultPartitions',
      1,
      limits.partitions,
    ),
    maxRecordBytes: int(
      options.maxRecordBytes,
      defaults.maxRecordBytes,
      'maxRecordBytes',
      1,
      512 * 1024 * 1024,
    ),
    persistent,
    waitReplicas: int(options.waitReplicas, 0, 'waitReplicas', 0, 100),
    waitTimeoutMs: int(options.waitTimeoutMs, defaults.waitTimeoutMs, 'waitTimeoutMs', 1, 600_000),
    connectTimeoutMs: int(
      options.connectTimeoutMs,
      defaults.connectTimeoutMs,
      'connectTimeoutMs',
      0,
      600_000,
    ),
    reconnectDelayMsMax: int(
      options.reconnectDelayMsMax,
      defaults.reconnectDelayMsMax,
      'reconnectDelayMsMax',
      50,
      60_000,
    ),
    leaseMs,
    heartbeatIntervalMs: int(
      options.heartbeatIntervalMs,
      Math.max(10, Math.floor(leaseMs / 5)),
      'heartbeatIntervalMs',
      10,
      Math.max(10, Math.floor(leaseMs / 2)),
    ),
    rebalanceTimeoutMs: int(
      options.rebalanceTimeoutMs,
      defaults.rebalanceTimeoutMs,
      'rebalanceTimeoutMs',
      0,
      2_147_483_647,
    ),
    retentionIntervalMs: int(
      options.retentionIntervalMs,
      defaults.retentionIntervalMs,
      'retentionIntervalMs',
      10,
      86_400_000,
    ),
    clock,
  };
}

/** The URL with its password (if any) replaced by `***`, for messages. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    return url.replace(/\/\/([^@/]*)@/, '//***@');
  }
}
