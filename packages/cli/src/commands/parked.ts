/** `tidings parked list|retry|skip`. */
import type { Command } from 'commander';
import { decodeEnvelope, type ParkedEvent, type ParkedKey } from 'tidings';
import { commonOptions, withCommonOptions, withTransport, writeJson, type CliDeps } from '../context.js';
import { CliError } from '../errors.js';
import { formatAge, formatCount, formatTime, table, truncate } from '../format.js';
import { requireStore, requireTopic } from '../lookup.js';
import { parseInteger } from '../parse.js';
import { defaultWaitMs, fileRequest, reportRequest } from '../requests.js';

/** The type and id of a parked event, when it decodes. */
function identify(event: ParkedEvent): { id: string | null; type: string | null } {
  try {
    const envelope = decodeEnvelope({ headers: event.headers, value: event.value });
    return { id: envelope.id, type: envelope.type };
  } catch {
    return { id: null, type: null };
  }
}

/** A parked key as `--json` prints it: its events by position, id and type, without their bytes. */
const parkedJson = (key: ParkedKey) => ({
  group: key.group,
  topic: key.topic,
  key: key.key,
  error: key.error,
  attempts: key.attempts,
  events: key.events.map((e) => ({
    partition: e.partition,
    offset: e.offset,
    ...identify(e),
    parkedAt: formatTime(e.parkedAt),
  })),
});

interface KeyOptions {
  group: string;
  topic: string;
  key: string;
  waitMs?: number;
  requireDone?: boolean;
}

export function registerParked(program: Command, deps: CliDeps): void {
  const parked = program
    .command('parked')
    .description('list, retry and skip parked keys')
    .addHelpText(
      'after',
      `
A group with onFailure 'park' parks a key whose event kept failing: that event and every later
event of the key wait, in order, while other keys flow. Retry handles them again in order;
skip drops the failing event and handles the rest.`,
    );

  withCommonOptions(parked.command('list'))
    .description('list parked keys: group, topic, key, events waiting, attempts, since when, last error')
    .option('-g, --group <group>', 'only this consumer group')
    .option('--topic <topic>', 'only this topic')
    .action(async (options: { group?: string; topic?: string }, command: Command) => {
      const common = commonOptions(deps, command);
      await withTransport(deps, { ...common.open, create: false }, async (transport) => {
        const parking = requireStore(transport, 'parking');
        const keys = (await parking.list(options.group)).filter(
          (k) => options.topic === undefined || k.topic === options.topic,
        );
        if (common.json) return writeJson(deps.stdout, keys.map(parkedJson));
        if (keys.length === 0) {
          deps.stdout.write('No parked keys.\n');
          return;
        }
        const now = Date.now();
        deps.stdout.write(
          table(
            [
              { header: 'GROUP' },
              { header: 'TOPIC' },
              { header: 'KEY' },
              { header: 'EVENTS', align: 'right' },
              { header: 'ATTEMPTS', align: 'right' },
              { header: 'SINCE' },
              { header: 'ERROR' },
            ],
            keys.map((k) => [
              k.group,
              k.topic,
              k.key,
              formatCount(k.events.length),
              String(k.attempts),
              k.events[0] === undefined ? '-' : formatAge(k.events[0].parkedAt, now),
              truncate(k.error.replace(/\s+/g, ' '), 80),
            ]),
          ),
        );
      });
    });

  for (const action of ['retry', 'skip'] as const) {
    withCommonOptions(parked.command(action))
      .description(
        action === 'retry'
          ? "ask a running consumer of the group to handle a parked key's events again, in order"
          : "ask a running consumer of the group to drop a parked key's failing event and handle the rest",
      )
      .requiredOption('-g, --group <group>', 'the consumer group that parked the key')
      .requiredOption('--topic <topic>', 'the topic of the key')
      .requiredOption('-k, --key <key>', 'the parked key')
      .option('--wait-ms <ms>', `how long to wait for the outcome (default: ${defaultWaitMs})`, (v) =>
        parseInteger(v, '--wait-ms'),
      )
      .option('--require-done', `fail (exit 1) unless the ${action} was carried out within the wait`)
      .addHelpText(
        'after',
        `
The handler lives in your application, so the CLI files a durable request that a running
consumer of the group carries out within about a second; the CLI waits for its outcome.
If no consumer of the group is running, the request stays queued and runs when one starts
(exit 0, or 1 with --require-done). If an event fails again, the key stays parked (exit 1).`,
      )
      .action(async (options: KeyOptions, command: Command) => {
        const common = commonOptions(deps, command);
        await withTransport(deps, { ...common.open, create: false }, async (transport) => {
          await requireTopic(transport, options.topic, common.dataDir);
          const ref = { group: options.group, topic: options.topic, key: options.key };
          if ((await requireStore(transport, 'parking').get(ref)) === undefined) {
            throw new CliError(
              `key "${options.key}" of group "${options.group}" on topic "${options.topic}" is not parked; ` +
                `list parked keys with 'tidings parked list --group ${options.group}'`,
            );
          }
          const result = await fileRequest(
            deps,
            transport,
            { kind: action === 'retry' ? 'retry-parked' : 'skip-parked', ...ref },
            options.waitMs ?? defaultWaitMs,
          );
          reportRequest(deps, result, {
            json: common.json,
            requireDone: options.requireDone === true,
            what: `${action} parked key ${options.key} of group ${options.group}`,
            extra: { ...ref, action },
          });
        });
      });
  }
}
