/**
 * `tidings relay`: the standalone outbox relay. Publishes the events of an outbox table to the embedded log (or
 * NATS JetStream) until interrupted.
 */
import type { Command } from 'commander';
import { createBus, type Transport } from 'tidings';
import { createOutbox, missingObject, openDatabaseUrl, type OpenedDatabase } from 'tidings/outbox';
import type { CliDeps } from '../context.js';
import { commonOptions, defaultDataDir } from '../context.js';
import { CliError, oneLine, usageError } from '../errors.js';
import { parseInteger } from '../parse.js';

/** The database URL of a command: the option, else `$DATABASE_URL`; a usage error when neither is set. */
export function databaseUrlOf(deps: CliDeps, option: string | undefined): string {
  const url = option ?? deps.env['DATABASE_URL'];
  if (url === undefined || url === '')
    throw usageError(
      'give the database with --database-url <url> (or $DATABASE_URL), e.g. postgres://localhost/shop',
    );
  return url;
}

/**
 * Opens the database of `tidings relay` and `tidings outbox status`. A SQLite file must exist: neither command
 * creates a database (a mistyped path would otherwise relay or report an empty one). A database that does not exist
 * on the server is said in one line.
 */
export async function openOutboxDatabase(url: string): Promise<OpenedDatabase> {
  try {
    return await openDatabaseUrl(url, { fileMustExist: true });
  } catch (error) {
    if (missingObject(error) === 'database')
      throw new CliError(
        `${oneLine((error as Error).message)}; check the database name in the URL, or create the database first`,
        { cause: error },
      );
    throw error;
  }
}

interface RelayCommandOptions {
  databaseUrl?: string;
  table?: string;
  transport: string;
  natsUrl: string;
  natsPrefix?: string;
  service: string;
  batchSize?: number;
  leaseMs?: number;
  json?: boolean;
}

async function openTransport(
  deps: CliDeps,
  command: Command,
  options: RelayCommandOptions,
): Promise<Transport> {
  if (options.transport === 'log') return deps.open({ ...commonOptions(deps, command).open, create: true });
  if (options.transport === 'nats') {
    const { createNatsTransport } = await import('tidings/nats');
    return createNatsTransport({
      servers: options.natsUrl,
      ...(options.natsPrefix === undefined ? {} : { prefix: options.natsPrefix }),
    });
  }
  throw usageError(`--transport must be log or nats, got '${options.transport}'`);
}

/** Registers `tidings relay`. */
export function registerRelay(program: Command, deps: CliDeps): void {
  program
    .command('relay')
    .description('publish the events of a transactional outbox until interrupted (Ctrl-C)')
    .option(
      '--database-url <url>',
      'postgres://..., mysql://... (or mariadb://...), or sqlite:<path> (default: $DATABASE_URL)',
    )
    .option('--table <name>', 'the outbox table (default: tidings_outbox)')
    .option('--transport <name>', 'where to publish: log (the embedded log) or nats', 'log')
    .option(
      '-d, --data-dir <dir>',
      `--transport log: the data directory (default: $TIDINGS_DATA_DIR, else ${defaultDataDir})`,
    )
    .option('--nats-url <url>', '--transport nats: the server', 'nats://127.0.0.1:4222')
    .option('--nats-prefix <prefix>', '--transport nats: the stream prefix (default: tidings)')
    .option('--service <name>', 'the service name in the relay logs', 'relay')
    .option('--batch-size <n>', 'events read and published per batch (default: 500)', (v) =>
      parseInteger(v, '--batch-size', 1),
    )
    .option(
      '--lease-ms <ms>',
      'SQLite: how long a relay keeps the outbox without renewing (default: 5000)',
      (v) => parseInteger(v, '--lease-ms', 100),
    )
    .option('--json', 'print the start and stop lines as JSON')
    .addHelpText(
      'after',
      `
Creates the outbox table if it does not exist, but not the database: a SQLite file that does not exist is an
error. Several relays may run on one outbox: each key is published by one relay at a time, in the order its
transactions committed. A relay killed between publishing and marking
leaves its events to be published again with the same ids; the consumers' inbox drops the copies.
An event the transport refuses stays in the outbox and holds back only the later events of its lane; other
events go on (see tidings outbox status). Transient failures are logged and retried with backoff; an error
retrying cannot fix (the outbox table dropped, credentials or grants refused) stops the relay with exit code 1.

Examples:
  tidings relay --database-url postgres://app@localhost/shop --data-dir ./.tidings
  tidings relay --database-url mysql://root@localhost/shop --transport nats --nats-url nats://localhost:4222`,
    )
    .action(async (options: RelayCommandOptions, command: Command) => {
      const url = databaseUrlOf(deps, options.databaseUrl);
      const opened = await openOutboxDatabase(url);
      let transport: Transport | undefined;
      try {
        const table = options.table ?? 'tidings_outbox';
        const outbox = createOutbox({ database: opened.database, table });
        // Relays starting together may race to create the tables; the loser finds them made.
        await outbox
          .setup()
          .catch(() => outbox.setup())
          .catch((error: unknown) => {
            if (missingObject(error) === undefined) throw error;
            throw new CliError(
              `could not create the outbox table ${table} in ${opened.display}: ${oneLine((error as Error).message)}; ` +
                'create its schema (or database) first, or pass another --table',
              { cause: error },
            );
          });
        transport = await openTransport(deps, command, options);
        const bus = createBus({ service: options.service, transport });
        const relay = bus.startRelay(outbox, {
          ...(options.batchSize === undefined ? {} : { batchSize: options.batchSize }),
          ...(options.leaseMs === undefined ? {} : { leaseMs: options.leaseMs }),
          signal: deps.signal,
        });
        const where = `${opened.display} (${table}) -> ${transport.name}`;
        if (options.json === true)
          deps.stdout.write(`${JSON.stringify({ event: 'started', pid: process.pid, table })}\n`);
        else deps.stdout.write(`relay started: ${where}; Ctrl-C to stop\n`);
        const stopped = await relay.closed;
        await bus.close();
        const stats = relay.stats();
        if (options.json === true) deps.stdout.write(`${JSON.stringify({ event: 'stopped', ...stats })}\n`);
        else
          deps.stdout.write(
            `relay stopped: published ${stats.published} events in ${stats.batches} batches\n`,
          );
        // An error retrying cannot fix (the table gone, credentials or grants refused) ends the relay: exit 1.
        if (stopped) throw new CliError(stopped.message, { cause: stopped });
      } finally {
        await transport?.close().catch(() => undefined);
        await opened.close();
      }
    });
}
