/** `tidings serve`: the schema registry and metrics over HTTP, on loopback unless told otherwise. */
import type { Command } from 'commander';
import { commonOptions, withCommonOptions, type CliDeps } from '../context.js';
import { parseInteger } from '../parse.js';
import { buildServeApp } from '../serve/app.js';

/** The port `tidings serve` listens on without `--port`. */
export const defaultServePort = 8081;

export function registerServe(program: Command, deps: CliDeps): void {
  withCommonOptions(program.command('serve'), { json: false })
    .description('serve the schema registry (and metrics with --metrics) over HTTP until interrupted')
    .option('-p, --port <port>', `the TCP port (default ${defaultServePort}; 0 picks a free one)`)
    .option('--host <host>', 'the address to listen on', '127.0.0.1')
    .option('--metrics', 'also serve GET /metrics in the Prometheus text format')
    .option(
      '--registry-database-url <url>',
      'keep the schema registry in this PostgreSQL database (default: registry.db in the data directory)',
    )
    .option(
      '--registry-database-schema <name>',
      'the PostgreSQL schema of the registry tables (default tidings)',
    )
    .addHelpText(
      'after',
      `
Routes: GET /healthz; the schema registry under /registry (Confluent Schema Registry REST API subset,
for JSON Schema); GET /metrics with --metrics. Stops on SIGINT or SIGTERM.`,
    )
    .action(async (_options: unknown, command: Command) => {
      const common = commonOptions(deps, command);
      const options = command.opts<{
        port?: string;
        host: string;
        metrics?: boolean;
        registryDatabaseUrl?: string;
        registryDatabaseSchema?: string;
      }>();
      const port = options.port === undefined ? defaultServePort : parseInteger(options.port, '--port');
      const app = await buildServeApp({
        deps,
        common,
        metrics: options.metrics === true,
        ...(options.registryDatabaseUrl === undefined
          ? {}
          : { registryDatabaseUrl: options.registryDatabaseUrl }),
        ...(options.registryDatabaseSchema === undefined
          ? {}
          : { registryDatabaseSchema: options.registryDatabaseSchema }),
      });
      try {
        const address = await app.listen({ port, host: options.host });
        deps.stdout.write(`tidings serve: listening on ${address}\n`);
        if (!deps.signal.aborted) {
          await new Promise<void>((resolve) =>
            deps.signal.addEventListener('abort', () => resolve(), { once: true }),
          );
        }
      } finally {
        await app.close();
      }
    });
}
