/**
 * The group half of the admin: listing groups, describing one (live members, their assignments, lag per partition)
 * and resetting a group's committed positions. Reads the group bucket and the consumers' ack floors.
 */
import type { ConsumerInfo } from '@nats-io/jetstream';
import { ErrorCode, TidingsError } from '../core/errors.js';
import type { GroupDescription, PartitionLag, StartPosition } from '../core/transport.js';
import type { BucketEntry } from './bucket.js';
import type { NatsContext } from './context.js';
import type { GroupSession } from './group-session.js';
import { isConsumerNotFound } from './failures.js';
import {
  assign,
  compareStrings,
  liveMembers,
  type GroupValue,
  type MemberValue,
  type OwnershipValue,
} from './groups.js';
import { boundsOf, type PartitionBounds } from './topics.js';
import { checkName, checkStartPosition } from './validation.js';

/** Compare-and-set attempts of one reset before it reports a conflict. */
const resetAttempts = 5;

export class GroupAdmin {
  private readonly ctx: NatsContext;

  constructor(ctx: NatsContext) {
    this.ctx = ctx;
  }

  async listGroups(): Promise<string[]> {
    const entries = await this.ctx.bucket.list<GroupValue>('g.*');
    return entries
      .map((entry) => entry.value?.group)
      .filter((group): group is string => typeof group === 'string')
      .sort(compareStrings);
  }

  private async requireGroup(group: string): Promise<void> {
    checkName(group, 'group');
    const entry = await this.ctx.bucket.get<GroupValue>(this.ctx.names.groupKey(group));
    if (entry === undefined || entry.deleted) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `Group '${group}' does not exist on the NATS server at ${this.ctx.connector.url}: no member ever subscribed ` +
          `with it and no offsets were reset for it. Check the group name.`,
        { group },
      );
    }
  }

  /**
   * Members and lag of a group. With `view` (the watch of a member of this transport, caught up), members and
   * ownerships come from it instead of the bucket: one round of requests (the partitions' streams and consumers)
   * instead of three, which matters to callers that poll (`Consumer.waitFor` asks per position).
   */
  async describeGroup(group: string, view?: GroupSession): Promise<GroupDescription> {
    const { bucket, names, clock, topics } = this.ctx;
    let memberEntries: Array<BucketEntry<MemberValue>>;
    let ownershipEntries: Array<BucketEntry<OwnershipValue>>;
    let nowMs = clock.now();
    if (view?.isReady) {
      checkName(group, 'group');
      memberEntries = view.memberEntries();
      ownershipEntries = view.ownershipEntries();
      nowMs = view.serverNowMs(nowMs);
    } else {
      [, memberEntries, ownershipEntries] = await Promise.all([
        this.requireGroup(group),
        bucket.list<MemberValue>(names.kindFilter('m', group)),
        bucket.list<OwnershipValue>(names.kindFilter('o', group)),
      ]);
    }
    const live = liveMembers(memberEntries, nowMs);
    const topicNames = new Set<string>();
    for (const member of live) for (const topic of member.topics) topicNames.add(topic);
    for (const entry of ownershipEntries) if (entry.value !== undefined) topicNames.add(entry.value.topic);
    const partitionCounts = new Map<string, number>();
    for (const topic of topicNames) {
      try {
        partitionCounts.set(topic, (await topics.get(topic)).partitions);
      } catch {
        // A topic whose streams were deleted: nothing to report for it.
      }
    }
    const assignment = assign(live, partitionCounts);
    const ownerships = new Map<string, OwnershipValue>();
    for (const entry of ownershipEntries) {
      if (entry.value !== undefined)
        ownerships.set(`${entry.value.topic}\u0000${entry.value.partition}`, entry.value);
    }
    const session = await this.ctx.connector.get();
    const partitions = [...partitionCounts.keys()]
      .sort(compareStrings)
      .flatMap((topic) =>
        Array.from({ length: partitionCounts.get(topic)! }, (_, partition) => ({ topic, partition })),
      );
    // Every partition's stream and consumer at once: one round of requests.
    const lag = await Promise.all(
      partitions.map(async ({ topic, partition }): Promise<PartitionLag> => {
        const stream = names.stream(topic, partition);
        const ownership = ownerships.get(`${topic}\u0000${partition}`);
        const [info, consumer] = await Promise.all([
          topics.streamInfo(session, stream),
          ownership?.consumer ? consumerInfo(session.jsm, stream, ownership.consumer) : undefined,
        ]);
        const { lowOffset, highOffset }: PartitionBounds =
          info === undefined ? { lowOffset: 0, highOffset: 0 } : boundsOf(info);
        let committed = ownership?.committed ?? undefined;
        if (consumer !== undefined) committed = Math.max(committed ?? 0, consumer.ack_floor.stream_seq);
        const committedOffset = Math.min(Math.max(committed ?? lowOffset, lowOffset), highOffset);
        return { topic, partition, committedOffset, highOffset, lag: highOffset - committedOffset };
      }),
    );
    return {
      group,
      members: live.map((member) => ({
        memberId: member.memberId,
        assignments: assignment.get(member.memberId) ?? [],
      })),
      lag,
    };
  }

  async resetOffsets(group: string, topic: string, to: StartPosition): Promise<void> {
    checkName(group, 'group');
    const { bucket, names, clock, topics } = this.ctx;
    const meta = await topics.get(topic);
    const position = checkStartPosition(to, `resetOffsets('${group}', '${topic}')`);
    const members = await bucket.list<MemberValue>(names.kindFilter('m', group));
    const live = liveMembers(members, clock.now()).length;
    if (live > 0) {
      throw new TidingsError(
        ErrorCode.CONFLICT,
        `Cannot reset offsets of group '${group}' on topic '${topic}': the group has ${live} live ` +
          `member${live === 1 ? '' : 's'}, which would overwrite the reset. Close every subscription of the group ` +
          `(or wait ${this.ctx.options.leaseMs} ms for the lease of a crashed one to expire), then reset.`,
        { group, topic, liveMembers: live },
      );
    }
    const registration: GroupValue = { group, createdAtMs: clock.now() };
    await bucket.create(names.groupKey(group), registration);
    const session = await this.ctx.connector.get();
    for (let partition = 0; partition < meta.partitions; partition++) {
      const stream = names.stream(topic, partition);
      const key = names.ownershipKey(group, topic, partition);
      let offset: number;
      if (position === 'earliest' || position === 'latest' || 'offset' in position) {
        const { lowOffset, highOffset } = await topics.bounds(topic, partition);
        offset =
          position === 'earliest'
            ? lowOffset
            : position === 'latest'
              ? highOffset
              : Math.min(Math.max(position.offset, lowOffset), highOffset);
      } else {
        offset = await topics.offsetForTime(topic, partition, position.timestamp);
      }
      for (let attempt = 1; ; attempt++) {
        const current = await bucket.get<OwnershipValue>(key);
        const value = current?.deleted === false ? current.value : undefined;
        const next: OwnershipValue = {
          group,
          topic,
          partition,
          owner: null,
          epoch: (value?.epoch ?? 0) + 1,
          consumer: null,
          committed: offset,
        };
        if ((await bucket.update(key, next, current?.revision ?? 0)) !== undefined) {
          if (value?.consumer)
            await session.jsm.consumers.delete(stream, value.consumer).catch(() => undefined);
          break;
        }
        if (attempt >= resetAttempts) {
          throw new TidingsError(
            ErrorCode.CONFLICT,
            `Cannot reset offsets of group '${group}' on topic '${topic}' partition ${partition}: its ownership ` +
              `changed ${resetAttempts} times while resetting (a member is joining). Close it, then reset again.`,
            { group, topic, partition },
          );
        }
      }
    }
  }
}

async function consumerInfo(
  jsm: { consumers: { info(stream: string, name: string): Promise<ConsumerInfo> } },
  stream: string,
  name: string,
): Promise<ConsumerInfo | undefined> {
  try {
    return await jsm.consumers.info(stream, name);
  } catch (error) {
    if (isConsumerNotFound(error)) return undefined;
    throw error;
  }
}
