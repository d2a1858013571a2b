/**
 * The registry: one stream of JSON records listing every topic (name, partition count, retention) and every group.
 * AMQP 0-9-1 cannot list queues without the management plugin, so `listTopics`, `listGroups` and the partition count
 * of a topic come from here. The first record of a topic wins: a concurrent create with another partition count
 * reads it back and gets `CONFLICT`.
 */
import { ErrorCode, TidingsError } from '../core/errors.js';
import type { TopicConfig } from '../core/transport.js';
import type { Connector } from './connection.js';
import type { Names } from './names.js';
import { declareStream, publishConfirmed, readToMarker, settleOwnStream, settleQueue } from './streams.js';

export interface TopicEntry extends TopicConfig {
  name: string;
}

interface RegistryRecord {
  kind: 'topic' | 'group';
  name: string;
  /** For a group: topics it consumes (so that its offset queues can be found). */
  topics?: string[];
  partitions?: number;
  retentionMs?: number;
  retentionBytes?: number;
}

export interface RegistryView {
  topics: Map<string, TopicEntry>;
  groups: Set<string>;
  /** Topics each group was registered with. */
  groupTopics: Map<string, Set<string>>;
}

export class Registry {
  /** Topics known to exist (a topic never changes its partition count, so this never goes stale). */
  private readonly topics = new Map<string, TopicEntry>();
  private readonly groups = new Set<string>();
  private readonly notedGroups = new Set<string>();
  private declaredEpoch = -1;
  private readonly creating = new Map<string, Promise<TopicEntry>>();

  constructor(
    private readonly connector: Connector,
    private readonly names: Names,
  ) {}

  private async declare(): Promise<void> {
    const epoch = this.connector.epoch;
    if (this.declaredEpoch === epoch) return;
    await this.connector.withChannel((channel) => declareStream(channel, this.names.registry));
    await settleOwnStream(this.connector, this.names.registry);
    this.declaredEpoch = epoch;
  }

  /** Everything registered, read exactly up to now. */
  async read(): Promise<RegistryView> {
    await this.declare();
    const view: RegistryView = { topics: new Map(), groups: new Set(), groupTopics: new Map() };
    await readToMarker(this.connector, this.names.registry, 'first', (body) => {
      const record = body as Partial<RegistryRecord>;
      if (typeof record.name !== 'string') return;
      if (record.kind === 'topic' && typeof record.partitions === 'number') {
        if (view.topics.has(record.name)) return;
        const entry: TopicEntry = { name: record.name, partitions: record.partitions };
        if (typeof record.retentionMs === 'number') entry.retentionMs = record.retentionMs;
        if (typeof record.retentionBytes === 'number') entry.retentionBytes = record.retentionBytes;
        view.topics.set(record.name, entry);
      } else if (record.kind === 'group') {
        view.groups.add(record.name);
        const topics = view.groupTopics.get(record.name) ?? new Set<string>();
        for (const topic of Array.isArray(record.topics) ? record.topics : []) topics.add(String(topic));
        view.groupTopics.set(record.name, topics);
      }
    });
    for (const [name, entry] of view.topics) this.topics.set(name, entry);
    for (const group of view.groups) this.groups.add(group);
    return view;
  }

  /** The topic's registration, or undefined if it was never created. */
  async topic(name: string): Promise<TopicEntry | undefined> {
    return this.topics.get(name) ?? (await this.read()).topics.get(name);
  }

  cachedTopic(name: string): TopicEntry | undefined {
    return this.topics.get(name);
  }

  /** Whether the group was ever registered. */
  async hasGroup(name: string): Promise<boolean> {
    return this.groups.has(name) || (await this.read()).groups.has(name);
  }

  /** The topic, created with `config` if it does not exist yet. */
  ensureTopic(name: string, config: TopicConfig): Promise<TopicEntry> {
    const known = this.topics.get(name);
    if (known !== undefined) return Promise.resolve(known);
    let pending = this.creating.get(name);
    if (pending === undefined) {
      pending = this.create(name, config, false).finally(() => this.creating.delete(name));
      this.creating.set(name, pending);
    }
    return pending;
  }

  /**
   * Creates the topic: its exchange, one stream per partition bound to it by partition number, then the registry
   * record. Resolves with the registration that won; with `strict`, rejects with `CONFLICT` when it has another
   * partition count than `config`.
   */
  async create(name: string, config: TopicConfig, strict: boolean): Promise<TopicEntry> {
    const existing = await this.topic(name);
    if (existing !== undefined) return this.check(existing, config, strict);
    const exchange = this.names.topicExchange(name);
    const args: Record<string, unknown> = {};
    if (config.retentionMs !== undefined)
      args['x-max-age'] = `${Math.max(1, Math.ceil(config.retentionMs / 1000))}s`;
    if (config.retentionBytes !== undefined) args['x-max-length-bytes'] = config.retentionBytes;
    if (config.retentionMs !== undefined || config.retentionBytes !== undefined) {
      // Retention drops whole segments: keep them small so that it acts at a useful granularity.
      args['x-stream-max-segment-size-bytes'] = Math.max(
        64 * 1024,
        Math.min(
          config.retentionBytes === undefined ? 8 * 1024 * 1024 : Math.floor(config.retentionBytes / 4),
          8 * 1024 * 1024,
        ),
      );
    }
    await this.connector.withChannel(async (channel) => {
      await channel.assertExchange(exchange, 'direct', { durable: true });
      const partitions = Array.from({ length: config.partitions }, (_, partition) => partition);
      await Promise.all(
        partitions.map(async (partition) => {
          const stream = this.names.partitionStream(name, partition);
          await declareStream(channel, stream, args);
          await settleQueue(this.connector, stream, 'stream');
          await channel.bindQueue(stream, exchange, String(partition));
        }),
      );
    });
    const record: RegistryRecord = { kind: 'topic', name, partitions: config.partitions };
    if (config.retentionMs !== undefined) record.retentionMs = config.retentionMs;
    if (config.retentionBytes !== undefined) record.retentionBytes = config.retentionBytes;
    await this.append(record);
    const winner = (await this.read()).topics.get(name);
    if (winner === undefined) {
      throw new TidingsError(
        ErrorCode.PUBLISH_FAILED,
        `Topic '${name}' was registered on RabbitMQ at ${this.connector.url} but cannot be read back from the ` +
          `registry stream '${this.names.registry}'. Try again.`,
        { topic: name },
      );
    }
    return this.check(winner, config, strict);
  }

  private check(existing: TopicEntry, config: TopicConfig, strict: boolean): TopicEntry {
    if (strict && existing.partitions !== config.partitions) {
      throw new TidingsError(
        ErrorCode.CONFLICT,
        `Topic '${existing.name}' already exists with ${existing.partitions} partitions, not ${config.partitions}; ` +
          `the partition count is fixed at creation. Use ${existing.partitions} partitions or another topic name.`,
        { topic: existing.name, partitions: existing.partitions, requestedPartitions: config.partitions },
      );
    }
    return existing;
  }

  /** Registers the group with its topics (once per transport), so that `listGroups` finds it. */
  async noteGroup(name: string, topics: readonly string[] = []): Promise<void> {
    const key = JSON.stringify([name, ...[...topics].sort()]);
    if (this.notedGroups.has(key)) return;
    await this.append({ kind: 'group', name, topics: [...topics] });
    this.notedGroups.add(key);
    this.groups.add(name);
  }

  private async append(record: RegistryRecord): Promise<void> {
    await this.declare();
    const channel = await this.connector.confirmChannel();
    await publishConfirmed(channel, '', this.names.registry, Buffer.from(JSON.stringify(record)), {
      persistent: true,
      contentType: 'application/json',
    });
  }
}
