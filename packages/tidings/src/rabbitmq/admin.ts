/**
 * Admin over AMQP 0-9-1 alone (no management plugin): topics and groups come from the registry stream, offsets and
 * records from reading the partition streams, live members from the group streams, committed positions from the
 * owners' announcements or, for a partition nobody owns, from its offset queue.
 */
import { ErrorCode, TidingsError } from '../core/errors.js';
import {
  readLimitMax,
  type GroupDescription,
  type PartitionLag,
  type StartPosition,
  type StoredRecord,
  type TopicConfig,
  type TopicDescription,
  type TransportAdmin,
} from '../core/transport.js';
import { decodeRecord, timestampOf } from './codec.js';
import { unavailable, type Connector } from './connection.js';
import { MembershipView, type Announcement, type MemberState, type OwnedPartition } from './membership.js';
import type { Names } from './names.js';
import type { ResolvedOptions } from './options.js';
import { laterCommit, parseCommit, type Commit, type Position } from './positions.js';
import type { Registry, TopicEntry } from './registry.js';
import { publishConfirmed, readToMarker, scanStream, settleOwnStream, settleQueue } from './streams.js';
import {
  checkInteger,
  checkName,
  checkNumber,
  checkStartPosition,
  describeValue,
  invalid,
  limits,
} from './validation.js';

/** How long a `describeGroup` result is reused, in ms. */
const describeCacheMs = 150;

export class RabbitMqAdmin implements TransportAdmin {
  private readonly described = new Map<
    string,
    { at: number | undefined; result: Promise<GroupDescription> }
  >();

  constructor(
    private readonly connector: Connector,
    private readonly names: Names,
    private readonly registry: Registry,
    private readonly options: ResolvedOptions,
    private readonly isClosed: () => boolean,
    /** Announcements of this transport's own live members of a group: known at once, before the broker has them. */
    private readonly localMembers: (group: string) => Announcement[] = () => [],
  ) {}

  private open(): void {
    if (this.isClosed()) {
      throw new TidingsError(
        ErrorCode.CLOSED,
        'The RabbitMQ transport is closed; its admin is no longer available.',
      );
    }
  }

  async createTopic(name: string, config: TopicConfig): Promise<void> {
    this.open();
    checkName(name, 'topic', limits.topicNameLength);
    if (typeof config !== 'object' || config === null) {
      throw invalid(
        `createTopic('${name}') needs a config object with partitions, got ${describeValue(config)}.`,
        {
          topic: name,
        },
      );
    }
    const checked: TopicConfig = {
      partitions: checkInteger(config.partitions, `partitions of topic '${name}'`, 1, limits.partitions),
    };
    if (config.retentionMs !== undefined) {
      checked.retentionMs = checkNumber(config.retentionMs, `retentionMs of topic '${name}'`, 1);
    }
    if (config.retentionBytes !== undefined) {
      checked.retentionBytes = checkInteger(
        config.retentionBytes,
        `retentionBytes of topic '${name}'`,
        1,
        Number.MAX_SAFE_INTEGER,
      );
    }
    await this.registry.create(name, checked, true);
  }

  private async topicOrThrow(name: string): Promise<TopicEntry> {
    this.open();
    checkName(name, 'topic', limits.topicNameLength);
    const entry = await this.registry.topic(name);
    if (entry === undefined) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `Topic '${name}' does not exist on RabbitMQ at ${this.connector.url}. Create it with admin.createTopic, or ` +
          `publish to it, first.`,
        { topic: name },
      );
    }
    return entry;
  }

  private async partitionOrThrow(topic: string, partition: number): Promise<TopicEntry> {
    const entry = await this.topicOrThrow(topic);
    if (!Number.isInteger(partition) || partition < 0) {
      throw invalid(`Partition ${describeValue(partition)} of topic '${topic}' is not an integer >= 0.`, {
        topic,
      });
    }
    if (partition >= entry.partitions) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `Topic '${topic}' has no partition ${partition}; it has partitions 0 to ${entry.partitions - 1}.`,
        { topic, partition },
      );
    }
    return entry;
  }

  async describeTopic(name: string): Promise<TopicDescription> {
    const entry = await this.topicOrThrow(name);
    const partitionOffsets = await Promise.all(
      Array.from({ length: entry.partitions }, async (_, partition) => ({
        partition,
        ...(await this.bounds(name, partition)),
      })),
    );
    return { ...entry, name, partitionOffsets };
  }

  async listTopics(): Promise<string[]> {
    this.open();
    return [...(await this.registry.read()).topics.keys()].sort();
  }

  /** The first stored offset and the offset the next record gets (read from the stream's first and last chunks). */
  async bounds(topic: string, partition: number): Promise<{ lowOffset: number; highOffset: number }> {
    const stream = this.names.partitionStream(topic, partition);
    const scan = {
      firstWaitMs: this.options.readIdleMs * 3,
      idleMs: this.options.readIdleMs,
      prefetch: 2_000,
      maxMs: 30_000,
    };
    let low: number | undefined;
    let last: number | undefined;
    await Promise.all([
      scanStream(this.connector, stream, 'first', scan, (_, offset) => {
        low = offset;
        return true;
      }),
      scanStream(this.connector, stream, 'last', scan, (_, offset) => {
        last = Math.max(last ?? -1, offset);
      }),
    ]);
    const highOffset = last === undefined ? (low ?? 0) : last + 1;
    return { lowOffset: Math.min(low ?? highOffset, highOffset), highOffset };
  }

  async read(topic: string, partition: number, fromOffset: number, limit: number): Promise<StoredRecord[]> {
    await this.partitionOrThrow(topic, partition);
    checkInteger(fromOffset, `fromOffset for read of topic '${topic}'`, 0, Number.MAX_SAFE_INTEGER);
    checkInteger(limit, `limit for read of topic '${topic}'`, 1, readLimitMax);
    const records: StoredRecord[] = [];
    await scanStream(
      this.connector,
      this.names.partitionStream(topic, partition),
      fromOffset,
      {
        firstWaitMs: this.options.readIdleMs * 3,
        idleMs: this.options.readIdleMs,
        prefetch: Math.min(limit, 2_000),
        maxMs: 60_000,
      },
      (message, offset) => {
        if (offset < fromOffset) return false;
        const record = decodeRecord(topic, partition, offset, message);
        records.push({ ...record, value: new Uint8Array(record.value) });
        return records.length >= limit;
      },
    );
    return records;
  }

  async offsetForTime(topic: string, partition: number, timestamp: number): Promise<number> {
    await this.partitionOrThrow(topic, partition);
    if (typeof timestamp !== 'number' || Number.isNaN(timestamp)) {
      throw invalid(
        `offsetForTime on topic '${topic}' needs a timestamp in ms, got ${describeValue(timestamp)}.`,
        {
          topic,
        },
      );
    }
    return this.resolveTime(topic, partition, timestamp);
  }

  private async resolveTime(topic: string, partition: number, timestamp: number): Promise<number> {
    let found: number | undefined;
    let runningMax = -Infinity;
    await scanStream(
      this.connector,
      this.names.partitionStream(topic, partition),
      timestamp <= 0 ? 'first' : { timestamp },
      {
        firstWaitMs: this.options.readIdleMs * 3,
        idleMs: this.options.readIdleMs,
        prefetch: 2_000,
        maxMs: 60_000,
      },
      (message, offset) => {
        runningMax = Math.max(runningMax, timestampOf(message));
        if (runningMax >= timestamp) {
          found = offset;
          return true;
        }
        return false;
      },
    );
    return found ?? (await this.bounds(topic, partition)).highOffset;
  }

  async listGroups(): Promise<string[]> {
    this.open();
    return [...(await this.registry.read()).groups].sort();
  }

  /** Every announcement on the group stream (it keeps an hour), applied in order. */
  private async groupView(
    group: string,
  ): Promise<{ live: MemberState[]; topics: Set<string>; last: Map<string, number | null> }> {
    const view = new MembershipView(this.options.memberLeaseMs);
    const topics = new Set<string>();
    /** The last committed offset any owner announced, per partition key. */
    const last = new Map<string, number | null>();
    const stream = this.names.groupStream(group);
    const exists = await this.queueInfo(stream);
    if (exists !== undefined) {
      await settleOwnStream(this.connector, stream);
      // Announcements older than a lease say nothing about who is live; the group's topics are in the registry.
      const since = { timestamp: Date.now() - this.options.memberLeaseMs - 2_000 };
      await readToMarker(this.connector, stream, since, (body) => {
        const announcement = body as Announcement;
        view.apply(announcement);
        for (const topic of announcement.topics ?? []) topics.add(topic);
        for (const owned of announcement.owned ?? [])
          last.set(`${owned.topic}\u0000${owned.partition}`, owned.committed);
      });
    }
    return { live: view.live(), topics, last };
  }

  /**
   * Describing a group reads several streams, so concurrent calls share one reading, and a result is reused for
   * {@link describeCacheMs}: callers that poll (waiting for lag 0, `Consumer.waitFor`) see it at most that much late.
   */
  async describeGroup(group: string): Promise<GroupDescription> {
    const cached = this.described.get(group);
    const now = performance.now();
    if (cached !== undefined && (cached.at === undefined || now - cached.at < describeCacheMs))
      return cached.result;
    const entry: { at: number | undefined; result: Promise<GroupDescription> } = {
      at: undefined,
      // A channel or connection lost while reading is TRANSPORT_UNAVAILABLE (retryable), for every caller sharing it.
      result: this.describeGroupNow(group).catch((error: unknown) => {
        throw isChannelLoss(error) ? unavailable(this.connector.url, error) : error;
      }),
    };
    this.described.set(group, entry);
    try {
      const result = await entry.result;
      entry.at = performance.now();
      return result;
    } catch (error) {
      if (this.described.get(group) === entry) this.described.delete(group);
      throw error;
    } finally {
      if (this.described.size > 1_000) this.described.clear();
    }
  }

  private async describeGroupNow(group: string): Promise<GroupDescription> {
    this.open();
    checkName(group, 'group', limits.groupNameLength);
    const local = this.localMembers(group);
    if (local.length === 0 && !(await this.registry.hasGroup(group))) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `Group '${group}' does not exist on RabbitMQ at ${this.connector.url}: no member ever subscribed with it and ` +
          `no offsets were reset for it. Check the group name.`,
        { group },
      );
    }
    const { live: remote, topics, last } = await this.groupView(group);
    const localIds = new Set(local.map((announcement) => announcement.member));
    const live: Array<Pick<MemberState, 'member' | 'owned' | 'assigned'>> = [
      ...remote.filter((member) => !localIds.has(member.member)),
      ...local.map((announcement) => ({
        member: announcement.member,
        owned: announcement.owned ?? [],
        assigned: announcement.assigned ?? [],
      })),
    ];
    for (const announcement of local) for (const topic of announcement.topics ?? []) topics.add(topic);
    if (local.length === 0) {
      for (const topic of (await this.registry.read()).groupTopics.get(group) ?? []) topics.add(topic);
    }
    const owned = new Map<string, OwnedPartition>();
    for (const member of live)
      for (const entry of member.owned) owned.set(`${entry.topic}\u0000${entry.partition}`, entry);
    const lag: PartitionLag[] = [];
    for (const topic of [...topics].sort()) {
      const entry = await this.registry.topic(topic);
      if (entry === undefined) continue;
      const rows = await Promise.all(
        Array.from({ length: entry.partitions }, async (_, partition): Promise<PartitionLag> => {
          const key = `${topic}\u0000${partition}`;
          const { lowOffset, highOffset } = await this.bounds(topic, partition);
          const holder = owned.get(key);
          let committed: number | null | undefined = holder?.committed;
          if ((committed === undefined || committed === null) && holder?.start !== undefined) {
            committed = await this.concrete(topic, partition, holder.start, lowOffset, highOffset);
          }
          if (committed === undefined || committed === null) {
            const position = await this.storedPosition(group, topic, partition);
            committed =
              position === undefined
                ? (last.get(key) ?? null)
                : await this.concrete(topic, partition, position, lowOffset, highOffset);
          }
          const committedOffset = Math.min(Math.max(committed ?? lowOffset, lowOffset), highOffset);
          return { topic, partition, committedOffset, highOffset, lag: highOffset - committedOffset };
        }),
      );
      lag.push(...rows);
    }
    return {
      group,
      members: live.map((member) => ({ memberId: member.member, assignments: member.assigned })),
      lag,
    };
  }

  private async concrete(
    topic: string,
    partition: number,
    position: Position,
    low: number,
    high: number,
  ): Promise<number> {
    if ('offset' in position) return position.offset;
    if ('earliest' in position) return low;
    return Math.min(await this.resolveTime(topic, partition, position.timestamp), high);
  }

  /** Queue details, or undefined if it does not exist. */
  private async queueInfo(
    queue: string,
  ): Promise<{ messageCount: number; consumerCount: number } | undefined> {
    try {
      return await this.connector.withChannel((channel) => channel.checkQueue(queue));
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /**
   * The position committed in a partition's offset queue, read by briefly becoming its consumer when nobody else
   * is (the queue's single active consumer gets its messages; closing the channel returns them).
   */
  private async storedPosition(
    group: string,
    topic: string,
    partition: number,
  ): Promise<Position | undefined> {
    const queue = this.names.offsetQueue(group, topic, partition);
    const info = await this.queueInfo(queue);
    if (info === undefined || info.consumerCount > 0) return undefined;
    await settleQueue(this.connector, queue, 'quorum');
    let best: Commit | undefined;
    await this.connector.withChannel(async (channel) => {
      let resolveFirst!: () => void;
      const first = new Promise<void>((resolve) => {
        resolveFirst = resolve;
      });
      await channel.consume(queue, (message) => {
        if (message === null) return;
        const commit = parseCommit(message.content);
        if (commit !== undefined) best = best === undefined ? commit : laterCommit(best, commit);
        resolveFirst();
      });
      await Promise.race([first, sleep(this.options.readIdleMs * 3)]);
      if (best !== undefined) await sleep(25);
    });
    return best?.position;
  }

  async resetOffsets(group: string, topic: string, to: StartPosition): Promise<void> {
    this.described.delete(group);
    try {
      await this.resetOffsetsNow(group, topic, to);
    } finally {
      this.described.delete(group);
    }
  }

  private async resetOffsetsNow(group: string, topic: string, to: StartPosition): Promise<void> {
    this.open();
    checkName(group, 'group', limits.groupNameLength);
    const entry = await this.topicOrThrow(topic);
    const position = checkStartPosition(to, `resetOffsets('${group}', '${topic}')`);
    const { live } = await this.groupView(group);
    const queues = Array.from({ length: entry.partitions }, (_, partition) =>
      this.names.offsetQueue(group, topic, partition),
    );
    let busy = live.length;
    if (busy === 0) {
      for (const queue of queues) if (((await this.queueInfo(queue))?.consumerCount ?? 0) > 0) busy++;
    }
    if (busy > 0) {
      throw new TidingsError(
        ErrorCode.CONFLICT,
        `Cannot reset offsets of group '${group}' on topic '${topic}': the group has live members, which would ` +
          `overwrite the reset. Close every subscription of the group, then reset.`,
        { group, topic, liveMembers: live.length },
      );
    }
    await this.registry.noteGroup(group, [topic]);
    const confirm = await this.connector.confirmChannel();
    // Purging cannot remove a commit a reader holds right now (describeGroup peeks at offset queues); the reset's
    // commits win over it by their `resetAt` when it comes back.
    const resetAt = Date.now();
    await Promise.all(
      queues.map(async (queue, partition) => {
        const { lowOffset, highOffset } = await this.bounds(topic, partition);
        let offset: number;
        if (position === 'earliest') offset = lowOffset;
        else if (position === 'latest') offset = highOffset;
        else if ('offset' in position) offset = Math.min(Math.max(position.offset, lowOffset), highOffset);
        else offset = await this.resolveTime(topic, partition, position.timestamp);
        await this.connector.withChannel(async (channel) => {
          await channel.assertQueue(queue, {
            durable: true,
            arguments: { 'x-queue-type': 'quorum', 'x-single-active-consumer': true },
          });
          await settleQueue(this.connector, queue, 'quorum');
          await channel.purgeQueue(queue);
        });
        const commit: Commit = {
          id: `reset-${resetAt}-${partition}`,
          position: { offset },
          at: Date.now(),
          resetAt,
        };
        await publishConfirmed(confirm, '', queue, Buffer.from(JSON.stringify(commit)), {
          persistent: true,
          contentType: 'application/json',
        });
      }),
    );
  }
}

/** amqplib's error for an operation whose channel or connection closed under it. */
function isChannelLoss(error: unknown): boolean {
  return error instanceof Error && /^(channel|connection) closed/i.test(error.message);
}

function isNotFound(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === 404;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
