/** `tidings topology`: who produces and who consumes each message type, from the data directory's `__topology`. */
import { Option, type Command } from 'commander';
import { commonOptions, withCommonOptions, withTransport, writeJson, type CliDeps } from '../context.js';
import { CliError } from '../errors.js';
import { plural, table } from '../format.js';
import { closest } from '../lookup.js';
import { readTopology, type Topology, type TopologyType } from '../topology/model.js';
import { renderDot, renderMermaid, renderTable } from '../topology/render.js';

const formats = ['table', 'json', 'mermaid', 'dot'] as const;
type Format = (typeof formats)[number];

/** The message type named `type`, or a one-line error naming the closest known one. */
function requireType(topology: Topology, type: string, dataDir: string): TopologyType {
  const found = topology.types.find((t) => t.type === type);
  if (found) return found;
  if (topology.types.length === 0) {
    throw new CliError(
      `no topology recorded in ${dataDir} yet; it is written by every bus (createBus) when it publishes or handles ` +
        `events, so run your services once`,
    );
  }
  const suggestion = closest(
    type,
    topology.types.map((t) => t.type),
  );
  throw new CliError(
    `no message type "${type}" in the topology of ${dataDir}; ` +
      `${suggestion === undefined ? '' : `did you mean "${suggestion}"? `}list them with 'tidings topology'`,
  );
}

/** The JSON form of a type: everything but the schema, which `tidings asyncapi` prints. */
const typeJson = ({ schema, ...rest }: TopologyType) => ({ ...rest, hasSchema: schema !== undefined });

export function registerTopology(program: Command, deps: CliDeps): void {
  withCommonOptions(program.command('topology'), { json: 'the same as --format json' })
    .description('show who produces and who consumes each event type, from what every bus recorded')
    .option(
      '-w, --who-subscribes <type>',
      'list the groups and services that consume this event or command type',
    )
    .addOption(
      new Option('-f, --format <format>', 'output format').choices(formats).default('table' satisfies Format),
    )
    .addHelpText(
      'after',
      `
Every bus records what it consumes (each handler: service, group, types) and what it produces (declared with
createBus({ produces }), and observed on the first publish of each type) on the __topology topic.
The table flags types produced but never consumed, and consumed but never produced.

Examples:
  tidings topology
  tidings topology --who-subscribes OrderPlaced
  tidings topology --format mermaid > topology.mmd`,
    )
    .action(async (_options: unknown, command: Command) => {
      const common = commonOptions(deps, command);
      const options = command.opts<{ whoSubscribes?: string; format: Format }>();
      const format: Format = common.json ? 'json' : options.format;
      const topology = await withTransport(deps, { ...common.open, create: false }, readTopology);

      if (options.whoSubscribes !== undefined) {
        const type = requireType(topology, options.whoSubscribes, common.dataDir);
        if (format === 'json') return writeJson(deps.stdout, typeJson(type));
        if (format !== 'table') {
          const only: Topology = { ...topology, types: [type], neverConsumed: [], neverProduced: [] };
          return void deps.stdout.write(format === 'mermaid' ? renderMermaid(only) : renderDot(only));
        }
        if (type.consumers.length === 0) {
          deps.stdout.write(`No group consumes ${type.type} (topic ${type.topic}).\n`);
          return;
        }
        deps.stdout.write(
          `${type.type} (topic ${type.topic}) is consumed by ${plural(type.consumers.length, 'group')}:\n`,
        );
        deps.stdout.write(
          table(
            [{ header: 'GROUP' }, { header: 'SERVICES' }],
            type.consumers.map((c) => [c.group, c.services.join(', ')]),
          ),
        );
        return;
      }

      if (format === 'json') {
        return writeJson(deps.stdout, {
          types: topology.types.map(typeJson),
          neverConsumed: topology.neverConsumed,
          neverProduced: topology.neverProduced,
        });
      }
      if (format === 'mermaid') return void deps.stdout.write(renderMermaid(topology));
      if (format === 'dot') return void deps.stdout.write(renderDot(topology));
      if (topology.types.length === 0) {
        deps.stdout.write(
          `No topology recorded in ${common.dataDir} yet. Every bus records what it produces and consumes ` +
            `once it publishes or handles; run your services, then try again.\n`,
        );
        return;
      }
      deps.stdout.write(renderTable(topology));
    });
}
