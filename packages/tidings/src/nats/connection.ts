/**
 * The transport's one NATS connection: made lazily, shared by publishers, members and the admin, and made again on
 * demand after a failed first attempt. Once connected, the client reconnects by itself for ever (publishes and
 * acknowledgements issued meanwhile wait in its reconnect buffer); this module only tracks whether the connection
 * is up, to tell `TRANSPORT_UNAVAILABLE` from other failures.
 */
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { ErrorCode, TidingsError, describeError } from '../core/errors.js';
import type { ResolvedNatsOptions } from './options.js';

/** What an open connection gives: the core connection, the JetStream client and its manager. */
export interface NatsSession {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  /** The server's `max_payload`: the largest message (headers included) it accepts, in bytes. */
  readonly maxPayload: number;
}

export class NatsConnector {
  private readonly options: ResolvedNatsOptions;
  private session: Promise<NatsSession> | undefined;
  private current: NatsSession | undefined;
  private up = false;
  private closed = false;
  private readonly onConnect: (session: NatsSession) => void;
  private readonly disconnectListeners = new Set<() => void>();

  constructor(options: ResolvedNatsOptions, onConnect: (session: NatsSession) => void) {
    this.options = options;
    this.onConnect = onConnect;
  }

  /** The URL(s) as error messages name them. */
  get url(): string {
    return this.options.servers.join(', ');
  }

  /** True while the connection is established (not before the first connect, not while reconnecting). */
  get connected(): boolean {
    return this.up;
  }

  /**
   * The open session, connecting first if needed. Rejects with `TRANSPORT_UNAVAILABLE` naming the URL when the
   * server cannot be reached (the next call tries again), and with `CLOSED` after `close()`.
   */
  get(): Promise<NatsSession> {
    if (this.closed) return Promise.reject(this.closedError());
    this.session ??= this.open().catch((error: unknown) => {
      this.session = undefined;
      throw error;
    });
    return this.session;
  }

  /** The session if connected now, without waiting. */
  peek(): NatsSession | undefined {
    return this.up ? this.current : undefined;
  }

  private async open(): Promise<NatsSession> {
    let nc: NatsConnection;
    try {
      nc = await connect({
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
        waitOnFirstConnect: false,
        noAsyncTraces: true,
        name: `tidings/${this.options.prefix}`,
        ...this.options.connection,
        servers: this.options.servers,
      });
    } catch (error) {
      throw this.unavailable(`Cannot connect to the NATS server at ${this.url}`, error);
    }
    if (this.closed) {
      await nc.close().catch(() => undefined);
      throw this.closedError();
    }
    const timeout = this.options.requestTimeoutMs;
    const js = jetstream(nc, { timeout });
    const jsm = await jetstreamManager(nc, { timeout, checkAPI: false });
    const session: NatsSession = { nc, js, jsm, maxPayload: nc.info?.max_payload ?? 1024 * 1024 };
    this.current = session;
    this.up = true;
    void this.watchStatus(nc);
    this.onConnect(session);
    return session;
  }

  private async watchStatus(nc: NatsConnection): Promise<void> {
    for await (const status of nc.status()) {
      if (status.type === 'disconnect') {
        this.up = false;
        for (const listener of [...this.disconnectListeners]) listener();
      } else if (status.type === 'reconnect') {
        this.up = true;
      }
    }
    // The iterator ends when the connection closed for good: the next `get()` connects again.
    this.up = false;
    if (this.current?.nc === nc) {
      this.current = undefined;
      this.session = undefined;
    }
  }

  /** Calls `listener` whenever the connection drops; returns the function that removes it. */
  onDisconnect(listener: () => void): () => void {
    this.disconnectListeners.add(listener);
    return () => this.disconnectListeners.delete(listener);
  }

  /** A `TRANSPORT_UNAVAILABLE` error naming the URL, with `cause`. */
  unavailable(what: string, cause: unknown): TidingsError {
    return new TidingsError(
      ErrorCode.TRANSPORT_UNAVAILABLE,
      `${what}: ${describeError(cause)}. Check that nats-server (with JetStream: -js) runs and is reachable at ` +
        `${this.url}; Tidings connects again on the next call and reconnects by itself once connected.`,
      { url: this.url, cause },
    );
  }

  closedError(): TidingsError {
    return new TidingsError(
      ErrorCode.CLOSED,
      `The NATS transport (${this.url}) is closed. Create a new transport.`,
      { url: this.url },
    );
  }

  /** Flushes pending writes (acknowledgements) and closes the connection. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const session = await this.session?.catch(() => undefined);
    this.session = undefined;
    this.up = false;
    if (session === undefined) return;
    if (!session.nc.isClosed()) {
      await Promise.race([
        session.nc.flush().catch(() => undefined),
        new Promise((resolve) => setTimeout(resolve, this.options.requestTimeoutMs).unref()),
      ]);
      await session.nc.close().catch(() => undefined);
    }
  }
}
