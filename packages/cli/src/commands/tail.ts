/** `tidings tail <topic>`: print events of a topic, from a position or the newest, optionally following new ones. */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import {
  decodeEnvelope,
  partitionForKey,
  type Envelope,
  type StoredRecord,
  type TopicDescription,
  type Transport,
} from 'tidings';
import { commonOptions, withCommonOptions, withTransport, writeJsonLine, type CliDeps } from '../context.js';
import { usageError } from '../errors.js';
import { createProgress, formatTime, plural, table, truncate, type Column } from '../format.js';
import { requireTopic } from '../lookup.js';
import { parseInteger, parseReadPosition, type ReadPosition } from '../parse.js';

/** Events printed without `--follow` when `--limit` is not given. */
export const defaultLimit = 100;
/** How often `--follow` looks for new events once it has caught up. */
export const followPollMs = 250;
/** Records read from one partition per `admin.read`. */
const pageSize = 500;
/** Compact data is cut to this many characters when stdout is not a terminal (a terminal: to its width). */
const dataCharsMax = 200;

interface TailOptions {
  from?: ReadPosition;
  type?: string;
  key?: string;
  limit?: number;
  follow?: boolean;
  wide?: boolean;
}

/** A record with its envelope, or why it could not be decoded. */
interface TailEvent {
  record: StoredRecord;
  envelope: Envelope | undefined;
  error: string | undefined;
}

/** Reads one partition page by page from `next`, up to (not including) `until`. */
class PartitionReader {
  readonly partition: number;
  next: number;
  readonly #until: number;
  #buffer: StoredRecord[] = [];
  /** The last read found nothing new: do not read again until the next poll. */
  caughtUp = false;

  constructor(partition: number, from: number, until: number) {
    this.partition = partition;
    this.next = from;
    this.#until = until;
  }

  head(): StoredRecord | undefined {
    return this.#buffer[0];
  }

  take(): StoredRecord | undefined {
    return this.#buffer.shift();
  }

  async fill(transport: Transport, topic: string): Promise<void> {
    if (this.#buffer.length > 0 || this.caughtUp) return;
    if (this.next >= this.#until) {
      this.caughtUp = true;
      return;
    }
    const limit = Math.min(pageSize, this.#until - this.next);
    const page = (await transport.admin.read(topic, this.partition, this.next, limit)).filter(
      (r) => r.offset < this.#until,
    );
    if (page.length === 0) {
      this.caughtUp = true;
      return;
    }
    this.#buffer = page;
    this.next = page[page.length - 1]!.offset + 1;
  }
}

/** Whether record `a` goes before `b`: by time, then partition, then offset. */
const before = (a: StoredRecord, b: StoredRecord) =>
  a.timestamp !== b.timestamp
    ? a.timestamp < b.timestamp
    : a.partition !== b.partition
      ? a.partition < b.partition
      : a.offset < b.offset;

/**
 * Yields the records of several partitions merged in time order. Without `follow` it ends once every reader is
 * exhausted; with it, it polls every {@link followPollMs} until `signal` aborts.
 */
async function* merge(
  transport: Transport,
  topic: string,
  readers: PartitionReader[],
  follow: boolean,
  signal: AbortSignal,
): AsyncGenerator<StoredRecord> {
  while (!signal.aborted) {
    for (const reader of readers) await reader.fill(transport, topic);
    let best: PartitionReader | undefined;
    for (const reader of readers) {
      const head = reader.head();
      if (head !== undefined && (best === undefined || before(head, best.head()!))) best = reader;
    }
    if (best !== undefined) {
      yield best.take()!;
      continue;
    }
    if (!follow) return;
    try {
      await sleep(followPollMs, undefined, { signal });
    } catch {
      return; // aborted: stop cleanly
    }
    for (const reader of readers) reader.caughtUp = false;
  }
}

function decode(record: StoredRecord): TailEvent {
  try {
    return {
      record,
      envelope: decodeEnvelope({ headers: record.headers, value: record.value }),
      error: undefined,
    };
  } catch (error) {
    return { record, envelope: undefined, error: error instanceof Error ? error.message : String(error) };
  }
}

/** The partitions to read and where each starts, from `--from` and `--key`. */
async function startOffsets(
  transport: Transport,
  description: TopicDescription,
  options: TailOptions,
): Promise<Array<{ partition: number; from: number; high: number; low: number }>> {
  const keyPartition =
    options.key === undefined ? undefined : partitionForKey(options.key, description.partitions);
  const from = options.from;
  if (from?.kind === 'partitions') {
    for (const partition of from.offsets.keys()) {
      if (partition >= description.partitions) {
        throw usageError(
          `--from names partition ${partition}, but topic "${description.name}" has partitions 0 to ${description.partitions - 1}`,
        );
      }
    }
  }
  const out: Array<{ partition: number; from: number; high: number; low: number }> = [];
  for (const { partition, lowOffset, highOffset } of description.partitionOffsets) {
    if (keyPartition !== undefined && partition !== keyPartition) continue;
    let start: number;
    switch (from?.kind) {
      case undefined:
        // The newest events: without filters only the last `limit` of each partition can be among them.
        start =
          options.follow === true
            ? highOffset
            : options.type === undefined && options.key === undefined
              ? highOffset - (options.limit ?? defaultLimit)
              : lowOffset;
        break;
      case 'earliest':
        start = lowOffset;
        break;
      case 'latest':
        start = highOffset;
        break;
      case 'offset':
        start = from.offset;
        break;
      case 'partitions': {
        const offset = from.offsets.get(partition);
        if (offset === undefined) continue;
        start = offset;
        break;
      }
      case 'time':
        start = await transport.admin.offsetForTime(description.name, partition, from.timestamp);
        break;
    }
    out.push({ partition, from: Math.max(start, lowOffset), high: highOffset, low: lowOffset });
  }
  return out;
}

const columns: readonly Column[] = [
  { header: 'TIME' },
  { header: 'POSITION', align: 'right' },
  { header: 'KEY' },
  { header: 'TYPE' },
  { header: 'ID' },
  { header: 'DATA' },
];

/** The cells of one event in human output; data compact and cut to `dataChars`. */
function cells(event: TailEvent, dataChars: number): string[] {
  const { record, envelope } = event;
  const data = envelope === undefined ? `(undecodable: ${event.error ?? ''})` : compactData(envelope.data);
  return [
    formatTime(record.timestamp),
    `${record.partition}:${record.offset}`,
    record.key,
    envelope?.type ?? '?',
    envelope?.id ?? '-',
    Number.isFinite(dataChars) ? truncate(data, dataChars) : data,
  ];
}

function compactData(data: unknown): string {
  if (data === undefined) return '';
  return typeof data === 'string' ? JSON.stringify(data) : (JSON.stringify(data) ?? '');
}

/** The event as `--json` prints it: its position and its decoded envelope (or the raw record if undecodable). */
function eventJson(event: TailEvent) {
  const { record } = event;
  const position = {
    topic: record.topic,
    partition: record.partition,
    offset: record.offset,
    timestamp: formatTime(record.timestamp),
    key: record.key,
  };
  return event.envelope !== undefined
    ? { ...position, envelope: event.envelope }
    : { ...position, error: event.error, headers: record.headers, value: record.value };
}

/** Prints events as they come (`--follow`): a header, then each line padded to the widest cells seen so far. */
class LinePrinter {
  readonly #widths = [24, 8, 8, 12, 36];
  #headerDone = false;

  constructor(
    private readonly deps: CliDeps,
    private readonly dataChars: number,
  ) {}

  print(event: TailEvent): void {
    if (!this.#headerDone) {
      this.#headerDone = true;
      this.#write(columns.map((c) => c.header));
    }
    this.#write(cells(event, this.dataChars));
  }

  #write(row: string[]): void {
    const text = row
      .map((cell, i) => {
        const width = this.#widths[i];
        if (width === undefined) return cell;
        this.#widths[i] = Math.max(width, cell.length);
        return columns[i]?.align === 'right' ? cell.padStart(this.#widths[i]) : cell.padEnd(this.#widths[i]);
      })
      .join('  ')
      .trimEnd();
    this.deps.stdout.write(`${text}\n`);
  }
}

export function registerTail(program: Command, deps: CliDeps): void {
  withCommonOptions(program.command('tail'))
    .description(
      'print the events of a topic: the newest, or from a position; --follow keeps printing new ones',
    )
    .argument('<topic>', 'the topic')
    .option(
      '--from <position>',
      'where to start in each partition: earliest, latest, an offset (applies to every partition), ' +
        '<partition>:<offset>[,...] (only those partitions), or an ISO time such as 2025-05-01T12:00:00Z ' +
        '(without a zone: local time). Default: the newest events (with --follow: only new ones)',
      (v) => parseReadPosition(v, '--from'),
    )
    .option('-t, --type <type>', 'only events of this type')
    .option('-k, --key <key>', "only events with this key (reads only the key's partition)")
    .option(
      '-n, --limit <count>',
      `stop after this many events (default: ${defaultLimit}; with --follow: no limit)`,
      (v) => parseInteger(v, '--limit', 1),
    )
    .option('-f, --follow', 'keep printing new events as they are published, until Ctrl-C')
    .option('--wide', 'do not cut long data (default: cut to the terminal width, or 200 characters)')
    .addHelpText(
      'after',
      `
Events from several partitions are printed in the order they were stored. Reading uses no
consumer group: it moves no offsets and is invisible to consumers.

Human output, one line per event: time stored, partition:offset, key, type, id, data.
--json prints one JSON object per line: topic, partition, offset, timestamp, key and the
decoded CloudEvents envelope (or, for a record that is not a CloudEvent, error, headers
and the value in base64).

Examples:
  tidings tail orders                      the newest ${defaultLimit} events
  tidings tail orders --from earliest -n 10
  tidings tail orders --from 2025-05-01T09:00:00Z --type OrderPlaced
  tidings tail orders --key order-7 --follow`,
    )
    .action(async (topic: string, options: TailOptions, command: Command) => {
      const common = commonOptions(deps, command);
      await withTransport(deps, { ...common.open, create: false }, async (transport) => {
        const description = await requireTopic(transport, topic, common.dataDir);
        const follow = options.follow === true;
        const limit = options.limit ?? (follow ? Number.POSITIVE_INFINITY : defaultLimit);
        const newest = options.from === undefined && !follow;
        const starts = await startOffsets(transport, description, options);
        const readers = starts.map(
          (s) => new PartitionReader(s.partition, s.from, follow ? Number.POSITIVE_INFINITY : s.high),
        );
        const matches = (event: TailEvent) =>
          (options.type === undefined || event.envelope?.type === options.type) &&
          (options.key === undefined || event.record.key === options.key);
        const dataChars =
          options.wide === true
            ? Number.POSITIVE_INFINITY
            : deps.stdout.isTTY === true && deps.stdout.columns !== undefined
              ? Math.max(20, deps.stdout.columns - 24 - 2 - 10 - 2 - 12 - 2 - 16 - 2 - 36 - 2)
              : dataCharsMax;

        if (follow) {
          const printer = new LinePrinter(deps, dataChars);
          let printed = 0;
          for await (const record of merge(transport, topic, readers, true, deps.signal)) {
            const event = decode(record);
            if (!matches(event)) continue;
            if (common.json) writeJsonLine(deps.stdout, eventJson(event));
            else printer.print(event);
            if (++printed >= limit) break;
          }
          return;
        }

        // Bounded: collect (at most `limit` events), then print one aligned table.
        const total = starts.reduce((sum, s) => sum + Math.max(0, s.high - s.from), 0);
        const progress = createProgress(deps.stderr, { label: `reading ${topic}`, unit: 'events' });
        const events: TailEvent[] = [];
        let scanned = 0;
        /** Set when events were left out because of the limit: older ones (newest) or later ones. */
        let cut = false;
        try {
          for await (const record of merge(transport, topic, readers, false, deps.signal)) {
            progress.update(++scanned, total);
            const event = decode(record);
            if (!matches(event)) continue;
            events.push(event);
            // For the newest events keep a window of the last `limit` (trimmed in bulk, not one shift per event).
            if (newest) {
              if (events.length >= 2 * limit) {
                events.splice(0, events.length - limit);
                cut = true;
              }
            } else if (events.length >= limit) {
              cut = scanned < total;
              break;
            }
          }
        } finally {
          progress.stop();
        }
        if (events.length > limit) {
          events.splice(0, events.length - limit);
          cut = true;
        }
        // Said on stderr, so that --json output stays one event per line.
        if (cut) {
          deps.stderr.write(
            newest
              ? `Showing the newest ${plural(limit, 'event')}; older ones exist: use --from earliest and a larger -n.\n`
              : `Stopped at ${plural(limit, 'event')} (-n); more may follow: use a larger -n.\n`,
          );
        }
        if (common.json) {
          for (const event of events) writeJsonLine(deps.stdout, eventJson(event));
          return;
        }
        if (events.length === 0) {
          deps.stdout.write(
            `No events in ${topic}${options.type || options.key ? ' match' : ' from that position'}.\n`,
          );
          return;
        }
        deps.stdout.write(
          table(
            columns,
            events.map((e) => cells(e, dataChars)),
          ),
        );
      });
    });
}
