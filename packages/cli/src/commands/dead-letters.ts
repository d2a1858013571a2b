/** `tidings dead-letters list|retry|skip`. */
import type { Command } from 'commander';
import {
  deadLetterTopic,
  getDeadLetter,
  isTidingsError,
  listDeadLetters,
  resolveDeadLetter,
  type DeadLetter,
  type Transport,
} from 'tidings';
import { commonOptions, withCommonOptions, withTransport, writeJson, type CliDeps } from '../context.js';
import { CliError } from '../errors.js';
import { formatAge, formatTime, table, truncate } from '../format.js';
import { requireTopic } from '../lookup.js';
import { parseDeadLetterId, parseInteger } from '../parse.js';
import { defaultWaitMs, fileRequest, reportRequest } from '../requests.js';

const dlqSuffix = '.dlq';
/** Dead letters listed when `--limit` is not given. */
const defaultLimit = 100;

/**
 * The (topic, group) pairs that have a dead-letter topic `<topic>.<group>.dlq`. A name with several dots is split
 * at the known group names; failing that, at its last dot.
 */
async function deadLetterSources(transport: Transport): Promise<Array<{ topic: string; group: string }>> {
  const topics = await transport.admin.listTopics();
  const groups = await transport.admin.listGroups();
  const out: Array<{ topic: string; group: string }> = [];
  for (const name of topics.filter((t) => t.endsWith(dlqSuffix)).sort()) {
    const stem = name.slice(0, -dlqSuffix.length);
    const group =
      groups.find((g) => stem.endsWith(`.${g}`) && stem.length > g.length + 1) ?? stem.split('.').pop();
    if (group === undefined || group === stem) continue;
    out.push({ topic: stem.slice(0, -(group.length + 1)), group });
  }
  return out;
}

/** A dead letter as `--json` prints it: without the raw bytes, with its time as ISO 8601. */
const letterJson = (letter: DeadLetter) => ({
  id: letter.id,
  group: letter.group,
  topic: letter.topic,
  deadLetterTopic: letter.deadLetterTopic,
  partition: letter.partition,
  offset: letter.offset,
  key: letter.key,
  reason: letter.reason,
  error: letter.error,
  attempts: letter.attempts,
  deadLetteredAt: formatTime(letter.deadLetteredAt),
  envelope: letter.envelope ?? null,
});

/** The unresolved dead letter `id`, or a one-line error that says how to list them. */
async function requireDeadLetter(
  transport: Transport,
  topic: string,
  group: string,
  id: string,
): Promise<DeadLetter> {
  try {
    return await getDeadLetter(transport, topic, group, id);
  } catch (error) {
    if (!isTidingsError(error, 'NOT_FOUND')) throw error;
    throw new CliError(
      `no unresolved dead letter "${id}" of group "${group}" on topic "${topic}"; ` +
        `list them with 'tidings dead-letters list --group ${group} --topic ${topic}'`,
      { cause: error },
    );
  }
}

interface TargetOptions {
  group: string;
  topic: string;
}

export function registerDeadLetters(program: Command, deps: CliDeps): void {
  const deadLetters = program
    .command('dead-letters')
    .description('list, retry and skip dead letters (events a group gave up on)')
    .addHelpText(
      'after',
      `
A group dead-letters an event when its handler kept failing after its retries, or when the
event could not be decoded or failed the schema. Dead letters of group G from topic T live on
the topic T.G.dlq; ids are <partition>:<offset> in that topic.`,
    );

  withCommonOptions(deadLetters.command('list'))
    .description('list unresolved dead letters: id, key, type, reason, attempts, when, error')
    .option('-g, --group <group>', 'only this consumer group')
    .option('--topic <topic>', 'only dead letters of events from this topic')
    .option('-n, --limit <count>', `list at most this many (default: ${defaultLimit})`, (v) =>
      parseInteger(v, '--limit', 1),
    )
    .action(async (options: { group?: string; topic?: string; limit?: number }, command: Command) => {
      const common = commonOptions(deps, command);
      await withTransport(deps, { ...common.open, create: false }, async (transport) => {
        if (options.topic !== undefined) await requireTopic(transport, options.topic, common.dataDir);
        const limit = options.limit ?? defaultLimit;
        const sources =
          options.group !== undefined && options.topic !== undefined
            ? [{ topic: options.topic, group: options.group }]
            : (await deadLetterSources(transport)).filter(
                (s) =>
                  (options.group === undefined || s.group === options.group) &&
                  (options.topic === undefined || s.topic === options.topic),
              );
        const letters: DeadLetter[] = [];
        for (const { topic, group } of sources) {
          if (letters.length >= limit) break;
          letters.push(...(await listDeadLetters(transport, topic, group, limit - letters.length)));
        }
        if (common.json) return writeJson(deps.stdout, letters.map(letterJson));
        if (letters.length === 0) {
          deps.stdout.write('No unresolved dead letters.\n');
          return;
        }
        const now = Date.now();
        deps.stdout.write(
          table(
            [
              { header: 'ID' },
              { header: 'GROUP' },
              { header: 'TOPIC' },
              { header: 'KEY' },
              { header: 'TYPE' },
              { header: 'REASON' },
              { header: 'ATTEMPTS', align: 'right' },
              { header: 'WHEN' },
              { header: 'ERROR' },
            ],
            letters.map((l) => [
              l.id,
              l.group,
              l.topic,
              l.key,
              l.envelope?.type ?? '?',
              l.reason,
              String(l.attempts),
              formatAge(l.deadLetteredAt, now),
              truncate(l.error.replace(/\s+/g, ' '), 80),
            ]),
          ),
        );
      });
    });

  withCommonOptions(deadLetters.command('retry'))
    .description('ask a running consumer of the group to run its handler on a dead letter again')
    .argument('<id>', 'the dead letter id, <partition>:<offset>, as list shows it', parseDeadLetterId)
    .requiredOption('-g, --group <group>', 'the consumer group that dead-lettered it')
    .requiredOption('--topic <topic>', 'the topic the event came from')
    .option('--wait-ms <ms>', `how long to wait for the outcome (default: ${defaultWaitMs})`, (v) =>
      parseInteger(v, '--wait-ms'),
    )
    .option('--require-done', 'fail (exit 1) unless the retry was carried out within the wait')
    .addHelpText(
      'after',
      `
The handler lives in your application, so the CLI files a durable request that a running
consumer of the group carries out within about a second; the CLI waits for its outcome.
If no consumer of the group is running, the request stays queued and runs when one starts
(exit 0, or 1 with --require-done). A dead letter that is retried successfully is resolved.`,
    )
    .action(
      async (
        id: string,
        options: TargetOptions & { waitMs?: number; requireDone?: boolean },
        command: Command,
      ) => {
        const common = commonOptions(deps, command);
        await withTransport(deps, { ...common.open, create: false }, async (transport) => {
          await requireTopic(transport, options.topic, common.dataDir);
          const letter = await requireDeadLetter(transport, options.topic, options.group, id);
          const result = await fileRequest(
            deps,
            transport,
            {
              kind: 'retry-dead-letter',
              group: options.group,
              topic: options.topic,
              key: letter.key,
              deadLetterId: id,
            },
            options.waitMs ?? defaultWaitMs,
          );
          reportRequest(deps, result, {
            json: common.json,
            requireDone: options.requireDone === true,
            what: `retry dead letter ${id} of group ${options.group}`,
            extra: { id, group: options.group, topic: options.topic, key: letter.key },
          });
        });
      },
    );

  withCommonOptions(deadLetters.command('skip'))
    .description('resolve a dead letter without handling it; it is no longer listed')
    .argument('<id>', 'the dead letter id, <partition>:<offset>, as list shows it', parseDeadLetterId)
    .requiredOption('-g, --group <group>', 'the consumer group that dead-lettered it')
    .requiredOption('--topic <topic>', 'the topic the event came from')
    .addHelpText(
      'after',
      `\nSkipping appends a marker to ${deadLetterTopic('<topic>', '<group>')}, so the record itself stays for audit.`,
    )
    .action(async (id: string, options: TargetOptions, command: Command) => {
      const common = commonOptions(deps, command);
      await withTransport(deps, { ...common.open, create: false }, async (transport) => {
        await requireTopic(transport, options.topic, common.dataDir);
        const letter = await requireDeadLetter(transport, options.topic, options.group, id);
        await resolveDeadLetter(transport, letter, 'skipped');
        if (common.json) {
          deps.stdout.write(
            `${JSON.stringify({ id, group: options.group, topic: options.topic, key: letter.key, resolution: 'skipped' })}\n`,
          );
          return;
        }
        deps.stdout.write(
          `Skipped dead letter ${id} of group ${options.group} on ${options.topic} ` +
            `(key ${letter.key}${letter.envelope ? `, ${letter.envelope.type} ${letter.envelope.id}` : ''}).\n`,
        );
      });
    });
}
