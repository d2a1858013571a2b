/** `tidings publish <topic>`: one event from options, or many as JSON lines on stdin. */
import type { Command } from 'commander';
import { encodeEnvelope, uuidv7, type Envelope, type OutgoingRecord, type PublishAck } from 'tidings';
import { commonOptions, withCommonOptions, withTransport, writeJsonLine, type CliDeps } from '../context.js';
import { CliError, usageError } from '../errors.js';
import { createProgress, plural } from '../format.js';
import { readLines } from '../lines.js';
import { parseInteger, parseJson } from '../parse.js';

/** The CloudEvents `source` of every event the CLI publishes. */
export const cliSource = 'tidings://cli';
/** The most events one `publish` run takes from stdin: all are checked before any is written, so they are held. */
export const stdinEventsMax = 100_000;
/** The longest stdin line accepted. */
export const stdinLineCharsMax = 4 * 1024 * 1024;
/** Records per `transport.publish` call. */
const publishBatchSize = 1_000;

interface EventInput {
  /** The stdin line it came from, if any. */
  lineNumber?: number;
  type: string;
  key: string;
  data: unknown;
  id?: string;
  schemaVersion?: number;
}

interface PublishOptions {
  type?: string;
  key?: string;
  data?: string;
  id?: string;
  schemaVersion?: number;
}

const lineFields: ReadonlySet<string> = new Set(['type', 'key', 'data', 'id', 'schemaversion']);

/** Builds the record of one event: a CloudEvents envelope in binary mode, keyed by the event's key. */
function toRecord(input: EventInput, now: number): { record: OutgoingRecord; id: string } {
  const id = input.id ?? uuidv7();
  const envelope: Envelope = {
    id,
    source: cliSource,
    type: input.type,
    specversion: '1.0',
    time: new Date(now).toISOString(),
    subject: input.key,
    datacontenttype: 'application/json',
    correlationid: id,
    partitionkey: input.key,
    data: input.data,
  };
  if (input.schemaVersion !== undefined) envelope.schemaversion = input.schemaVersion;
  const { headers, value } = encodeEnvelope(envelope, 'binary');
  return { record: { key: input.key, headers, value, timestamp: now }, id };
}

function requireText(value: unknown, what: string, where: string, hint: string): string {
  if (typeof value !== 'string' || value.trim() === '') {
    throw usageError(
      `${where}: ${what} must be a non-empty string${value === undefined ? ` (${hint})` : ''}`,
    );
  }
  return value;
}

/** One stdin line as an event, with the command's `--type` and `--key` as defaults. */
function parseLine(text: string, lineNumber: number, defaults: PublishOptions): EventInput {
  const where = `stdin line ${lineNumber}`;
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch (error) {
    throw usageError(
      `${where} is not valid JSON (${error instanceof Error ? error.message : String(error)}); ` +
        'each line must be one object like {"type":"OrderPlaced","key":"o-1","data":{...}}',
    );
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw usageError(`${where} must be a JSON object like {"type":"OrderPlaced","key":"o-1","data":{...}}`);
  }
  const line = value as Record<string, unknown>;
  const unknown = Object.keys(line).find((field) => !lineFields.has(field));
  if (unknown !== undefined) {
    throw usageError(
      `${where} has an unknown field "${unknown}"; a line has type, key, data, and optionally id and schemaversion`,
    );
  }
  if (!('data' in line)) throw usageError(`${where} has no "data"; give the event's payload as "data"`);
  const input: EventInput = {
    lineNumber,
    type: requireText(line['type'] ?? defaults.type, '"type"', where, 'give it on the line or with --type'),
    key: requireText(line['key'] ?? defaults.key, '"key"', where, 'give it on the line or with --key'),
    data: line['data'],
  };
  if (line['id'] !== undefined) input.id = requireText(line['id'], '"id"', where, '');
  const version = line['schemaversion'];
  if (version !== undefined) {
    if (typeof version !== 'number' || !Number.isInteger(version) || version < 1)
      throw usageError(`${where}: "schemaversion" must be a positive whole number`);
    input.schemaVersion = version;
  }
  return input;
}

/** Reads and checks every stdin line before anything is published. */
async function readStdinEvents(deps: CliDeps, defaults: PublishOptions): Promise<EventInput[]> {
  const events: EventInput[] = [];
  for await (const { lineNumber, text } of readLines(deps.stdin, stdinLineCharsMax)) {
    if (text.trim() === '') continue;
    if (events.length === stdinEventsMax) {
      throw usageError(
        `stdin holds more than ${stdinEventsMax} events; split the input (e.g. split -l ${stdinEventsMax}) and publish each part`,
      );
    }
    events.push(parseLine(text, lineNumber, defaults));
  }
  if (events.length === 0) throw usageError('stdin held no events; pipe JSON lines, or give --data');
  return events;
}

export function registerPublish(program: Command, deps: CliDeps): void {
  withCommonOptions(program.command('publish'))
    .description('publish an event to a topic, or JSON lines of events from stdin')
    .argument('<topic>', 'the topic (created with the default partition count if it does not exist)')
    .option(
      '-t, --type <type>',
      'the event type, e.g. OrderPlaced (with stdin: the default for lines without one)',
    )
    .option('-k, --key <key>', 'the aggregate key; picks the partition (with stdin: the default)')
    .option('--data <json>', 'the event\'s data as JSON, e.g. \'{"orderId":"o-1"}\'; without it, reads stdin')
    .option(
      '--id <id>',
      'the event id (default: a new UUIDv7); publish again with the same id to retry safely',
    )
    .option('--schema-version <n>', 'the schemaversion attribute (default: none)', (v) =>
      parseInteger(v, '--schema-version', 1),
    )
    .addHelpText(
      'after',
      `
The CLI has no schemas: data is published as given, without validation. Consumers with a
schema dead-letter events that do not match it.

Each event is a CloudEvent in binary mode: id (UUIDv7), source ${cliSource}, type, time (now),
subject and partitionkey (the key), datacontenttype application/json, correlationid (the id).

Without --data, every stdin line is one JSON object:
  {"type":"OrderPlaced","key":"o-1","data":{"total":42}}    (optional: "id", "schemaversion")
Empty lines are skipped. Every line is checked before anything is written; a bad line is
reported by its number and nothing is published. At most ${stdinEventsMax} events per run.

Output: one line per event published (--json: one JSON object per line with id, type, key,
topic, partition, offset).

Examples:
  tidings publish orders --type OrderPlaced --key o-1 --data '{"total":42}'
  cat events.jsonl | tidings publish orders --type OrderPlaced`,
    )
    .action(async (topic: string, options: PublishOptions, command: Command) => {
      const common = commonOptions(deps, command);
      let events: EventInput[];
      if (options.data !== undefined) {
        const where = 'the event';
        const input: EventInput = {
          type: requireText(options.type, '--type', where, 'e.g. --type OrderPlaced'),
          key: requireText(options.key, '--key', where, 'e.g. --key order-1'),
          data: parseJson(options.data, '--data'),
        };
        if (options.id !== undefined) input.id = options.id;
        if (options.schemaVersion !== undefined) input.schemaVersion = options.schemaVersion;
        events = [input];
      } else if (deps.stdin.isTTY === true) {
        throw usageError(
          "nothing to publish; give --data '<json>' with --type and --key, or pipe JSON lines on stdin",
        );
      } else {
        if (options.id !== undefined)
          throw usageError(
            '--id applies to one event given with --data; put "id" on each stdin line instead',
          );
        events = await readStdinEvents(deps, options);
      }
      await withTransport(deps, { ...common.open, create: true }, async (transport) => {
        const existed = (await transport.admin.listTopics()).includes(topic);
        const progress = createProgress(deps.stderr, { label: `publishing to ${topic}`, unit: 'events' });
        let published = 0;
        try {
          for (let start = 0; start < events.length; start += publishBatchSize) {
            const batch = events
              .slice(start, start + publishBatchSize)
              .map((e) => ({ ...toRecord(e, Date.now()), input: e }));
            let acks: PublishAck[];
            try {
              acks = await transport.publish(
                topic,
                batch.map((b) => b.record),
                { signal: deps.signal },
              );
            } catch (error) {
              if (published === 0) throw error;
              const reason = error instanceof Error ? error.message : String(error);
              throw new CliError(
                `published the first ${published} of ${events.length} events to ${topic}, then failed: ${reason}; ` +
                  `publish the events from stdin line ${events[published]?.lineNumber ?? published + 1} on again`,
                { cause: error },
              );
            }
            acks.forEach((ack, i) => {
              const { id, input } = batch[i]!;
              if (common.json) {
                writeJsonLine(deps.stdout, { id, type: input.type, key: input.key, ...ack });
              } else if (events.length === 1) {
                deps.stdout.write(
                  `Published ${input.type} ${id} (key ${input.key}) to ${topic} partition ${ack.partition} offset ${ack.offset}.\n`,
                );
              }
            });
            published += acks.length;
            progress.update(published, events.length);
          }
        } finally {
          progress.stop();
        }
        if (!common.json && events.length > 1)
          deps.stdout.write(`Published ${plural(published, 'event')} to ${topic}.\n`);
        if (!existed) {
          const { partitions } = await transport.admin.describeTopic(topic);
          deps.stderr.write(
            `note: topic "${topic}" did not exist; it was created with ${plural(partitions, 'partition')}\n`,
          );
        }
      });
    });
}
