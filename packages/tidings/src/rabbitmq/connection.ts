/**
 * One AMQP connection per transport, opened on first use and opened again after it is lost. Every user of the
 * connection (publisher, members, admin) asks for it when it needs it; members also listen for its loss to fence
 * what they owned and rejoin.
 */
import { connect, type Channel, type ChannelModel, type ConfirmChannel } from 'amqplib';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeError, ErrorCode, TidingsError } from '../core/errors.js';
import type { ResolvedOptions } from './options.js';

export class Connector {
  private current: Promise<ChannelModel> | undefined;
  private confirm: Promise<ConfirmChannel> | undefined;
  private closed = false;
  private readonly downListeners = new Set<(epoch: number) => void>();
  /** Queues known to take traffic (see `settle`), while the shared connection lasts. */
  private readonly settled = new Map<string, Promise<void>>();
  /** The connection `settle` probes on, apart from the shared one; opened again after the broker closes it. */
  private probe: Promise<ChannelModel> | undefined;
  /** Bumped every time a connection is lost; work tagged with an older epoch is stale. */
  epoch = 0;

  constructor(private readonly options: ResolvedOptions) {}

  /** The live connection, connecting first if needed. Rejects with `TRANSPORT_UNAVAILABLE` naming the URL. */
  connection(): Promise<ChannelModel> {
    if (this.closed) return Promise.reject(closedError());
    this.current ??= this.open();
    return this.current;
  }

  private async connect(): Promise<ChannelModel> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        // noDelay: a publish waits for its confirmation, so Nagle's algorithm would add ~40 ms to every one.
        connect(this.options.url, {
          timeout: this.options.connectTimeoutMs,
          noDelay: true,
          ...this.options.socketOptions,
        }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no connection within ${this.options.connectTimeoutMs} ms`)),
            this.options.connectTimeoutMs,
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async open(): Promise<ChannelModel> {
    const epoch = this.epoch;
    try {
      const model = await this.connect();
      if (this.closed || epoch !== this.epoch) {
        await model.close().catch(() => undefined);
        throw this.closed ? closedError() : new Error('connection superseded');
      }
      model.on('error', () => undefined); // 'close' follows and does the work
      ignoreFramesOnClosedChannels(model);
      model.on('close', () => this.lost(epoch));
      return model;
    } catch (error) {
      if (epoch === this.epoch) {
        this.current = undefined;
        this.confirm = undefined;
      }
      if (this.closed) throw closedError();
      throw unavailable(this.options.displayUrl, error);
    }
  }

  private lost(epoch: number): void {
    if (epoch !== this.epoch) return;
    this.epoch++;
    this.current = undefined;
    this.confirm = undefined;
    this.settled.clear();
    for (const listener of [...this.downListeners]) listener(this.epoch);
  }

  /** Called with the new epoch each time the connection is lost. Returns the unsubscribe function. */
  onDown(listener: (epoch: number) => void): () => void {
    this.downListeners.add(listener);
    return () => this.downListeners.delete(listener);
  }

  /** A new channel on the live connection, its errors absorbed (the channel's `close` event tells its users). */
  async channel(): Promise<Channel> {
    const model = await this.connection();
    try {
      const channel = await model.createChannel();
      channel.on('error', () => undefined); // its 'close' tells its users
      return channel;
    } catch (error) {
      throw unavailable(this.options.displayUrl, error);
    }
  }

  /** The shared confirm channel for publishes and commits; a new one if the previous one closed. */
  confirmChannel(): Promise<ConfirmChannel> {
    if (this.closed) return Promise.reject(closedError());
    const existing = this.confirm;
    if (existing !== undefined) return existing;
    const created = (async () => {
      const model = await this.connection();
      try {
        const channel = await model.createConfirmChannel();
        channel.on('error', () => undefined); // pending confirms fail with the close
        channel.on('close', () => {
          if (this.confirm === created) this.confirm = undefined;
        });
        channel.setMaxListeners(0);
        return channel;
      } catch (error) {
        throw unavailable(this.options.displayUrl, error);
      }
    })();
    this.confirm = created;
    created.catch(() => {
      if (this.confirm === created) this.confirm = undefined;
    });
    return created;
  }

  /** Runs `work` on a channel of its own, closed afterwards (a server error in `work` closes only that channel). */
  async withChannel<T>(work: (channel: Channel) => Promise<T>): Promise<T> {
    const channel = await this.channel();
    try {
      return await work(channel);
    } finally {
      await closeQuietly(channel);
    }
  }

  /**
   * Resolves once `queue`, a stream or quorum queue just declared (by this client or by another at the same moment),
   * takes traffic; call it between the declare and the first publish or consume on the shared connection. Each
   * queue is settled once per shared connection; concurrent calls share one settling.
   *
   * RabbitMQ answers the declare of a queue that another client is still creating as soon as its record exists,
   * before the stream has a leader or the quorum queue's Raft member runs. The first publish or consume on a
   * channel in that window is a connection-level error ("Stream not found", or an internal error in the broker),
   * which would drop the shared connection and every channel on it. So `probe` runs first on a channel of a
   * connection kept apart for this, again after a short pause until it succeeds, within `maxMs`; a probe must leave
   * the queue as it found it (a marker readers skip, or a consumer cancelled before it acknowledges anything).
   *
   * @throws {TidingsError} `TRANSPORT_UNAVAILABLE` when the queue still refuses after `maxMs`; `CLOSED` once closed.
   */
  settle(queue: string, probe: (channel: ConfirmChannel) => Promise<void>, maxMs = 10_000): Promise<void> {
    if (this.closed) return Promise.reject(closedError());
    const known = this.settled.get(queue);
    if (known !== undefined) return known;
    if (this.settled.size >= 10_000) this.settled.clear();
    const settling = this.settleNow(queue, probe, maxMs);
    this.settled.set(queue, settling);
    settling.catch(() => {
      if (this.settled.get(queue) === settling) this.settled.delete(queue);
    });
    return settling;
  }

  private async settleNow(
    queue: string,
    probe: (channel: ConfirmChannel) => Promise<void>,
    maxMs: number,
  ): Promise<void> {
    const deadline = performance.now() + maxMs;
    let pauseMs = 10;
    for (;;) {
      if (this.closed) throw closedError();
      let channel: ConfirmChannel | undefined;
      let timer: NodeJS.Timeout | undefined;
      try {
        const model = await this.probeConnection();
        const opened = await model.createConfirmChannel();
        channel = opened;
        // The channel's error (with the broker's reply code) comes before its close.
        let channelError: Error | undefined;
        opened.on('error', (error: Error) => (channelError = error));
        const closedChannel = new Promise<never>((_, reject) =>
          opened.on('close', () =>
            reject(channelError ?? new Error(`the broker closed the channel probing '${queue}'`)),
          ),
        );
        // An attempt that neither succeeds nor fails (a blocked connection, a confirm that never comes) ends at the
        // deadline like a failed one.
        const overdue = new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error('the probe got no answer')),
            Math.max(0, deadline - performance.now()),
          );
        });
        await Promise.race([probe(opened), closedChannel, overdue]);
        return;
      } catch (error) {
        if (this.closed) throw closedError();
        // Refused for good (no access, the queue gone, its arguments differ): waiting does not help.
        const final = [403, 404, 406].includes(replyCodeOf(error));
        if (final || performance.now() + pauseMs > deadline) {
          throw new TidingsError(
            ErrorCode.TRANSPORT_UNAVAILABLE,
            final
              ? `Queue '${queue}' on RabbitMQ at ${this.options.displayUrl} refused its first use: ` +
                  `${describeError(error)}. Check the user's permissions (configure, write and read) on it.`
              : `Queue '${queue}' on RabbitMQ at ${this.options.displayUrl} did not take traffic within ${maxMs} ms ` +
                  `of being declared: ${describeError(error)}.`,
            { queue, cause: error, retryable: !final },
          );
        }
      } finally {
        clearTimeout(timer);
        await closeQuietly(channel);
      }
      await sleep(pauseMs);
      pauseMs = Math.min(pauseMs * 2, 200);
    }
  }

  private probeConnection(): Promise<ChannelModel> {
    const existing = this.probe;
    if (existing !== undefined) return existing;
    const opened = this.connect().then((model) => {
      model.on('error', () => undefined);
      ignoreFramesOnClosedChannels(model);
      model.on('close', () => {
        if (this.probe === opened) this.probe = undefined;
      });
      if (this.closed) void model.close().catch(() => undefined);
      return model;
    });
    this.probe = opened;
    opened.catch(() => {
      if (this.probe === opened) this.probe = undefined;
    });
    return opened;
  }

  get url(): string {
    return this.options.displayUrl;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.epoch++;
    const current = this.current;
    this.current = undefined;
    this.confirm = undefined;
    this.downListeners.clear();
    this.settled.clear();
    const probe = this.probe;
    this.probe = undefined;
    if (probe !== undefined) await (await probe.catch(() => undefined))?.close().catch(() => undefined);
    if (current !== undefined) {
      const model = await current.catch(() => undefined);
      await model?.close().catch(() => undefined);
    }
  }
}

/**
 * RabbitMQ may still send a frame or two for a channel that was just closed (a delivery that was in flight, typically
 * from a stream consumer); amqplib treats any frame on an unknown channel as a protocol error and closes the whole
 * connection. Ignore such frames instead, as the RabbitMQ Java client does (its UnknownChannelException handling).
 */
function ignoreFramesOnClosedChannels(model: ChannelModel): void {
  const connection = model.connection as unknown as {
    accept?: (frame: { channel?: number }) => unknown;
    channels?: unknown[];
  };
  const accept = connection.accept;
  if (typeof accept !== 'function' || !Array.isArray(connection.channels)) return;
  connection.accept = function (this: typeof connection, frame: { channel?: number }) {
    const channel = frame.channel;
    if (typeof channel === 'number' && channel !== 0 && !this.channels?.[channel]) return undefined;
    return accept.call(this, frame);
  };
}

/** Closes a channel, giving up after `ms` (a close can wait forever for a broker that went away). */
export async function closeQuietly(channel: Channel | undefined, ms = 2_000): Promise<void> {
  if (channel === undefined) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    channel.close().catch(() => undefined),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
  ]);
  clearTimeout(timer);
}

/** Cancels a consumer (so that no more deliveries come), then closes its channel; both bounded in time. */
export async function cancelAndClose(
  channel: Channel | undefined,
  consumerTag: string | undefined,
): Promise<void> {
  if (channel === undefined) return;
  if (consumerTag !== undefined)
    await withTimeout(
      channel.cancel(consumerTag).catch(() => undefined),
      2_000,
    );
  await closeQuietly(channel);
}

export async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export function unavailable(url: string, cause: unknown): TidingsError {
  if (cause instanceof TidingsError) return cause;
  return new TidingsError(
    ErrorCode.TRANSPORT_UNAVAILABLE,
    `Cannot reach RabbitMQ at ${url}: ${describeError(cause)}. Check that the broker is running and that the URL, ` +
      `credentials and TLS options are right; the transport connects again on the next call.`,
    { url, cause },
  );
}

/** The AMQP reply code of an amqplib channel or connection error (e.g. 404), or 0. */
function replyCodeOf(error: unknown): number {
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'number' ? code : 0;
}

function closedError(): TidingsError {
  return new TidingsError(ErrorCode.CLOSED, 'The RabbitMQ transport is closed. Create a new transport.');
}
