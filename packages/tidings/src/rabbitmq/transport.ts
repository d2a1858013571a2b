/**
 * The RabbitMQ transport: wiring of the connection, registry, publisher, members and admin. See
 * {@link createRabbitMqTransport} for what it promises; docs/transports/rabbitmq.md for how it maps onto the broker.
 */
import { ErrorCode, TidingsError } from '../core/errors.js';
import type {
  OutgoingRecord,
  PublishAck,
  SubscribeOptions,
  Subscription,
  Transport,
  TransportAdmin,
  TransportFeatures,
} from '../core/transport.js';
import { RabbitMqAdmin } from './admin.js';
import { Connector } from './connection.js';
import { RabbitMqMember } from './member.js';
import { Names } from './names.js';
import { resolveOptions, type RabbitMqTransportOptions, type ResolvedOptions } from './options.js';
import { Publisher } from './publisher.js';
import { Registry } from './registry.js';
import { checkSubscribeOptions } from './validation.js';

/** The transport returned by {@link createRabbitMqTransport}. */
export interface RabbitMqTransport extends Transport {
  /** The broker URL, password removed, as error messages name it. */
  readonly url: string;
  /**
   * Opens the connection now (otherwise the first call opens it). Rejects with `TRANSPORT_UNAVAILABLE`, naming the
   * URL, if the broker cannot be reached; a later call tries again.
   */
  connect(): Promise<void>;
}

/**
 * Creates a transport over RabbitMQ 3.9+ with streams (AMQP 0-9-1, amqplib; no plugin needed).
 *
 * - Each topic partition is a stream; `publish` routes each record by `partitionForKey` through the topic's direct
 *   exchange and resolves once the broker confirmed every record (publisher confirms: written to the stream's log
 *   on the broker, see the docs for what that survives) and the transport read back its offset.
 * - A group's position in a partition lives in a quorum queue with a single active consumer: the active consumer is
 *   the partition's owner, so one member at a time consumes a partition and records of one key reach the group in
 *   order; when the owner leaves, crashes or loses its connection the broker hands the partition to the next member.
 * - Members find each other through announcements on a group stream; each assigns itself partitions round-robin by
 *   join order and waits on their offset queues.
 * - The connection is opened lazily and again after it is lost: a publish or admin call while the broker is down
 *   rejects with `TRANSPORT_UNAVAILABLE` naming the URL; subscriptions retry in the background and resume from the
 *   committed positions.
 *
 * Throws `INVALID_CONFIG` for unknown or out-of-range options.
 */
export function createRabbitMqTransport(options: RabbitMqTransportOptions): RabbitMqTransport {
  return new RabbitMqTransportImpl(resolveOptions(options));
}

class RabbitMqTransportImpl implements RabbitMqTransport {
  readonly name = 'rabbitmq';
  readonly features: TransportFeatures;
  readonly admin: TransportAdmin;
  readonly url: string;
  private readonly connector: Connector;
  private readonly names: Names;
  private readonly registry: Registry;
  private readonly publisher: Publisher;
  private readonly members = new Set<RabbitMqMember>();
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(private readonly options: ResolvedOptions) {
    this.url = options.displayUrl;
    this.connector = new Connector(options);
    this.names = new Names(options.namePrefix);
    this.registry = new Registry(this.connector, this.names);
    this.publisher = new Publisher(this.connector, this.names, this.registry, options);
    this.admin = new RabbitMqAdmin(
      this.connector,
      this.names,
      this.registry,
      options,
      () => this.closed,
      (group) =>
        [...this.members]
          .filter((member) => member.group === group && member.live)
          .map((member) => member.announcement()),
    );
    this.features = Object.freeze({
      persistent: true,
      consumerGroups: true,
      perKeyOrder: true,
      replayByOffset: true,
      replayByTime: true,
      nativeDelay: false,
      maxRecordBytes: options.maxRecordBytes,
    });
  }

  async connect(): Promise<void> {
    await this.connector.connection();
  }

  publish(
    topic: string,
    records: readonly OutgoingRecord[],
    options?: { signal?: AbortSignal },
  ): Promise<PublishAck[]> {
    return this.publisher.publish(topic, records, options?.signal);
  }

  subscribe(options: SubscribeOptions): Subscription {
    const checked = checkSubscribeOptions(options);
    if (this.closed) {
      throw new TidingsError(
        ErrorCode.CLOSED,
        `Cannot subscribe group '${checked.group}': the RabbitMQ transport is closed. Create a new transport.`,
        { group: checked.group },
      );
    }
    const member = new RabbitMqMember(
      {
        connector: this.connector,
        names: this.names,
        registry: this.registry,
        options: this.options,
        forget: (closed) => this.members.delete(closed),
      },
      checked,
    );
    this.members.add(member);
    return member;
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      await Promise.all([...this.members].map((member) => member.close().catch(() => undefined)));
      this.publisher.close();
      await this.connector.close();
    })();
    return this.closing;
  }
}
