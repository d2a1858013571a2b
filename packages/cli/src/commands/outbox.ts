/** `tidings outbox status`: the backlog of a transactional outbox and the age of its oldest unpublished event. */
import type { Command } from 'commander';
import { createOutbox, missingObject, type OutboxStatus } from 'tidings/outbox';
import { writeJson, type CliDeps } from '../context.js';
import { CliError } from '../errors.js';
import { formatCount, formatDuration } from '../format.js';
import { databaseUrlOf, openOutboxDatabase } from './relay.js';

/** The status as `--json` prints it. */
const statusJson = (table: string, status: OutboxStatus) => ({ table, ...status });

/** Registers `tidings outbox status`. */
export function registerOutbox(program: Command, deps: CliDeps): void {
  const outbox = program
    .command('outbox')
    .description('inspect a transactional outbox (tidings/outbox) in your database')
    .addHelpText(
      'after',
      '\nThe outbox holds events enqueued in your transactions until a relay publishes them (see tidings relay).',
    );

  outbox
    .command('status')
    .description('show the backlog of unpublished events and the age of the oldest')
    .option(
      '--database-url <url>',
      'postgres://..., mysql://... (or mariadb://...), or sqlite:<path> (default: $DATABASE_URL)',
    )
    .option('--table <name>', 'the outbox table (default: tidings_outbox)')
    .option('--json', 'print machine-readable JSON instead of text')
    .addHelpText(
      'after',
      `
The same figures are available in code as outbox.status(), for metrics: backlog, oldestAgeMs, maxAttempts.
A row whose publish keeps failing shows in "max attempts"; it holds back later events of its relay lane.
Read-only: a missing outbox table or SQLite file is an error (exit code 1); nothing is created.

Examples:
  tidings outbox status --database-url postgres://app@localhost/shop
  tidings outbox status --database-url sqlite:./shop.db --json`,
    )
    .action(async (options: { databaseUrl?: string; table?: string; json?: boolean }) => {
      // Read-only: a SQLite file that does not exist is reported, not created.
      const opened = await openOutboxDatabase(databaseUrlOf(deps, options.databaseUrl));
      try {
        const table = options.table ?? 'tidings_outbox';
        const status = await createOutbox({ database: opened.database, table })
          .status()
          .catch((error: unknown) => {
            if (missingObject(error) === undefined) throw error;
            throw new CliError(
              `no outbox table "${table}" in ${opened.display}; it is created by outbox.setup() (or your migrations ` +
                'with outbox.schemaSql()) and by tidings relay; pass --table if yours has another name',
              { cause: error },
            );
          });
        if (options.json === true) return writeJson(deps.stdout, statusJson(table, status));
        deps.stdout.write(
          `Outbox ${table} in ${opened.display}: ` +
            (status.backlog === 0
              ? 'empty, every event is published.\n'
              : `${formatCount(status.backlog)} unpublished event${status.backlog === 1 ? '' : 's'}, ` +
                `the oldest ${formatDuration(status.oldestAgeMs ?? 0)} old` +
                (status.maxAttempts > 0
                  ? `; max attempts ${status.maxAttempts} (a publish keeps failing)`
                  : '') +
                '.\n'),
        );
      } finally {
        await opened.close();
      }
    });
}
