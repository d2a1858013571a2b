/**
 * What one conformance case works with: uniquely named topics and groups, the clients (transports), buses,
 * consumers, subscriptions, child processes and private brokers it opened (all closed after the case), waits with
 * the case's deadline, and recorders of what handlers saw.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createBus, type Bus, type BusOptions } from '../core/bus.js';
import type { Consumer, ConsumerOptions } from '../core/consumer.js';
import { defineEvent, type EventDefinition } from '../core/define.js';
import type { HandlerContext } from '../core/handler.js';
import { describeError, isTidingsError } from '../core/errors.js';
import { silentLogger } from '../core/logger.js';
import type { StandardSchemaV1 } from '../core/schema.js';
import type {
  Delivery,
  Subscription,
  SubscribeOptions,
  Transport,
  TransportFeatures,
} from '../core/transport.js';
import { waitUntil } from '../testing/wait.js';
import type { ConformanceCase, ConformanceOptions, PrivateBroker } from './options.js';

/** The payload of every event the suite publishes: which key, which step of that key, optional padding. */
export interface Item {
  key: string;
  seq: number;
  pad?: string;
}

/** A Standard Schema for {@link Item}, written out so the suite needs no schema library. */
export const itemSchema: StandardSchemaV1<Item, Item> = {
  '~standard': {
    version: 1,
    vendor: 'tidings-conformance',
    validate(value) {
      const item = value as Partial<Item> | null;
      const ok =
        typeof item === 'object' &&
        item !== null &&
        typeof item.key === 'string' &&
        typeof item.seq === 'number' &&
        (item.pad === undefined || typeof item.pad === 'string');
      return ok
        ? { value: item as Item }
        : { issues: [{ message: 'expected { key: string, seq: number }' }] };
    },
  },
};

export type ItemEvent = EventDefinition<string, typeof itemSchema>;

/** One successful handling, as a recorder saw it. */
export interface Handled {
  member: string;
  id: string;
  key: string;
  seq: number;
  partition: number;
  offset: number;
  deliveryCount: number;
}

/** A gate handlers can be held at (to keep deliveries in flight during a rebalance or a close). */
export class Gate {
  #open = true;
  #closedBefore = false;
  #release: () => void = () => undefined;
  #opened: Promise<void> = Promise.resolve();
  /** Handlers waiting at the gate now. */
  waiting = 0;

  close(): void {
    if (!this.#open) return;
    this.#open = false;
    this.#closedBefore = true;
    this.#opened = new Promise((resolve) => (this.#release = resolve));
  }

  /** Closes the gate unless it was closed before: a gate that holds handlers once, at a chosen point. */
  closeOnce(): void {
    if (!this.#closedBefore) this.close();
  }

  open(): void {
    this.#open = true;
    this.#release();
  }

  async pass(): Promise<void> {
    if (this.#open) return;
    this.waiting++;
    await this.#opened;
    this.waiting--;
  }
}

/**
 * Records what handlers of one or more members handled, in the order handling started, and flags a key handled by
 * two handlers at once (which per-key order forbids, across members too).
 */
export class Recorder {
  readonly handled: Handled[] = [];
  /** Violations noticed while handling (a key handled twice at once). */
  readonly problems: string[] = [];
  readonly #running = new Map<string, Handled>();
  #inFlight = 0;
  /** The most handlers that ran at once. */
  maxInFlight = 0;

  /**
   * A handler for `member`: waits at `before` (if given, and its predicate holds), yields a few turns (chosen by
   * `random`) so that keys interleave, then records the event.
   */
  handler(
    member: string,
    options: {
      random?: () => number;
      before?: (item: Item, ctx: HandlerContext) => Promise<void> | void;
    } = {},
  ) {
    return async (message: { data: Item }, ctx: HandlerContext): Promise<void> => {
      const item = message.data;
      const entry: Handled = {
        member,
        id: ctx.envelope.id,
        key: item.key,
        seq: item.seq,
        partition: ctx.partition,
        offset: ctx.offset,
        deliveryCount: ctx.deliveryCount,
      };
      const other = this.#running.get(item.key);
      if (other) {
        this.problems.push(
          `key "${item.key}": seq ${item.seq} (member ${member}) started while seq ${other.seq} (member ${other.member}) was still being handled`,
        );
      }
      this.#running.set(item.key, entry);
      this.#inFlight++;
      this.maxInFlight = Math.max(this.maxInFlight, this.#inFlight);
      try {
        await options.before?.(item, ctx);
        const turns = options.random ? Math.floor(options.random() * 4) : 0;
        for (let i = 0; i < turns; i++) await new Promise<void>((resolve) => setImmediate(resolve));
        this.handled.push(entry);
      } finally {
        this.#inFlight--;
        if (this.#running.get(item.key) === entry) this.#running.delete(item.key);
      }
    };
  }

  /** Distinct event ids handled. */
  ids(member?: string): Set<string> {
    return new Set(this.handled.filter((h) => member === undefined || h.member === member).map((h) => h.id));
  }

  count(member?: string): number {
    return member === undefined
      ? this.handled.length
      : this.handled.filter((h) => h.member === member).length;
  }

  /** Every `key:seq` handled at least once. */
  steps(): Set<string> {
    return new Set(this.handled.map((h) => `${h.key}:${h.seq}`));
  }
}

/**
 * Checks per-key order in `handled` (in handling order): each key must go 0, 1, 2, ... (with `fromFirstSeen`: from
 * its first handled seq on) without gaps; going back is allowed only for a redelivery (`deliveryCount > 1`), which
 * then goes on in order from where it went back. With `redeliveries: false` any repeat is a violation. Returns the
 * violations.
 */
export function orderViolations(
  handled: readonly Handled[],
  options: { redeliveries: boolean; fromFirstSeen?: boolean },
): string[] {
  const last = new Map<string, number>();
  const problems: string[] = [];
  for (const h of handled) {
    const previous = last.get(h.key) ?? (options.fromFirstSeen ? h.seq - 1 : -1);
    if (h.seq === previous + 1) {
      last.set(h.key, h.seq);
    } else if (h.seq <= previous && options.redeliveries && h.deliveryCount > 1) {
      last.set(h.key, h.seq); // a redelivery goes back; it must then go on in order
    } else if (h.seq <= previous) {
      problems.push(
        `key "${h.key}": seq ${h.seq} handled again after seq ${previous} with deliveryCount ${h.deliveryCount} (member ${h.member}); ` +
          (options.redeliveries
            ? 'a repeat must be marked as a redelivery (deliveryCount > 1)'
            : 'no event may be delivered twice here'),
      );
    } else {
      problems.push(
        `key "${h.key}": seq ${h.seq} handled after seq ${previous} (member ${h.member}): seq ${previous + 1} was skipped or came later`,
      );
    }
    if (problems.length >= 10) break;
  }
  return problems;
}

/** A small seeded random generator (mulberry32), so the interleavings of a case repeat from run to run. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
export const bytes = (text: string): Uint8Array => encoder.encode(text);
export const text = (value: Uint8Array): string => decoder.decode(value);

/** A running raw consumer: what it received, in order. */
export interface Collected {
  readonly received: Delivery[];
  /** Resolves when the iteration ended; rejects with what ended it badly. */
  readonly done: Promise<void>;
}

/** Lines a child process printed, and its exit. */
export interface Child {
  readonly process: ChildProcess;
  readonly lines: string[];
  readonly exited: Promise<number | null>;
  stderr(): string;
}

/** The child runner next to this module: `child.ts` from sources, `child.js` once built. */
const childRunner = (() => {
  const here = fileURLToPath(import.meta.url);
  return path.join(path.dirname(here), `child${path.extname(here)}`);
})();

/** Everything one case opened, with the case's deadline. */
export class CaseContext {
  readonly caseName: ConformanceCase;
  /** A random suffix: every topic and group of the case carries it. */
  readonly id = randomBytes(4).toString('hex');
  readonly random: () => number;
  readonly #options: ConformanceOptions;
  readonly #deadline: number;
  readonly #transports: Transport[] = [];
  readonly #buses: Bus[] = [];
  readonly #consumers: Array<{ name: string; consumer: Consumer; stopped?: Error }> = [];
  readonly #subscriptions: Subscription[] = [];
  readonly #children: Child[] = [];
  readonly #brokers: PrivateBroker[] = [];
  readonly #gates: Gate[] = [];
  #first: Transport | undefined;

  constructor(caseName: ConformanceCase, options: ConformanceOptions, budgetMs: number) {
    this.caseName = caseName;
    this.#options = options;
    // Leave a little of the case's time limit for a descriptive failure before the test runner's own timeout.
    this.#deadline = performance.now() + Math.max(1_000, budgetMs - Math.min(5_000, budgetMs / 10));
    this.random = seededRandom(conformanceCaseSeed(caseName));
  }

  get options(): ConformanceOptions {
    return this.#options;
  }

  /** What is left of the case's time, in ms (at least 1). */
  remainingMs(): number {
    return Math.max(1, Math.floor(this.#deadline - performance.now()));
  }

  /** A topic name unique to this case. */
  topic(label: string): string {
    return `conf_${label}_${this.id}`;
  }

  /** A group name unique to this case. */
  group(label: string): string {
    return `g_${label}_${this.id}`;
  }

  /**
   * A client: a new transport from `create()` (closed after the case), or, for isolated instances, the case's one
   * transport every time.
   */
  async client(): Promise<Transport> {
    if (this.#options.isolatedInstances && this.#first) return this.#first;
    const transport = await this.#options.create();
    this.#transports.push(transport);
    this.#first ??= transport;
    return transport;
  }

  /** Fails the case, with what to do, when the transport says it lacks a feature the case needs. */
  requireFeature(transport: Transport, feature: keyof Omit<TransportFeatures, 'maxRecordBytes'>): void {
    if (transport.features[feature]) return;
    throw new Error(
      `transport "${this.#options.name}" declares features.${feature} = false, so it cannot pass "${this.caseName}". ` +
        `Skip the case by name with the reason: runTransportConformance({ ..., skip: { '${this.caseName}': '<why>' } })`,
    );
  }

  /** A bus on `transport` (silent, service `conformance`), closed after the case. */
  bus(transport: Transport, options: Omit<BusOptions, 'transport'> = {}): Bus {
    const bus = createBus({ service: 'conformance', logger: silentLogger, ...options, transport });
    this.#buses.push(bus);
    return bus;
  }

  /** `bus.handle`, remembering the consumer so that a wait that times out can say it stopped, and why. */
  handle(
    bus: Bus,
    group: string,
    event: ItemEvent,
    handler: (message: { data: Item }, ctx: HandlerContext) => Promise<void> | void,
    options: ConsumerOptions = {},
  ): Consumer {
    const consumer = bus.handle(group, [event], (message, ctx) => handler(message, ctx), options);
    const entry: { name: string; consumer: Consumer; stopped?: Error } = { name: group, consumer };
    void consumer.closed.then((error) => {
      if (error) entry.stopped = error;
    });
    this.#consumers.push(entry);
    return consumer;
  }

  /** A raw subscription, closed after the case. */
  subscribe(transport: Transport, options: SubscribeOptions): Subscription {
    const subscription = transport.subscribe(options);
    this.#subscriptions.push(subscription);
    return subscription;
  }

  /** Iterates `subscription` in the background, calling `settle` (default: ack) for each delivery. */
  collect(subscription: Subscription, settle: (delivery: Delivery) => void = (d) => d.ack()): Collected {
    const received: Delivery[] = [];
    const done = (async () => {
      for await (const delivery of subscription) {
        received.push(delivery);
        settle(delivery);
      }
    })();
    done.catch(() => undefined); // inspected by the case when it matters
    return { received, done };
  }

  /**
   * Closes a client as a process leaving would: its buses (and with them their consumers), then its
   * subscriptions, then the transport. For isolated instances the transport itself stays open (it is the broker).
   */
  async closeClient(transport: Transport, buses: readonly Bus[] = []): Promise<void> {
    await Promise.all(buses.map((bus) => bus.close()));
    if (this.#options.isolatedInstances) return;
    await transport.close();
  }

  /** A gate for holding handlers; every gate is opened before the case closes its consumers. */
  gate(): Gate {
    const gate = new Gate();
    this.#gates.push(gate);
    return gate;
  }

  /** A private broker (disposed after the case). */
  async privateBroker(): Promise<PrivateBroker> {
    const start = this.#options.privateBroker;
    if (!start) throw new Error('no privateBroker option');
    const broker = await start();
    this.#brokers.push(broker);
    return broker;
  }

  /** A transport on a private broker, closed after the case. */
  async brokerClient(broker: PrivateBroker): Promise<Transport> {
    const transport = await broker.create();
    this.#transports.push(transport);
    return transport;
  }

  /**
   * Starts the child runner on the transport module of `options.childProcess`, with `config` as its argument. Lines
   * it prints are collected; it is killed (SIGKILL) after the case if still running.
   */
  spawnChild(config: Record<string, unknown>): Child {
    const spec = this.#options.childProcess;
    if (!spec) throw new Error('no childProcess option');
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '--conditions=tidings-source',
        childRunner,
        JSON.stringify({ module: spec.module, exportName: spec.exportName ?? 'createTransport', ...config }),
      ],
      { cwd: process.cwd(), env: { ...process.env, ...spec.env }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const lines: string[] = [];
    let stderr = '';
    let buffered = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      buffered += chunk;
      const parts = buffered.split('\n');
      buffered = parts.pop() ?? '';
      lines.push(...parts);
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      if (stderr.length < 64 * 1024) stderr += chunk;
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const entry: Child = { process: child, lines, exited, stderr: () => stderr };
    this.#children.push(entry);
    return entry;
  }

  /**
   * Waits until `condition` holds, within the case's deadline, checking every few ms. A retryable `TidingsError`
   * thrown by `condition` (a transport call that timed out under load) counts as "not yet"; any other error fails at
   * once, naming it. On timeout it fails with `what()`, the last retryable error, and any consumer of the case that
   * stopped.
   */
  async until(condition: () => boolean | Promise<boolean>, what: () => string): Promise<void> {
    const timeoutMs = this.remainingMs();
    let transient: unknown;
    let fatal: unknown;
    const check = async (): Promise<boolean> => {
      try {
        return await condition();
      } catch (error) {
        if (isTidingsError(error) && error.retryable) {
          transient = error;
          return false;
        }
        fatal = error;
        throw error;
      }
    };
    try {
      await waitUntil(check, { timeoutMs, intervalMs: 5 });
    } catch {
      if (fatal !== undefined) {
        throw new Error(`failed while waiting until ${what()}: ${describeError(fatal)}`, { cause: fatal });
      }
      const stopped = this.#consumers
        .filter((c) => c.stopped)
        .map((c) => `; consumer of group "${c.name}" stopped: ${c.stopped?.message}`)
        .join('');
      const lastError =
        transient === undefined ? '' : `; the last check failed with ${describeError(transient)}`;
      throw new Error(`timed out after ${timeoutMs} ms waiting until ${what()}${lastError}${stopped}`);
    }
  }

  /** Awaits `promise`, failing with `what` if it has not settled by the case's deadline. */
  async within<T>(promise: Promise<T>, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeoutMs = this.remainingMs();
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not settle within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      return await Promise.race([promise, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Closes everything the case opened, in order: child processes (killed), buses, subscriptions, transports,
   * private brokers. Every step runs even if an earlier one failed; the first failure is rethrown at the end.
   */
  async dispose(): Promise<void> {
    const failures: unknown[] = [];
    const attempt = async (step: () => Promise<unknown>) => {
      try {
        await step();
      } catch (error) {
        failures.push(error);
      }
    };
    for (const gate of this.#gates) gate.open(); // a held handler would hold up its consumer's close
    for (const child of this.#children) {
      if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill('SIGKILL');
      await attempt(() => child.exited);
    }
    await Promise.all(this.#buses.map((bus) => attempt(() => bus.close())));
    await Promise.all(this.#subscriptions.map((sub) => attempt(() => sub.close())));
    await Promise.all(this.#transports.map((transport) => attempt(() => transport.close())));
    for (const broker of this.#brokers) await attempt(() => broker.dispose());
    if (failures.length > 0) throw failures[0];
  }
}

/** A stable seed per case name. */
function conformanceCaseSeed(name: string): number {
  let hash = 2_166_136_261;
  for (let i = 0; i < name.length; i++) hash = Math.imul(hash ^ name.charCodeAt(i), 16_777_619);
  return hash >>> 0;
}

/** The item event of a case, on `topic`, at schema `version`. */
export function itemEvent(topic: string, type = 'ItemRecorded', version = 1): ItemEvent {
  return defineEvent(type, { schema: itemSchema, key: 'key', topic, version, naming: 'off' });
}
