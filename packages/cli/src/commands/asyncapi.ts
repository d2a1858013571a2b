/** `tidings asyncapi`: an AsyncAPI 3.0 document of the data directory's topics, messages, producers and consumers. */
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { buildAsyncApi } from '../asyncapi/document.js';
import { commonOptions, withCommonOptions, withTransport, type CliDeps } from '../context.js';
import { CliError } from '../errors.js';
import { readTopology } from '../topology/model.js';

export function registerAsyncApi(program: Command, deps: CliDeps): void {
  withCommonOptions(program.command('asyncapi'), { json: false })
    .description(
      'write an AsyncAPI 3.0 document (JSON) of the topics, event types and their producers and consumers',
    )
    .option('-o, --output <file>', 'write the document to this file instead of standard output')
    .option('--title <title>', 'the title of the API', 'Tidings events')
    .option('--api-version <version>', 'the version of the API', '1.0.0')
    .addHelpText(
      'after',
      `
Built from the topology every bus records (see 'tidings topology'): one channel per topic, one message per event
type with the JSON Schema of its payload and the CloudEvents headers, one send operation per producing service
and one receive operation per consumer group.`,
    )
    .action(async (_options: unknown, command: Command) => {
      const common = commonOptions(deps, command);
      const options = command.opts<{ output?: string; title: string; apiVersion: string }>();
      const topology = await withTransport(deps, { ...common.open, create: false }, readTopology);
      if (topology.types.length === 0) {
        throw new CliError(
          `no topology recorded in ${common.dataDir} yet; every bus records what it produces and consumes once it ` +
            'publishes or handles, so run your services first',
        );
      }
      const document = buildAsyncApi(topology, { title: options.title, version: options.apiVersion });
      const text = `${JSON.stringify(document, null, 2)}\n`;
      if (options.output === undefined) return void deps.stdout.write(text);
      const file = resolve(deps.cwd, options.output);
      try {
        await writeFile(file, text);
      } catch (error) {
        throw new CliError(
          `could not write ${file}: ${(error as Error).message}; check the path and permissions`,
          {
            cause: error,
          },
        );
      }
      deps.stdout.write(
        `Wrote AsyncAPI 3.0 to ${file}: ${Object.keys(document['channels'] as object).length} channel(s), ` +
          `${topology.types.length} message(s), ${Object.keys(document['operations'] as object).length} operation(s).\n`,
      );
    });
}
