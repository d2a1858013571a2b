/**
 * One connection to Redis (an ioredis client) behind a readiness gate: commands go out only once the connection is
 * up and the transport's scripts are loaded, so a command never waits in a client-side queue to be replayed later
 * (ioredis's offline queue and resends are off). An operation that finds the connection down waits for it up to
 * `connectTimeoutMs` and then fails with `TRANSPORT_UNAVAILABLE` naming the URL; ioredis keeps reconnecting in the
 * background (delays doubling from 50 ms up to `reconnectDelayMsMax`) for as long as the connection is open.
 */
import { Redis, type RedisOptions } from 'ioredis';
import { ErrorCode, TidingsError, isTidingsError } from '../core/errors.js';
import type { Script } from './scripts.js';

export interface ConnectionOptions {
  url: string;
  /** The URL as messages show it (password replaced). */
  shownUrl: string;
  redis: RedisOptions;
  connectTimeoutMs: number;
  reconnectDelayMsMax: number;
  /** What the connection is for, in messages: `commands`, `subscription reads`, `group notifications`. */
  role: string;
  /** Loaded (SCRIPT LOAD) on every (re)connect, before the gate opens. */
  scripts: readonly Script[];
  /** Runs on every (re)connect after the scripts are loaded and before the gate opens. */
  onConnect?: (client: Redis) => Promise<void>;
  /** For a pub/sub connection: called with each message. */
  onMessage?: (channel: string, message: string) => void;
}

type Arg = string | Buffer | number;

interface Waiter {
  resolve: () => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

/** Errors Redis replies with when it is (for now) unable to serve, as opposed to a command it refuses. */
const transientReplies = /^(OOM|BUSY|LOADING|READONLY|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|NOREPLICAS)\b/;

export class Connection {
  readonly client: Redis;
  private readonly options: ConnectionOptions;
  private usable = false;
  private closed = false;
  private waiters: Waiter[] = [];
  private lastError: Error | undefined;
  private readonly channels = new Set<string>();

  constructor(options: ConnectionOptions) {
    this.options = options;
    const max = options.reconnectDelayMsMax;
    const { replyMapping: _replyMapping, ...passed } = options.redis;
    this.client = new Redis(options.url, {
      ...passed,
      protocol: 2,
      lazyConnect: false,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      autoResubscribe: false,
      enableAutoPipelining: false,
      retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times - 1, 16), max),
    });
    this.client.on('error', (error: Error) => {
      this.lastError = error;
    });
    this.client.on('close', () => {
      this.usable = false;
    });
    this.client.on('ready', () => void this.prepare());
    if (options.onMessage !== undefined) {
      const onMessage = options.onMessage;
      this.client.on('message', (channel: string, message: string) => onMessage(channel, message));
    }
  }

  /** True while commands can be sent. */
  get isUsable(): boolean {
    return this.usable && !this.closed;
  }

  private async prepare(): Promise<void> {
    try {
      if (this.options.scripts.length > 0) {
        const pipeline = this.client.pipeline();
        for (const script of this.options.scripts) pipeline.script('LOAD', script.source);
        const results = (await pipeline.exec()) ?? [];
        for (const [error] of results) if (error) throw error;
      }
      if (this.channels.size > 0) await this.client.subscribe(...this.channels);
      await this.options.onConnect?.(this.client);
    } catch (error) {
      this.lastError = error instanceof Error ? error : new Error(String(error));
      // The connection dropped or refused the setup: the next 'ready' tries again; a refusal on a live connection
      // is retried by reconnecting.
      if (this.client.status === 'ready' && !this.closed) this.client.disconnect(true);
      return;
    }
    if (this.closed || this.client.status !== 'ready') return;
    this.usable = true;
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) {
      clearTimeout(waiter.timer);
      waiter.resolve();
    }
  }

  /**
   * Resolves once commands can be sent. Rejects with `TRANSPORT_UNAVAILABLE` naming the URL after `timeoutMs`
   * (default `connectTimeoutMs`; `Infinity` waits for as long as the connection is open), and with `CLOSED` once
   * closed.
   */
  ready(what: string, timeoutMs = this.options.connectTimeoutMs): Promise<void> {
    if (this.closed) return Promise.reject(this.closedError(what));
    if (this.usable) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, timer: undefined };
      if (Number.isFinite(timeoutMs)) {
        waiter.timer = setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          reject(this.unavailable(what, this.lastError));
        }, timeoutMs);
      }
      this.waiters.push(waiter);
    });
  }

  /** Runs `EVALSHA` (falling back to `EVAL` if the server lost the script), once the connection is ready. */
  async eval(
    what: string,
    script: Script,
    numKeys: number,
    args: readonly Arg[],
    buffers: boolean,
  ): Promise<unknown> {
    if (!this.usable || this.closed) await this.ready(what);
    const call = (command: string) =>
      buffers
        ? this.client.callBuffer(command, [
            command === 'EVALSHA' ? script.sha : script.source,
            numKeys,
            ...args,
          ])
        : this.client.call(command, [command === 'EVALSHA' ? script.sha : script.source, numKeys, ...args]);
    try {
      return await call('EVALSHA');
    } catch (error) {
      if (error instanceof Error && error.message.startsWith('NOSCRIPT')) {
        try {
          return await call('EVAL');
        } catch (retryError) {
          throw this.toError(what, retryError);
        }
      }
      throw this.toError(what, error);
    }
  }

  /** Runs a plain command once the connection is ready. */
  async command(what: string, run: (client: Redis) => Promise<unknown>): Promise<unknown> {
    if (!this.usable || this.closed) await this.ready(what);
    try {
      return await run(this.client);
    } catch (error) {
      throw this.toError(what, error);
    }
  }

  /** Subscribes to a pub/sub channel now if connected, and on every reconnect. */
  listen(channel: string): void {
    if (this.channels.has(channel)) return;
    this.channels.add(channel);
    if (this.usable) this.client.subscribe(channel).catch(() => undefined); // retried on the next connect
  }

  unlisten(channel: string): void {
    if (!this.channels.delete(channel)) return;
    if (this.usable) this.client.unsubscribe(channel).catch(() => undefined);
  }

  /** A `TidingsError` for a failed command: `TRANSPORT_UNAVAILABLE`, or `CLOSED` once closed. */
  toError(what: string, error: unknown): TidingsError {
    if (isTidingsError(error)) return error;
    if (this.closed) return this.closedError(what);
    if (isReplyError(error)) {
      const message = (error as Error).message;
      return new TidingsError(
        ErrorCode.TRANSPORT_UNAVAILABLE,
        `Redis at ${this.options.shownUrl} refused to ${what}: ${message}.` +
          (transientReplies.test(message)
            ? ' Try again once the server can serve writes (memory, replication, loading).'
            : ' Check that the server is Redis 7.0 or later and that nothing else writes the transport keys.'),
        { cause: error, url: this.options.shownUrl, retryable: transientReplies.test(message) },
      );
    }
    return this.unavailable(what, error);
  }

  private unavailable(what: string, cause: unknown): TidingsError {
    const reason = cause instanceof Error ? `: ${cause.message}` : '';
    return new TidingsError(
      ErrorCode.TRANSPORT_UNAVAILABLE,
      `Cannot ${what}: Redis at ${this.options.shownUrl} is unreachable (${this.options.role} connection` +
        `${reason}). Check that the server runs and the URL, TLS and credentials are right; the transport keeps ` +
        `reconnecting in the background.`,
      { cause, url: this.options.shownUrl },
    );
  }

  private closedError(what: string): TidingsError {
    return new TidingsError(
      ErrorCode.CLOSED,
      `Cannot ${what}: the Redis transport is closed. Create a new transport.`,
    );
  }

  /**
   * Closes the connection: pending waits reject with `CLOSED`; commands in flight get their replies if they can
   * (within a second), unless `drop` (a blocking read in flight is simply abandoned).
   */
  async close(drop = false): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.usable = false;
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) {
      clearTimeout(waiter.timer);
      waiter.reject(this.closedError('wait for the connection'));
    }
    if (this.client.status === 'ready' && !drop) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.client.quit().catch(() => undefined),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, 1_000);
        }),
      ]);
      clearTimeout(timer);
    }
    this.client.disconnect(false);
  }
}

export function isReplyError(error: unknown): boolean {
  return error instanceof Error && error.name === 'ReplyError';
}
