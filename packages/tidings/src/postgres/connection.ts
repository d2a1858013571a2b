/**
 * Connections to the server: the pool every query goes through, the LISTEN connection that receives wake-ups, and
 * how `pg`'s errors become `TidingsError`s that name the server.
 */
import pg from 'pg';
import { ErrorCode, TidingsError, isTidingsError } from '../core/errors.js';
import type { ResolvedOptions } from './options.js';

/** Parses `bigint` (oid 20) as a JS number: offsets, timestamps and byte counts stay below 2^53. */
const parseBigint = (value: string): number => Number(value);
const types: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary'): unknown =>
    oid === 20 && format !== 'binary'
      ? parseBigint
      : (pg.types.getTypeParser(oid, format ?? 'text') as unknown)) as pg.CustomTypesConfig['getTypeParser'],
};

/** The client settings shared by the pool and the listener. */
export function clientConfig(options: ResolvedOptions): pg.ClientConfig {
  const config: pg.ClientConfig = {
    connectionTimeoutMillis: 10_000,
    keepAlive: true,
    application_name: 'tidings',
    ...options.connection,
    types,
  };
  if (options.url !== undefined) config.connectionString = options.url;
  return config;
}

/** A pool of at most `max` connections (default `poolSize`). */
export function createPool(options: ResolvedOptions, max = options.poolSize): pg.Pool {
  const pool = new pg.Pool({
    ...clientConfig(options),
    max,
    idleTimeoutMillis: 30_000,
    allowExitOnIdle: true,
  });
  // An idle pooled connection that breaks (the server restarted) is dropped by the pool; the next query opens a new
  // one. Without a listener the error would crash the process.
  pool.on('error', () => {});
  return pool;
}

const connectionCodes: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  // PostgreSQL: the server is shutting down, crashed, starting up, or out of connections.
  '57P01',
  '57P02',
  '57P03',
  '53300',
]);

const connectionMessages = [
  'Connection terminated',
  'connection error',
  'not queryable',
  'timeout expired',
  'Query read timeout',
  'Client was closed',
  'the database system is',
];

/** True when `error` says the server could not be reached or the connection broke (SQLSTATE class 08 too). */
export function isConnectionError(error: unknown): boolean {
  if (isTidingsError(error)) return error.code === ErrorCode.TRANSPORT_UNAVAILABLE;
  if (typeof error !== 'object' || error === null) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && (connectionCodes.has(code) || code.startsWith('08'))) return true;
  if (error instanceof AggregateError) return error.errors.some(isConnectionError);
  const message = error instanceof Error ? error.message : '';
  return connectionMessages.some((part) => message.includes(part));
}

/** True for errors that a retry of the same work can clear: a broken connection, a deadlock, a serialization failure. */
export function isTransient(error: unknown): boolean {
  if (isConnectionError(error)) return true;
  const code = (error as { code?: unknown } | null)?.code;
  return code === '40P01' || code === '40001' || code === '55P03';
}

/** The `TRANSPORT_UNAVAILABLE` error for a connection failure while doing `what`. */
export function unavailable(displayUrl: string, what: string, cause: unknown): TidingsError {
  if (isTidingsError(cause, ErrorCode.TRANSPORT_UNAVAILABLE)) return cause;
  return new TidingsError(
    ErrorCode.TRANSPORT_UNAVAILABLE,
    `Cannot ${what}: the PostgreSQL server at ${displayUrl} is unreachable or dropped the connection ` +
      `(${describeCause(cause)}). Check that it is running and reachable; the transport reconnects by itself once ` +
      `it is back.`,
    { cause, url: displayUrl },
  );
}

export function describeCause(error: unknown): string {
  if (error instanceof AggregateError && error.errors.length > 0) return describeCause(error.errors[0]);
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    const message = error.message || error.name;
    return typeof code === 'string' && !message.includes(code) ? `${code}: ${message}` : message;
  }
  return String(error);
}

/**
 * The LISTEN connection: one per transport while it has members. Delivers each notification payload on `channel`
 * to `onMessage`; after a broken connection it reconnects with backoff (100 ms doubling to 2 s). It calls `onConnect`
 * each time the LISTEN is in place, since notifications sent while it was away are lost.
 */
export class Listener {
  private client: pg.Client | undefined;
  private running = false;
  private connecting = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private backoffMs = 100;

  constructor(
    private readonly config: pg.ClientConfig,
    private readonly channel: string,
    private readonly onMessage: (payload: string) => void,
    private readonly onConnect: () => void,
  ) {}

  /** Whether the LISTEN is in place now. */
  get connected(): boolean {
    return this.client !== undefined;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    void this.connect();
  }

  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const client = this.client;
    this.client = undefined;
    if (client !== undefined) await client.end().catch(() => {});
  }

  private async connect(): Promise<void> {
    if (!this.running || this.connecting || this.client !== undefined) return;
    this.connecting = true;
    const client = new pg.Client(this.config);
    let broken = false;
    const onBroken = () => {
      if (broken) return;
      broken = true;
      if (this.client === client) this.client = undefined;
      void client.end().catch(() => {});
      this.scheduleRetry();
    };
    client.on('error', onBroken);
    client.on('end', onBroken);
    client.on('notification', (message) => {
      if (message.channel === this.channel && message.payload !== undefined) this.onMessage(message.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${pg.escapeIdentifier(this.channel)}`);
      if (broken) return;
      if (!this.running) {
        await client.end().catch(() => {});
        return;
      }
      this.client = client;
      this.backoffMs = 100;
      this.onConnect();
    } catch {
      onBroken();
    } finally {
      this.connecting = false;
    }
  }

  private scheduleRetry(): void {
    if (!this.running || this.retryTimer !== undefined) return;
    const delayMs = this.backoffMs;
    this.backoffMs = Math.min(2_000, this.backoffMs * 2);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.connect();
    }, delayMs);
    this.retryTimer.unref();
  }
}
