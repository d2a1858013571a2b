/**
 * The admin of the Redis transport: topics, reads by offset and time, groups, lag and offset resets, each one Lua
 * script (see `scripts.ts`), so it sees a consistent state of the partition it reads.
 */
import type { Clock } from '../core/clock.js';
import { ErrorCode, TidingsError } from '../core/errors.js';
import { readLimitMax } from '../core/transport.js';
import type {
  GroupDescription,
  PartitionLag,
  StoredRecord,
  TopicConfig,
  TopicDescription,
  TransportAdmin,
} from '../core/transport.js';
import { decodeEntry } from './codec.js';
import type { Connection } from './connection.js';
import { encodeName, type Keys } from './keys.js';
import { parseMemberInfo } from './liveness.js';
import {
  describeGroupScript,
  ensureTopicScript,
  offsetForTimeScript,
  offsetsScript,
  readRangeScript,
  resetScript,
} from './scripts.js';
import { compareStrings, list, positionArg } from './util.js';
import {
  checkInteger,
  checkName,
  checkNumber,
  checkStartPosition,
  describeValue,
  invalid,
  limits,
} from './validation.js';

export interface AdminContext {
  readonly commands: Connection;
  readonly keys: Keys;
  readonly clock: Clock;
  /**
   * Throws `CLOSED` once the transport is closed; otherwise sends the acks its members queued, so the call sees
   * them (commands on the connection run in order).
   */
  checkOpen(what: string): void;
  /** The topic's config, from the transport's cache or the server; undefined if the topic does not exist. */
  topicConfig(topic: string): Promise<TopicConfig | undefined>;
  /** Records a topic's config in the transport's cache. */
  rememberTopic(topic: string, config: TopicConfig): void;
}

export function parseTopicConfig(json: string): TopicConfig {
  const parsed = JSON.parse(json) as TopicConfig;
  const config: TopicConfig = { partitions: parsed.partitions };
  if (typeof parsed.retentionMs === 'number') config.retentionMs = parsed.retentionMs;
  if (typeof parsed.retentionBytes === 'number') config.retentionBytes = parsed.retentionBytes;
  return config;
}

export function createAdmin(ctx: AdminContext): TransportAdmin {
  const call = <T>(what: string, run: () => Promise<T>): Promise<T> => {
    try {
      ctx.checkOpen(what);
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    return run();
  };
  const prefix = ctx.keys.prefix;

  const topicOrThrow = async (topic: string): Promise<TopicConfig> => {
    checkName(topic, 'topic', limits.topicNameLength);
    const config = await ctx.topicConfig(topic);
    if (config === undefined) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `Topic '${topic}' does not exist on this Redis (key prefix '${prefix}'). Create it with admin.createTopic, ` +
          `or publish to it, first.`,
        { topic },
      );
    }
    return config;
  };

  const partitionOrThrow = async (topic: string, partition: number): Promise<void> => {
    const config = await topicOrThrow(topic);
    if (!Number.isInteger(partition) || partition < 0) {
      throw invalid(`Partition ${describeValue(partition)} of topic '${topic}' is not an integer >= 0.`, {
        topic,
      });
    }
    if (partition >= config.partitions) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `Topic '${topic}' has no partition ${partition}; it has partitions 0 to ${config.partitions - 1}.`,
        { topic, partition },
      );
    }
  };

  const missingTopic = (topic: string) =>
    new TidingsError(
      ErrorCode.NOT_FOUND,
      `Topic '${topic}' does not exist on this Redis (key prefix '${prefix}').`,
      {
        topic,
      },
    );

  return Object.freeze<TransportAdmin>({
    createTopic: (name, config) =>
      call(`create topic '${String(name)}'`, async () => {
        checkName(name, 'topic', limits.topicNameLength);
        if (typeof config !== 'object' || config === null) {
          throw invalid(
            `createTopic('${name}') needs a config object with partitions, got ${describeValue(config)}.`,
            {
              topic: name,
            },
          );
        }
        const partitions = checkInteger(
          config.partitions,
          `partitions of topic '${name}'`,
          1,
          limits.partitions,
        );
        const checked: TopicConfig = { partitions };
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
        const stored = parseTopicConfig(
          String(
            await ctx.commands.eval(
              `create topic '${name}'`,
              ensureTopicScript,
              0,
              [ctx.keys.topics, name, JSON.stringify(checked)],
              false,
            ),
          ),
        );
        ctx.rememberTopic(name, stored);
        if (stored.partitions !== partitions) {
          throw new TidingsError(
            ErrorCode.CONFLICT,
            `Topic '${name}' already exists with ${stored.partitions} partitions, not ${partitions}; the partition ` +
              `count is fixed at creation. Use ${stored.partitions} partitions or another topic name.`,
            { topic: name, partitions: stored.partitions, requestedPartitions: partitions },
          );
        }
      }),

    describeTopic: (name) =>
      call(`describe topic '${String(name)}'`, async (): Promise<TopicDescription> => {
        checkName(name, 'topic', limits.topicNameLength);
        const reply = (await ctx.commands.eval(
          `describe topic '${name}'`,
          offsetsScript,
          0,
          [prefix, name, encodeName(name), ctx.clock.now()],
          false,
        )) as Array<string | number> | null;
        if (reply === null) throw missingTopic(name);
        const config = parseTopicConfig(String(reply[0]));
        ctx.rememberTopic(name, config);
        const partitionOffsets: Array<{ partition: number; lowOffset: number; highOffset: number }> = [];
        for (let partition = 0; partition < config.partitions; partition++) {
          partitionOffsets.push({
            partition,
            lowOffset: Number(reply[1 + partition * 2]),
            highOffset: Number(reply[2 + partition * 2]),
          });
        }
        return { name, ...config, partitionOffsets };
      }),

    listTopics: () =>
      call('list topics', async () => {
        const names = (await ctx.commands.command('list topics', (client) =>
          client.hkeys(ctx.keys.topics),
        )) as string[];
        return names.sort(compareStrings);
      }),

    read: (topic, partition, fromOffset, limit) =>
      call(`read topic '${String(topic)}'`, async (): Promise<StoredRecord[]> => {
        await partitionOrThrow(topic, partition);
        checkInteger(fromOffset, `fromOffset for read of topic '${topic}'`, 0, Number.MAX_SAFE_INTEGER);
        checkInteger(limit, `limit for read of topic '${topic}'`, 1, readLimitMax);
        const reply = (await ctx.commands.eval(
          `read partition ${partition} of topic '${topic}'`,
          readRangeScript,
          0,
          [prefix, topic, encodeName(topic), partition, fromOffset, limit, ctx.clock.now()],
          true,
        )) as Array<[Buffer, Buffer[]]> | null;
        if (reply === null) throw missingTopic(topic);
        return reply.map(([id, fields]) => {
          const { id: _id, ...record } = decodeEntry(topic, partition, id, fields);
          return record;
        });
      }),

    offsetForTime: (topic, partition, timestamp) =>
      call(`find an offset by time in topic '${String(topic)}'`, async () => {
        await partitionOrThrow(topic, partition);
        if (typeof timestamp !== 'number' || Number.isNaN(timestamp)) {
          throw invalid(
            `offsetForTime on topic '${topic}' needs a timestamp in ms, got ${describeValue(timestamp)}.`,
            { topic },
          );
        }
        const reply = await ctx.commands.eval(
          `find an offset by time in partition ${partition} of topic '${topic}'`,
          offsetForTimeScript,
          0,
          [
            prefix,
            topic,
            encodeName(topic),
            partition,
            Number.isFinite(timestamp) ? timestamp : timestamp > 0 ? Number.MAX_SAFE_INTEGER : 0,
            ctx.clock.now(),
          ],
          false,
        );
        if (reply === null) throw missingTopic(topic);
        return Number(reply);
      }),

    listGroups: () =>
      call('list groups', async () => {
        const names = (await ctx.commands.command('list groups', (client) =>
          client.smembers(ctx.keys.groups),
        )) as string[];
        return names.sort(compareStrings);
      }),

    describeGroup: (group) =>
      call(`describe group '${String(group)}'`, async (): Promise<GroupDescription> => {
        checkName(group, 'group', limits.groupNameLength);
        const reply = await ctx.commands.eval(
          `describe group '${group}'`,
          describeGroupScript,
          0,
          [JSON.stringify({ prefix, group, eg: encodeName(group), now: ctx.clock.now() })],
          false,
        );
        if (reply === null) {
          throw new TidingsError(
            ErrorCode.NOT_FOUND,
            `Group '${group}' does not exist on this Redis (key prefix '${prefix}'): no member ever subscribed with ` +
              `it and no offsets were reset for it. Check the group name.`,
            { group },
          );
        }
        const parsed = JSON.parse(reply as string) as {
          members: Array<[string, string]> | Record<string, never>;
          topics:
            | Array<{ t: string; partitions: number; lag: Array<[number, number, number]> }>
            | Record<string, never>;
        };
        const members = list(parsed.members).map(([memberId, info]) => ({
          memberId,
          topics: parseMemberInfo(info).topics,
        }));
        const topics = list(parsed.topics).sort((a, b) => compareStrings(a.t, b.t));
        const assignments = new Map<string, Array<{ topic: string; partition: number }>>(
          members.map((m) => [m.memberId, []]),
        );
        const lag: PartitionLag[] = [];
        for (const topic of topics) {
          const subscribers = members.filter((m) => m.topics.includes(topic.t));
          for (let partition = 0; partition < topic.partitions; partition++) {
            if (subscribers.length > 0) {
              assignments
                .get(subscribers[partition % subscribers.length]!.memberId)!
                .push({ topic: topic.t, partition });
            }
          }
          list(topic.lag).forEach(([committedOffset, highOffset], partition) => {
            lag.push({
              topic: topic.t,
              partition,
              committedOffset,
              highOffset,
              lag: highOffset - committedOffset,
            });
          });
        }
        return {
          group,
          members: members.map((m) => ({ memberId: m.memberId, assignments: assignments.get(m.memberId)! })),
          lag,
        };
      }),

    resetOffsets: (group, topic, to) =>
      call(`reset offsets of group '${String(group)}'`, async () => {
        checkName(group, 'group', limits.groupNameLength);
        const config = await topicOrThrow(topic);
        const position = checkStartPosition(to, `resetOffsets('${group}', '${topic}')`);
        const live = Number(
          await ctx.commands.eval(
            `reset offsets of group '${group}' on topic '${topic}'`,
            resetScript,
            0,
            [
              JSON.stringify({
                prefix,
                group,
                eg: encodeName(group),
                t: topic,
                et: encodeName(topic),
                partitions: config.partitions,
                pos: positionArg(position),
              }),
            ],
            false,
          ),
        );
        if (live > 0) {
          throw new TidingsError(
            ErrorCode.CONFLICT,
            `Cannot reset offsets of group '${group}' on topic '${topic}': the group has ${live} live ` +
              `member${live === 1 ? '' : 's'}, which would overwrite the reset. Close every subscription of the group ` +
              `(a killed member counts as live until its lease runs out), then reset.`,
            { group, topic, liveMembers: live },
          );
        }
      }),
  });
}
