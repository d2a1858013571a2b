/** `tidings topics list|create|describe`. */
import type { Command } from 'commander';
import type { TopicConfig, TopicDescription, Transport } from 'tidings';
import { commonOptions, withCommonOptions, withTransport, writeJson, type CliDeps } from '../context.js';
import { formatBytes, formatCount, formatDuration, formatTime, plural, table } from '../format.js';
import { requireTopic } from '../lookup.js';
import { parseBytes, parseDuration, parseInteger } from '../parse.js';

/** Topics Tidings keeps for itself (`__topology`, `__outcomes`): hidden from `topics list` unless `--all`. */
export const isInternalTopic = (name: string) => name.startsWith('__');

/** Partitions of a topic created without `--partitions`. */
export const defaultPartitions = 4;

/** How many records a topic holds now, over all partitions. */
const storedRecords = (description: TopicDescription) =>
  description.partitionOffsets.reduce((sum, p) => sum + (p.highOffset - p.lowOffset), 0);

function describeRetention(config: TopicConfig): string {
  const limits = [
    config.retentionMs === undefined ? undefined : formatDuration(config.retentionMs),
    config.retentionBytes === undefined ? undefined : `${formatBytes(config.retentionBytes)}/partition`,
  ].filter((limit) => limit !== undefined);
  return limits.length === 0 ? 'forever' : limits.join(', ');
}

/** The topic as `--json` prints it. */
const topicJson = (description: TopicDescription) => ({
  name: description.name,
  partitions: description.partitions,
  ...(description.retentionMs === undefined ? {} : { retentionMs: description.retentionMs }),
  ...(description.retentionBytes === undefined ? {} : { retentionBytes: description.retentionBytes }),
  records: storedRecords(description),
  partitionOffsets: description.partitionOffsets,
});

export function registerTopics(program: Command, deps: CliDeps): void {
  const topics = program
    .command('topics')
    .description('list, create and describe topics')
    .addHelpText(
      'after',
      '\nA topic is an append-only log split into partitions; the key of an event picks its partition.',
    );

  withCommonOptions(topics.command('list'))
    .description('list the topics of the data directory, with partitions, stored events and retention')
    .option('-a, --all', "also list Tidings' internal topics (names starting with '__': topology, outcomes)")
    .action(async (_options: unknown, command: Command) => {
      const common = commonOptions(deps, command);
      const all = command.opts<{ all?: boolean }>().all === true;
      await withTransport(deps, { ...common.open, create: false }, async (transport) => {
        const names = (await transport.admin.listTopics())
          .filter((name) => all || !isInternalTopic(name))
          .sort();
        const descriptions: TopicDescription[] = [];
        for (const name of names) descriptions.push(await transport.admin.describeTopic(name));
        if (common.json) return writeJson(deps.stdout, descriptions.map(topicJson));
        if (descriptions.length === 0) {
          deps.stdout.write(
            `No topics in ${common.dataDir}. Create one with 'tidings topics create <name>'.\n`,
          );
          return;
        }
        deps.stdout.write(
          table(
            [
              { header: 'TOPIC' },
              { header: 'PARTITIONS', align: 'right' },
              { header: 'EVENTS', align: 'right' },
              { header: 'RETENTION' },
            ],
            descriptions.map((d) => [
              d.name,
              String(d.partitions),
              formatCount(storedRecords(d)),
              describeRetention(d),
            ]),
          ),
        );
      });
    });

  withCommonOptions(topics.command('create'))
    .description('create a topic (and the data directory, if it does not exist yet)')
    .argument('<topic>', 'the topic name, e.g. orders')
    .option(
      '-p, --partitions <count>',
      `number of partitions, fixed for the life of the topic (default: ${defaultPartitions})`,
      (value) => parseInteger(value, '--partitions', 1),
    )
    .option(
      '--retention <duration>',
      'remove events older than this, e.g. 7d, 12h (default: keep forever)',
      (v) => parseDuration(v, '--retention'),
    )
    .option(
      '--retention-bytes <size>',
      'remove the oldest events once a partition holds more, e.g. 1GiB (default: no limit)',
      (v) => parseBytes(v, '--retention-bytes'),
    )
    .addHelpText(
      'after',
      '\nCreating a topic that exists with the same partition count succeeds and changes nothing; with another ' +
        'partition count it fails.',
    )
    .action(
      async (
        name: string,
        options: { partitions?: number; retention?: number; retentionBytes?: number },
        command: Command,
      ) => {
        const common = commonOptions(deps, command);
        await withTransport(deps, { ...common.open, create: true }, async (transport) => {
          const existed = (await transport.admin.listTopics()).includes(name);
          const config: TopicConfig = { partitions: options.partitions ?? defaultPartitions };
          if (options.retention !== undefined) config.retentionMs = options.retention;
          if (options.retentionBytes !== undefined) config.retentionBytes = options.retentionBytes;
          await transport.admin.createTopic(name, config);
          const description = await transport.admin.describeTopic(name);
          if (common.json) return writeJson(deps.stdout, { ...topicJson(description), created: !existed });
          deps.stdout.write(
            existed
              ? `Topic ${name} already exists with ${plural(description.partitions, 'partition')}; nothing changed.\n`
              : `Created topic ${name} with ${plural(description.partitions, 'partition')}, ` +
                  `retention ${describeRetention(description)}, in ${common.dataDir}.\n`,
          );
        });
      },
    );

  withCommonOptions(topics.command('describe'))
    .description(
      "show a topic's partitions (offsets, first and last event times) and the groups consuming it",
    )
    .argument('<topic>', 'the topic name')
    .action(async (name: string, _options: unknown, command: Command) => {
      const common = commonOptions(deps, command);
      await withTransport(deps, { ...common.open, create: false }, async (transport) => {
        const description = await requireTopic(transport, name, common.dataDir);
        const partitions = await partitionTimes(transport, description);
        const groups = await consumingGroups(transport, name);
        if (common.json) {
          return writeJson(deps.stdout, {
            ...topicJson(description),
            partitionOffsets: partitions.map((p) => ({
              partition: p.partition,
              lowOffset: p.lowOffset,
              highOffset: p.highOffset,
              ...(p.firstTimestamp === undefined ? {} : { firstTime: formatTime(p.firstTimestamp) }),
              ...(p.lastTimestamp === undefined ? {} : { lastTime: formatTime(p.lastTimestamp) }),
            })),
            groups,
          });
        }
        deps.stdout.write(
          `Topic ${name}: ${plural(description.partitions, 'partition')}, ` +
            `${plural(storedRecords(description), 'event')} stored, retention ${describeRetention(description)}\n\n`,
        );
        deps.stdout.write(
          table(
            [
              { header: 'PARTITION', align: 'right' },
              { header: 'LOW', align: 'right' },
              { header: 'HIGH', align: 'right' },
              { header: 'EVENTS', align: 'right' },
              { header: 'FIRST' },
              { header: 'LAST' },
            ],
            partitions.map((p) => [
              String(p.partition),
              String(p.lowOffset),
              String(p.highOffset),
              formatCount(p.highOffset - p.lowOffset),
              p.firstTimestamp === undefined ? '-' : formatTime(p.firstTimestamp),
              p.lastTimestamp === undefined ? '-' : formatTime(p.lastTimestamp),
            ]),
          ),
        );
        deps.stdout.write('\n');
        if (groups.length === 0) {
          deps.stdout.write('No consumer group has read this topic yet.\n');
          return;
        }
        deps.stdout.write(
          table(
            [{ header: 'GROUP' }, { header: 'LAG', align: 'right' }],
            groups.map((g) => [g.group, formatCount(g.lag)]),
          ),
        );
      });
    });
}

interface PartitionTimes {
  partition: number;
  lowOffset: number;
  highOffset: number;
  firstTimestamp: number | undefined;
  lastTimestamp: number | undefined;
}

/** The first and last stored times of each partition: two reads of one record each. */
async function partitionTimes(
  transport: Transport,
  description: TopicDescription,
): Promise<PartitionTimes[]> {
  const out: PartitionTimes[] = [];
  for (const { partition, lowOffset, highOffset } of description.partitionOffsets) {
    const empty = highOffset <= lowOffset;
    const [first] = empty ? [] : await transport.admin.read(description.name, partition, lowOffset, 1);
    const [last] = empty ? [] : await transport.admin.read(description.name, partition, highOffset - 1, 1);
    out.push({
      partition,
      lowOffset,
      highOffset,
      firstTimestamp: first?.timestamp,
      lastTimestamp: last?.timestamp,
    });
  }
  return out;
}

/** The groups with committed offsets or members on `topic`, with their total lag on it. */
async function consumingGroups(
  transport: Transport,
  topic: string,
): Promise<Array<{ group: string; lag: number }>> {
  const out: Array<{ group: string; lag: number }> = [];
  for (const group of (await transport.admin.listGroups()).sort()) {
    const description = await transport.admin.describeGroup(group);
    const lags = description.lag.filter((l) => l.topic === topic);
    const assigned = description.members.some((m) => m.assignments.some((a) => a.topic === topic));
    if (lags.length === 0 && !assigned) continue;
    out.push({ group, lag: lags.reduce((sum, l) => sum + l.lag, 0) });
  }
  return out;
}
