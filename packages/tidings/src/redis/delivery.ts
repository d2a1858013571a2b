/** The {@link Delivery} objects of the Redis transport. */
import { ErrorCode, TidingsError } from '../core/errors.js';
import type { Delivery } from '../core/transport.js';
import type { Entry } from './codec.js';
import { describeValue } from './validation.js';

/** What settles a delivery: its group member. */
export interface Settler<P> {
  readonly group: string;
  settle(delivery: RedisDelivery<P>, delayMs: number | undefined): void;
}

/**
 * A record handed to the application, settled once with `ack` or `nack`. A class rather than an object of closures:
 * one allocation per delivery. `ack` and `nack` are methods: call them on the delivery.
 */
export class RedisDelivery<P> implements Delivery {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
  readonly key: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly value: Uint8Array;
  readonly timestamp: number;
  readonly deliveryCount: number;
  readonly #settler: Settler<P>;
  readonly #owned: P;
  readonly #id: string;
  #settled = false;

  constructor(settler: Settler<P>, owned: P, entry: Entry, count: number) {
    this.topic = entry.topic;
    this.partition = entry.partition;
    this.offset = entry.offset;
    this.key = entry.key;
    this.headers = entry.headers;
    this.value = entry.value;
    this.timestamp = entry.timestamp;
    this.deliveryCount = count;
    this.#settler = settler;
    this.#owned = owned;
    this.#id = entry.id;
  }

  /** The member's state of the partition, as it was when the record was handed out. */
  get lp(): P {
    return this.#owned;
  }

  /** The stream entry id. */
  get id(): string {
    return this.#id;
  }

  /** The delivery count this delivery was handed out with. */
  get count(): number {
    return this.deliveryCount;
  }

  get settled(): boolean {
    return this.#settled;
  }

  set settled(value: boolean) {
    this.#settled = value;
  }

  ack(): void {
    this.#settler.settle(this, undefined);
  }

  nack(options?: { delayMs?: number }): void {
    const delayMs: unknown = options?.delayMs ?? 0;
    if (typeof delayMs !== 'number' || !Number.isFinite(delayMs) || delayMs < 0) {
      throw new TidingsError(
        ErrorCode.INVALID_CONFIG,
        `nack of offset ${this.offset} in topic '${this.topic}' partition ${this.partition} got delayMs ` +
          `${describeValue(delayMs)}; pass a finite number of milliseconds >= 0. The record was not settled.`,
        { topic: this.topic, partition: this.partition, offset: this.offset, group: this.#settler.group },
      );
    }
    this.#settler.settle(this, delayMs);
  }
}
