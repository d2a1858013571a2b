/**
 * Options of the PostgreSQL transport: what a caller may pass, the defaults, and the one place they are validated.
 */
import type { ClientConfig } from 'pg';
import { systemClock, type Clock } from '../core/clock.js';
import { checkInteger, describeValue, invalid, limits } from './validation.js';

/** Connection settings passed through to `pg` (TLS, auth, timeouts); the URL goes in `url`. */
export type PostgresConnectionOptions = Omit<ClientConfig, 'connectionString' | 'types' | 'stream'>;

/** Options of {@link createPostgresTransport}. Only `url` (or a `PG*` environment) is needed. */
export interface PostgresTransportOptions {
  /**
   * The server, as a `postgres://user:password@host:port/database?sslmode=...` URL (parsed by `pg`, so its query
   * parameters such as `sslmode`, `sslrootcert` and `application_name` work). Default:
   * `process.env.TIDINGS_POSTGRES_URL`, else `pg`'s own defaults (the `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`,
   * `PGPASSWORD` environment variables). Error messages name it, with the password replaced by `***`.
   */
  url?: string;
  /**
   * Passed through to every `pg` client: `ssl` (a `tls.connect` options object, or `true`), `user`, `password`
   * (a string or a function returning one, for rotating credentials), `host`, `port`, `database`,
   * `application_name`, `keepAlive`, `connectionTimeoutMillis`, `statement_timeout`, ... These override what `url`
   * says. Default: `connectionTimeoutMillis` 10,000 and `keepAlive` true.
   */
  connection?: PostgresConnectionOptions;
  /**
   * The schema holding the transport's tables (created with them on first use). Every transport given the same
   * database and schema shares the same topics, offsets and groups. Lower-case letters, digits and `_`, starting
   * with a letter or `_`, at most 63 characters. Default `'tidings'`.
   */
  schema?: string;
  /** Most connections the transport opens for publishing, reading and group work (the listener is one more). Integer in [2, 100]. Default 4. */
  poolSize?: number;
  /** Partition count of topics created implicitly by `publish` or `subscribe`. Integer in [1, 10_000]. Default 4. */
  defaultPartitions?: number;
  /**
   * The largest record accepted, in bytes: value length plus the UTF-8 bytes of the key and of every header name and
   * value. Larger records are rejected with `EVENT_TOO_LARGE` before anything is written. Integer in [1, 256 MiB].
   * Default 8 MiB.
   */
  maxRecordBytes?: number;
  /**
   * Group member lease, in ms (measured by the server's clock): a member that stops heartbeating (a crashed, killed,
   * paused or disconnected process) loses its partitions to the other members this long after its last heartbeat.
   * A member stops handing out records by itself once its own lease (less a margin of min(1 s, leaseMs / 5)) has
   * passed without a renewal. Integer in [500, 3_600_000]. Default 10_000.
   */
  leaseMs?: number;
  /** How often members renew their lease (and rebalance), in ms. Integer in [50, leaseMs / 2]. Default leaseMs / 5. */
  heartbeatIntervalMs?: number;
  /**
   * How often a member with owned partitions looks for new records even without a LISTEN/NOTIFY wake-up (a safety
   * net; wake-ups normally arrive within a millisecond of the publish). Integer in [10, 60_000] ms. Default 1_000.
   */
  pollIntervalMs?: number;
  /** How often retention runs in the background, in ms. Integer in [10, 86_400_000]. Default 30_000. */
  retentionIntervalMs?: number;
  /**
   * How long a partition that moves between members waits for its previous owner to settle its outstanding
   * deliveries before the previous owner releases it anyway (fencing them), in ms. Integer in [0, 2_147_483_647].
   * Default 30_000.
   */
  rebalanceTimeoutMs?: number;
  /** Source of record timestamps, nack delays and rebalance timeouts. Leases use the server's clock. Default `systemClock`. */
  clock?: Clock;
}

export interface ResolvedOptions {
  url: string | undefined;
  /** The server as error messages name it: the URL without its password, or host:port/database. */
  displayUrl: string;
  connection: PostgresConnectionOptions;
  schema: string;
  poolSize: number;
  defaultPartitions: number;
  maxRecordBytes: number;
  leaseMs: number;
  heartbeatIntervalMs: number;
  pollIntervalMs: number;
  retentionIntervalMs: number;
  rebalanceTimeoutMs: number;
  clock: Clock;
}

const defaults = {
  schema: 'tidings',
  poolSize: 4,
  defaultPartitions: 4,
  maxRecordBytes: 8 * 1024 * 1024,
  leaseMs: 10_000,
  pollIntervalMs: 1_000,
  retentionIntervalMs: 30_000,
  rebalanceTimeoutMs: 30_000,
} as const;

const optionNames: ReadonlySet<string> = new Set([
  'url',
  'connection',
  'schema',
  'poolSize',
  'defaultPartitions',
  'maxRecordBytes',
  'leaseMs',
  'heartbeatIntervalMs',
  'pollIntervalMs',
  'retentionIntervalMs',
  'rebalanceTimeoutMs',
  'clock',
]);

const schemaPattern = /^[a-z_][a-z0-9_]{0,62}$/;

/** Validates and defaults the options once, at construction. Throws `INVALID_CONFIG`. */
export function resolveOptions(options: PostgresTransportOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null) {
    throw invalid(`createPostgresTransport takes an options object, got ${describeValue(options)}.`);
  }
  for (const key of Object.keys(options)) {
    if (!optionNames.has(key)) {
      throw invalid(
        `createPostgresTransport got unknown option '${key}'; the options are ${[...optionNames].join(', ')}. ` +
          `Check the spelling.`,
      );
    }
  }
  const url = options.url ?? process.env['TIDINGS_POSTGRES_URL'];
  if (url !== undefined && (typeof url !== 'string' || url.length === 0)) {
    throw invalid(
      `createPostgresTransport option url must be a non-empty postgres:// URL, got ${describeValue(url)}.`,
    );
  }
  if (url !== undefined && !/^postgres(ql)?:\/\//.test(url)) {
    throw invalid(
      `createPostgresTransport option url must start with postgres:// or postgresql://, got ` +
        `${describeValue(redactUrl(url))}.`,
    );
  }
  const connection = options.connection ?? {};
  if (typeof connection !== 'object' || connection === null || Array.isArray(connection)) {
    throw invalid(
      `createPostgresTransport option connection must be an object of pg client settings, got ` +
        `${describeValue(connection)}.`,
    );
  }
  const schema = options.schema ?? defaults.schema;
  if (typeof schema !== 'string' || !schemaPattern.test(schema)) {
    throw invalid(
      `createPostgresTransport option schema must be a lower-case SQL identifier (letters, digits, _; at most 63 ` +
        `characters), got ${describeValue(schema)}.`,
    );
  }
  const clock = options.clock ?? systemClock;
  if (
    typeof clock !== 'object' ||
    clock === null ||
    typeof clock.now !== 'function' ||
    typeof clock.sleep !== 'function'
  ) {
    throw invalid(
      `createPostgresTransport option clock must have now() and sleep(ms, signal), got ${describeValue(clock)}.`,
    );
  }
  const integer = (
    name: keyof PostgresTransportOptions,
    fallback: number,
    min: number,
    max: number,
  ): number => {
    const value = options[name];
    return value === undefined
      ? fallback
      : checkInteger(value, `createPostgresTransport option ${name}`, min, max);
  };
  const leaseMs = integer('leaseMs', defaults.leaseMs, 500, 3_600_000);
  return {
    url,
    displayUrl: displayUrl(url, connection),
    connection,
    schema,
    poolSize: integer('poolSize', defaults.poolSize, 2, 100),
    defaultPartitions: integer('defaultPartitions', defaults.defaultPartitions, 1, limits.partitions),
    maxRecordBytes: integer('maxRecordBytes', defaults.maxRecordBytes, 1, 256 * 1024 * 1024),
    leaseMs,
    heartbeatIntervalMs: integer(
      'heartbeatIntervalMs',
      Math.max(50, Math.floor(leaseMs / 5)),
      50,
      Math.floor(leaseMs / 2),
    ),
    pollIntervalMs: integer('pollIntervalMs', defaults.pollIntervalMs, 10, 60_000),
    retentionIntervalMs: integer('retentionIntervalMs', defaults.retentionIntervalMs, 10, 86_400_000),
    rebalanceTimeoutMs: integer('rebalanceTimeoutMs', defaults.rebalanceTimeoutMs, 0, 2_147_483_647),
    clock,
  };
}

/** The URL with its password (if any) replaced by `***`. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/?#@]*:)[^@/?#]*@/i, '$1***@');
}

function displayUrl(url: string | undefined, connection: PostgresConnectionOptions): string {
  if (url !== undefined && connection.host === undefined && connection.port === undefined)
    return redactUrl(url);
  const env = process.env;
  const host = connection.host ?? (url === undefined ? (env['PGHOST'] ?? 'localhost') : hostOf(url));
  const port = connection.port ?? (url === undefined ? Number(env['PGPORT'] ?? 5432) : portOf(url));
  const database = connection.database ?? (url === undefined ? (env['PGDATABASE'] ?? '') : databaseOf(url));
  const user = connection.user ?? (url === undefined ? env['PGUSER'] : userOf(url));
  return `postgres://${user === undefined ? '' : `${user}@`}${host}:${port}/${database}`;
}

function parsed(url: string): URL | undefined {
  try {
    return new URL(url);
  } catch {
    return undefined;
  }
}

function hostOf(url: string): string {
  return parsed(url)?.hostname || 'localhost';
}

function portOf(url: string): number {
  return Number(parsed(url)?.port || 5432);
}

function databaseOf(url: string): string {
  return decodeURIComponent(parsed(url)?.pathname.slice(1) ?? '');
}

function userOf(url: string): string | undefined {
  const user = parsed(url)?.username;
  return user ? decodeURIComponent(user) : undefined;
}
