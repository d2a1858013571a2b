/** `tidings groups list|describe|lag|reset`. */
import type { Command } from 'commander';
import {
  isTidingsError,
  type GroupDescription,
  type PartitionLag,
  type StartPosition,
  type TopicDescription,
  type Transport,
} from 'tidings';
import { commonOptions, withCommonOptions, withTransport, writeJson, type CliDeps } from '../context.js';
import { CliError } from '../errors.js';
import { formatCount, plural, table } from '../format.js';
import { requireGroup, requireTopic } from '../lookup.js';
import { parseStartPosition } from '../parse.js';

const totalLag = (lags: readonly PartitionLag[]) => lags.reduce((sum, l) => sum + l.lag, 0);

/** Every group's description, sorted by name; groups that vanish while listing are left out. */
async function describeAll(transport: Transport): Promise<GroupDescription[]> {
  const out: GroupDescription[] = [];
  for (const group of (await transport.admin.listGroups()).sort()) {
    try {
      out.push(await transport.admin.describeGroup(group));
    } catch (error) {
      if (!isTidingsError(error, 'NOT_FOUND')) throw error;
    }
  }
  return out;
}

/** Which member owns each partition, keyed `topic\0partition`. */
function owners(description: GroupDescription): Map<string, string> {
  const out = new Map<string, string>();
  for (const member of description.members)
    for (const { topic, partition } of member.assignments)
      out.set(`${topic}\u0000${partition}`, member.memberId);
  return out;
}

/** `orders:0,1 payments:2`: a member's assignments, grouped by topic. */
function describeAssignments(assignments: ReadonlyArray<{ topic: string; partition: number }>): string {
  const byTopic = new Map<string, number[]>();
  for (const { topic, partition } of assignments) {
    const list = byTopic.get(topic) ?? [];
    list.push(partition);
    byTopic.set(topic, list);
  }
  if (byTopic.size === 0) return '(none yet)';
  return [...byTopic].map(([topic, parts]) => `${topic}:${parts.sort((a, b) => a - b).join(',')}`).join(' ');
}

const lagColumns = [
  { header: 'GROUP' },
  { header: 'TOPIC' },
  { header: 'PARTITION', align: 'right' },
  { header: 'COMMITTED', align: 'right' },
  { header: 'HIGH', align: 'right' },
  { header: 'LAG', align: 'right' },
] as const;

/** Where each partition of `topic` would be after a reset to `to`. */
async function resetTargets(
  transport: Transport,
  topic: TopicDescription,
  to: StartPosition,
): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  for (const { partition, lowOffset, highOffset } of topic.partitionOffsets) {
    let target: number;
    if (to === 'earliest') target = lowOffset;
    else if (to === 'latest') target = highOffset;
    else if ('offset' in to) target = Math.min(Math.max(to.offset, lowOffset), highOffset);
    else target = await transport.admin.offsetForTime(topic.name, partition, to.timestamp);
    out.set(partition, target);
  }
  return out;
}

export function registerGroups(program: Command, deps: CliDeps): void {
  const groups = program
    .command('groups')
    .description('list consumer groups, show their members and lag, reset their offsets')
    .addHelpText(
      'after',
      '\nA consumer group receives every event of its topics; its members share the partitions. Lag is how many\n' +
        'events are published but not yet processed by the group.',
    );

  withCommonOptions(groups.command('list'))
    .description('list consumer groups with their live members and total lag')
    .action(async (_options: unknown, command: Command) => {
      const common = commonOptions(deps, command);
      await withTransport(deps, { ...common.open, create: false }, async (transport) => {
        const all = await describeAll(transport);
        const rows = all.map((d) => ({
          group: d.group,
          members: d.members.length,
          topics: [...new Set(d.lag.map((l) => l.topic))].sort(),
          lag: totalLag(d.lag),
        }));
        if (common.json) return writeJson(deps.stdout, rows);
        if (rows.length === 0) {
          deps.stdout.write(
            `No consumer groups in ${common.dataDir} yet; a group appears once a consumer subscribes.\n`,
          );
          return;
        }
        deps.stdout.write(
          table(
            [
              { header: 'GROUP' },
              { header: 'MEMBERS', align: 'right' },
              { header: 'LAG', align: 'right' },
              { header: 'TOPICS' },
            ],
            rows.map((r) => [r.group, String(r.members), formatCount(r.lag), r.topics.join(', ')]),
          ),
        );
      });
    });

  withCommonOptions(groups.command('describe'))
    .description(
      "show a group's live members with their partitions, and its committed offset and lag per partition",
    )
    .argument('<group>', 'the consumer group')
    .action(async (group: string, _options: unknown, command: Command) => {
      const common = commonOptions(deps, command);
      await withTransport(deps, { ...common.open, create: false }, async (transport) => {
        const description = await requireGroup(transport, group, common.dataDir);
        if (common.json) return writeJson(deps.stdout, description);
        const owner = owners(description);
        deps.stdout.write(
          `Group ${group}: ${plural(description.members.length, 'live member')}, lag ${formatCount(totalLag(description.lag))}\n\n`,
        );
        if (description.members.length > 0) {
          deps.stdout.write(
            table(
              [{ header: 'MEMBER' }, { header: 'PARTITIONS' }],
              description.members.map((m) => [m.memberId, describeAssignments(m.assignments)]),
            ),
          );
          deps.stdout.write('\n');
        }
        deps.stdout.write(
          table(
            [
              { header: 'TOPIC' },
              { header: 'PARTITION', align: 'right' },
              { header: 'COMMITTED', align: 'right' },
              { header: 'HIGH', align: 'right' },
              { header: 'LAG', align: 'right' },
              { header: 'MEMBER' },
            ],
            description.lag.map((l) => [
              l.topic,
              String(l.partition),
              String(l.committedOffset),
              String(l.highOffset),
              formatCount(l.lag),
              owner.get(`${l.topic}\u0000${l.partition}`) ?? '-',
            ]),
          ),
        );
      });
    });

  withCommonOptions(groups.command('lag'))
    .description('show lag per group, topic and partition (all groups unless one is named)')
    .argument('[group]', 'only this consumer group')
    .option('--topic <topic>', 'only this topic')
    .action(async (group: string | undefined, options: { topic?: string }, command: Command) => {
      const common = commonOptions(deps, command);
      await withTransport(deps, { ...common.open, create: false }, async (transport) => {
        if (options.topic !== undefined) await requireTopic(transport, options.topic, common.dataDir);
        const described =
          group === undefined
            ? await describeAll(transport)
            : [await requireGroup(transport, group, common.dataDir)];
        const rows = described.flatMap((d) =>
          d.lag
            .filter((l) => options.topic === undefined || l.topic === options.topic)
            .map((l) => ({ group: d.group, ...l })),
        );
        if (common.json) return writeJson(deps.stdout, rows);
        if (rows.length === 0) {
          deps.stdout.write('No committed offsets to report yet.\n');
          return;
        }
        deps.stdout.write(
          table(
            lagColumns,
            rows.map((r) => [
              r.group,
              r.topic,
              String(r.partition),
              String(r.committedOffset),
              String(r.highOffset),
              formatCount(r.lag),
            ]),
          ),
        );
        deps.stdout.write(`\nTotal lag: ${formatCount(totalLag(rows))}\n`);
      });
    });

  withCommonOptions(groups.command('reset'))
    .description("move a group's committed offsets on a topic, to replay or to skip events")
    .argument('<group>', 'the consumer group')
    .requiredOption('--topic <topic>', 'the topic whose offsets move (every partition of it)')
    .requiredOption(
      '--to <position>',
      'earliest, latest, an offset (in every partition), or an ISO time such as 2025-05-01T12:00:00Z',
      (v) => parseStartPosition(v, '--to'),
    )
    .option('--dry-run', 'show where the offsets would move, without moving them')
    .addHelpText(
      'after',
      `
A reset is refused while the group has live members (a running member would overwrite it):
stop the group's consumers, reset, then start them again. The group then processes from the
new positions: earlier positions replay events, later ones skip them.

Examples:
  tidings groups reset email --topic orders --to earliest
  tidings groups reset email --topic orders --to 2025-05-01T09:00:00Z --dry-run`,
    )
    .action(
      async (
        group: string,
        options: { topic: string; to: StartPosition; dryRun?: boolean },
        command: Command,
      ) => {
        const common = commonOptions(deps, command);
        await withTransport(deps, { ...common.open, create: false }, async (transport) => {
          const topic = await requireTopic(transport, options.topic, common.dataDir);
          const known = (await transport.admin.listGroups()).includes(group);
          const committedBefore = async () =>
            new Map(
              known
                ? (await transport.admin.describeGroup(group)).lag
                    .filter((l) => l.topic === topic.name)
                    .map((l) => [l.partition, l.committedOffset] as const)
                : [],
            );
          const before = await committedBefore();
          const targets = await resetTargets(transport, topic, options.to);
          if (options.dryRun !== true) {
            try {
              await transport.admin.resetOffsets(group, topic.name, options.to);
            } catch (error) {
              if (!isTidingsError(error, 'CONFLICT')) throw error;
              const members = known ? (await transport.admin.describeGroup(group)).members : [];
              throw new CliError(
                `cannot reset group "${group}" on topic "${topic.name}" while it has ${plural(members.length, 'live member')}` +
                  `${members.length > 0 ? ` (${members.map((m) => m.memberId).join(', ')})` : ''}; ` +
                  'stop its consumers, then run the reset again',
                { cause: error },
              );
            }
          }
          const after = options.dryRun === true ? targets : await committedBefore().catch(() => targets);
          const rows = topic.partitionOffsets.map(({ partition }) => ({
            partition,
            before: before.get(partition),
            after: after.get(partition) ?? targets.get(partition),
          }));
          if (common.json) {
            return writeJson(deps.stdout, {
              group,
              topic: topic.name,
              dryRun: options.dryRun === true,
              partitions: rows.map((r) => ({
                partition: r.partition,
                before: r.before ?? null,
                after: r.after ?? null,
              })),
            });
          }
          deps.stdout.write(
            options.dryRun === true
              ? `Dry run: group ${group} on ${topic.name} would move as below; nothing changed.\n\n`
              : `Reset group ${group} on ${topic.name}.${known ? '' : ' The group has not consumed yet; it starts from these positions.'}\n\n`,
          );
          deps.stdout.write(
            table(
              [
                { header: 'PARTITION', align: 'right' },
                { header: 'BEFORE', align: 'right' },
                { header: 'AFTER', align: 'right' },
              ],
              rows.map((r) => [
                String(r.partition),
                r.before === undefined ? '-' : String(r.before),
                r.after === undefined ? '-' : String(r.after),
              ]),
            ),
          );
        });
      },
    );
}
