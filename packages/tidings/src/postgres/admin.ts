/**
 * The admin API of the PostgreSQL transport: topics, reads, time lookups, groups, lag and offset resets, each a few
 * statements against the schema's tables.
 */
import { ErrorCode, TidingsError, isTidingsError } from '../core/errors.js';
import { readLimitMax } from '../core/transport.js';
import type {
  GroupDescription,
  PartitionLag,
  StartPosition,
  StoredRecord,
  TopicConfig,
  TopicDescription,
  TransportAdmin,
} from '../core/transport.js';
import type pg from 'pg';
import { describeCause, isConnectionError, unavailable } from './connection.js';
import { assign, compareStrings, partitionCounts, type GroupTables } from './groups.js';
import { toStoredRecord, type PostgresStorage, type TopicMeta } from './storage.js';
import { checkInteger, checkName, checkStartPosition, describeValue, invalid, limits } from './validation.js';

/** The most bytes of record data one `read` returns (fewer records than `limit` if they are large). */
const adminReadBytes = 32 * 1024 * 1024;

/** What the admin needs from its transport. */
export interface AdminContext {
  readonly storage: PostgresStorage;
  readonly groups: GroupTables;
  readonly pool: pg.Pool;
  readonly displayUrl: string;
  now(): number;
  /** Throws `CLOSED` once the transport is closed. */
  checkOpen(what: string): void;
  /** Writes this transport's pending offset commits. */
  flushCommits(): Promise<void>;
  transaction<T>(run: (client: pg.PoolClient) => Promise<T>): Promise<T>;
  /** Tells every member of `group` (in any process) to rebalance. */
  groupChanged(group: string): void;
}

export function createAdmin(context: AdminContext): TransportAdmin {
  const admin = new PostgresAdmin(context);
  const call =
    <A extends unknown[], T>(what: string, run: (...args: A) => Promise<T>) =>
    async (...args: A): Promise<T> => {
      context.checkOpen(what);
      try {
        return await run(...args);
      } catch (error) {
        throw adminError(context.displayUrl, what, error);
      }
    };
  return Object.freeze<TransportAdmin>({
    createTopic: call('create a topic', (name, config) => admin.createTopic(name, config)),
    describeTopic: call('describe a topic', (name) => admin.describeTopic(name)),
    listTopics: call('list topics', () => admin.listTopics()),
    read: call('read records', (topic, partition, fromOffset, limit) =>
      admin.read(topic, partition, fromOffset, limit),
    ),
    offsetForTime: call('look up an offset by time', (topic, partition, timestamp) =>
      admin.offsetForTime(topic, partition, timestamp),
    ),
    listGroups: call('list groups', () => admin.listGroups()),
    describeGroup: call('describe a group', (group) => admin.describeGroup(group)),
    resetOffsets: call('reset offsets', (group, topic, to) => admin.resetOffsets(group, topic, to)),
  });
}

function adminError(displayUrl: string, what: string, error: unknown): Error {
  if (isTidingsError(error)) return error;
  if (isConnectionError(error)) return unavailable(displayUrl, what, error);
  return new TidingsError(
    ErrorCode.TRANSPORT_UNAVAILABLE,
    `Cannot ${what}: the PostgreSQL server at ${displayUrl} refused the statement (${describeCause(error)}). Check ` +
      `that the user may use the transport's schema.`,
    { cause: error, url: displayUrl, retryable: false },
  );
}

class PostgresAdmin {
  constructor(private readonly context: AdminContext) {}

  private async topicOrThrow(name: string): Promise<TopicMeta> {
    checkName(name, 'topic', limits.topicNameLength);
    const meta = await this.context.storage.getTopic(name);
    if (meta === undefined) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `Topic '${name}' does not exist on the PostgreSQL server at ${this.context.displayUrl}. Create it with ` +
          `admin.createTopic, or publish to it, first.`,
        { topic: name },
      );
    }
    return meta;
  }

  private async partitionOrThrow(topic: string, partition: number): Promise<TopicMeta> {
    const meta = await this.topicOrThrow(topic);
    if (!Number.isInteger(partition) || partition < 0) {
      throw invalid(`Partition ${describeValue(partition)} of topic '${topic}' is not an integer >= 0.`, {
        topic,
      });
    }
    if (partition >= meta.partitions) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `Topic '${topic}' has no partition ${partition}; it has partitions 0 to ${meta.partitions - 1}.`,
        { topic, partition },
      );
    }
    return meta;
  }

  async createTopic(name: string, config: TopicConfig): Promise<void> {
    checkName(name, 'topic', limits.topicNameLength);
    if (typeof config !== 'object' || config === null) {
      throw invalid(
        `createTopic('${name}') needs a config object with partitions, got ${describeValue(config)}.`,
        {
          topic: name,
        },
      );
    }
    const partitions = checkInteger(config.partitions, `partitions of topic '${name}'`, 1, limits.partitions);
    const checked: TopicConfig = { partitions };
    if (config.retentionMs !== undefined) {
      checked.retentionMs = checkInteger(
        config.retentionMs,
        `retentionMs of topic '${name}'`,
        1,
        Number.MAX_SAFE_INTEGER,
      );
    }
    if (config.retentionBytes !== undefined) {
      checked.retentionBytes = checkInteger(
        config.retentionBytes,
        `retentionBytes of topic '${name}'`,
        1,
        Number.MAX_SAFE_INTEGER,
      );
    }
    const { meta, created } = await this.context.storage.ensureTopic(name, checked, this.context.now());
    if (!created && meta.partitions !== partitions) {
      throw new TidingsError(
        ErrorCode.CONFLICT,
        `Topic '${name}' already exists with ${meta.partitions} partitions, not ${partitions}; the partition ` +
          `count is fixed at creation. Use ${meta.partitions} partitions or another topic name.`,
        { topic: name, partitions: meta.partitions, requestedPartitions: partitions },
      );
    }
  }

  async describeTopic(name: string): Promise<TopicDescription> {
    const meta = await this.topicOrThrow(name);
    const offsets = await this.context.storage.offsets(meta.id);
    const description: TopicDescription = { name, partitions: meta.partitions, partitionOffsets: offsets };
    if (meta.retentionMs !== undefined) description.retentionMs = meta.retentionMs;
    if (meta.retentionBytes !== undefined) description.retentionBytes = meta.retentionBytes;
    return description;
  }

  async listTopics(): Promise<string[]> {
    return (await this.context.storage.topicNames()).sort(compareStrings);
  }

  async read(topic: string, partition: number, fromOffset: number, limit: number): Promise<StoredRecord[]> {
    const meta = await this.partitionOrThrow(topic, partition);
    checkInteger(fromOffset, `fromOffset for read of topic '${topic}'`, 0, Number.MAX_SAFE_INTEGER);
    checkInteger(limit, `limit for read of topic '${topic}'`, 1, readLimitMax);
    const records = await this.context.storage.readPage(
      meta.id,
      partition,
      fromOffset,
      limit,
      adminReadBytes,
    );
    return records.map((record) => toStoredRecord(topic, partition, record));
  }

  async offsetForTime(topic: string, partition: number, timestamp: number): Promise<number> {
    const meta = await this.partitionOrThrow(topic, partition);
    if (typeof timestamp !== 'number' || Number.isNaN(timestamp)) {
      throw invalid(
        `offsetForTime on topic '${topic}' needs a timestamp in ms, got ${describeValue(timestamp)}.`,
        {
          topic,
        },
      );
    }
    return this.context.storage.offsetForTime(meta.id, partition, timestamp);
  }

  async listGroups(): Promise<string[]> {
    await this.context.storage.ensureSchema();
    return (await this.context.groups.groupNames(this.context.pool)).sort(compareStrings);
  }

  async describeGroup(name: string): Promise<GroupDescription> {
    checkName(name, 'group', limits.groupNameLength);
    await this.context.storage.ensureSchema();
    await this.context.flushCommits(); // this transport's acks are in the database first
    const { groups, pool, storage } = this.context;
    if ((await groups.version(pool, name)) === undefined) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `Group '${name}' does not exist on the PostgreSQL server at ${this.context.displayUrl}: no member ever ` +
          `subscribed with it and no offsets were reset for it. Check the group name.`,
        { group: name },
      );
    }
    const live = await groups.liveMembersNow(pool, name);
    const rows = await groups.rows(pool, name);
    const assignment = assign(live, partitionCounts(rows));
    const offsetsByTopic = new Map<number, Map<number, { lowOffset: number; highOffset: number }>>();
    for (const topicId of new Set(rows.map((row) => row.topicId))) {
      const offsets = await storage.offsets(topicId);
      offsetsByTopic.set(topicId, new Map(offsets.map((o) => [o.partition, o])));
    }
    const lag: PartitionLag[] = [];
    for (const row of rows) {
      const offsets = offsetsByTopic.get(row.topicId)?.get(row.partition);
      if (offsets === undefined) continue;
      const committedOffset = Math.max(row.committed ?? offsets.lowOffset, offsets.lowOffset);
      lag.push({
        topic: row.topic,
        partition: row.partition,
        committedOffset,
        highOffset: offsets.highOffset,
        lag: offsets.highOffset - committedOffset,
      });
    }
    return {
      group: name,
      members: live.map((member) => ({
        memberId: member.memberId,
        assignments: (assignment.get(member.memberId) ?? []).map((a) => ({
          topic: a.topic,
          partition: a.partition,
        })),
      })),
      lag,
    };
  }

  async resetOffsets(groupName: string, topicName: string, to: StartPosition): Promise<void> {
    checkName(groupName, 'group', limits.groupNameLength);
    const meta = await this.topicOrThrow(topicName);
    const position = checkStartPosition(to, `resetOffsets('${groupName}', '${topicName}')`);
    const { groups, storage } = this.context;
    await this.context.transaction(async (client) => {
      const { nowMs } = await groups.lockGroup(client, groupName, this.context.now());
      const live = (await groups.members(client, groupName)).filter((member) => member.leaseUntil > nowMs);
      if (live.length > 0) {
        const ids = live
          .map((member) => `${member.memberId} (${member.host} pid ${member.processId})`)
          .join(', ');
        throw new TidingsError(
          ErrorCode.CONFLICT,
          `Cannot reset offsets of group '${groupName}' on topic '${topicName}': the group has ${live.length} ` +
            `live member${live.length === 1 ? '' : 's'} (${ids}), which would overwrite the reset. Close every ` +
            `subscription of the group (or wait for a dead member's lease to run out), then reset.`,
          {
            group: groupName,
            topic: topicName,
            liveMembers: live.length,
            memberIds: live.map((m) => m.memberId),
          },
        );
      }
      await groups.ensurePartitions(client, groupName, [meta.id]);
      for (let partition = 0; partition < meta.partitions; partition++) {
        const committed = await storage.resolvePosition(meta, partition, position, client);
        await groups.reset(client, groupName, meta.id, partition, committed);
      }
      await groups.bump(client, groupName);
    });
    this.context.groupChanged(groupName);
  }
}
