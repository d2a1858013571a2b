import { ErrorCode, TidingsError, describeError } from './errors.js';
import type {
  Delivery,
  StartPosition,
  SubscribeOptions,
  Subscription,
  Transport,
  TransportAdmin,
  TransportFeatures,
  TransportStores,
} from './transport.js';

/**
 * The transport `createBus()` uses when none is given: the embedded log in `dataDir`. It is loaded on first use with
 * a dynamic import, so the root entry never loads SQLite (or anything else) unless the default is actually used,
 * and a program that passes its own transport never needs better-sqlite3 installed.
 */
export function createDefaultTransport(dataDir: string | undefined): Transport {
  return new LazyLogTransport(dataDir);
}

/** What the embedded log promises; the real object's features replace these once it is loaded. */
const logFeatures: TransportFeatures = {
  persistent: true,
  consumerGroups: true,
  perKeyOrder: true,
  replayByOffset: true,
  replayByTime: true,
  nativeDelay: false,
  maxRecordBytes: 8 * 1024 * 1024,
};

class LazyLogTransport implements Transport {
  readonly name = 'log';
  readonly admin: TransportAdmin;
  readonly #dataDir: string | undefined;
  #loading: Promise<Transport> | undefined;
  #loaded: Transport | undefined;
  #closed = false;

  constructor(dataDir: string | undefined) {
    this.#dataDir = dataDir;
    const load = () => this.load();
    this.admin = {
      createTopic: async (name, config) => (await load()).admin.createTopic(name, config),
      describeTopic: async (name) => (await load()).admin.describeTopic(name),
      listTopics: async () => (await load()).admin.listTopics(),
      read: async (topic, partition, fromOffset, limit) =>
        (await load()).admin.read(topic, partition, fromOffset, limit),
      offsetForTime: async (topic, partition, timestamp) =>
        (await load()).admin.offsetForTime(topic, partition, timestamp),
      listGroups: async () => (await load()).admin.listGroups(),
      describeGroup: async (group) => (await load()).admin.describeGroup(group),
      resetOffsets: async (group, topic, to: StartPosition) =>
        (await load()).admin.resetOffsets(group, topic, to),
    };
  }

  get features(): TransportFeatures {
    return this.#loaded?.features ?? logFeatures;
  }

  get stores(): TransportStores | undefined {
    return this.#loaded?.stores;
  }

  /** Loads and opens the embedded log once; rejects with `TRANSPORT_UNAVAILABLE` saying what to install. */
  load(): Promise<Transport> {
    if (this.#closed)
      return Promise.reject(new TidingsError(ErrorCode.CLOSED, 'the bus transport is closed'));
    this.#loading ??= import('../log/index.js').then(
      (log) =>
        (this.#loaded = log.createLogTransport(
          this.#dataDir === undefined ? {} : { dataDir: this.#dataDir },
        )),
      (error: unknown) => {
        throw new TidingsError(
          ErrorCode.TRANSPORT_UNAVAILABLE,
          `the default transport, the embedded log, could not be loaded (${describeError(error)}); ` +
            `install better-sqlite3 12 (npm install better-sqlite3@12) or pass a transport to createBus`,
          { cause: error, retryable: false },
        );
      },
    );
    return this.#loading;
  }

  async publish(...args: Parameters<Transport['publish']>) {
    return (await this.load()).publish(...args);
  }

  subscribe(options: SubscribeOptions): Subscription {
    return new LazySubscription(this.load(), options);
  }

  async close(): Promise<void> {
    this.#closed = true;
    const loading = this.#loading;
    if (loading) await (await loading.catch(() => undefined))?.close();
  }
}

/** A subscription whose transport is still loading: it subscribes once the transport is there. */
class LazySubscription implements Subscription {
  readonly group: string;
  readonly closed: Promise<Error | undefined>;
  readonly #inner: Promise<Subscription>;
  #ready: Subscription | undefined;
  #closeRequested = false;

  constructor(transport: Promise<Transport>, options: SubscribeOptions) {
    this.group = options.group;
    this.#inner = transport.then((loaded) => {
      const inner = loaded.subscribe(options);
      this.#ready = inner;
      if (this.#closeRequested) void inner.close();
      return inner;
    });
    this.closed = this.#inner.then(
      (inner) => inner.closed,
      (error: unknown) => (error instanceof Error ? error : new Error(String(error))),
    );
  }

  get memberId(): string {
    return this.#ready?.memberId ?? '';
  }

  assignments() {
    return this.#ready?.assignments() ?? [];
  }

  async close(): Promise<void> {
    this.#closeRequested = true;
    const inner = await this.#inner.catch(() => undefined);
    await inner?.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  [Symbol.asyncIterator](): AsyncIterator<Delivery> {
    let iterator: AsyncIterator<Delivery> | undefined;
    const get = async () => (iterator ??= (await this.#inner)[Symbol.asyncIterator]());
    return {
      next: async () => (await get()).next(),
      return: async () => {
        await this.close();
        return { done: true, value: undefined };
      },
    };
  }
}
