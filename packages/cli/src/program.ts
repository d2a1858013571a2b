/**
 * The `tidings` program: the command tree, and running it on an argument list with every failure reported as one
 * line on stderr and an exit code. Free of process globals, so tests can run it in-process.
 */
import { Command, CommanderError } from 'commander';
import { registerDeadLetters } from './commands/dead-letters.js';
import { registerGroups } from './commands/groups.js';
import { registerOutbox } from './commands/outbox.js';
import { registerParked } from './commands/parked.js';
import { registerPublish } from './commands/publish.js';
import { registerRelay } from './commands/relay.js';
import { registerServe } from './commands/serve.js';
import { registerSchema } from './commands/schema.js';
import { registerTail } from './commands/tail.js';
import { registerTopics } from './commands/topics.js';
import { registerTopology } from './commands/topology.js';
import { registerTrace } from './commands/trace.js';
import { registerAsyncApi } from './commands/asyncapi.js';
import { defaultDataDir, type CliDeps } from './context.js';
import { describeFailure, ExitCode, oneLine, usageError } from './errors.js';
import { closest } from './lookup.js';

/** `tidings topics list` for the command `list` under `topics`. */
function commandPath(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c !== null; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/**
 * Makes a command that only groups subcommands fail with one line when run without one or with an unknown one
 * (commander would print the whole help as an error).
 */
function requireSubcommand(group: Command): void {
  // With an action, commander no longer adds `help [command]` by itself.
  group.helpCommand('help [command]', 'show help for a command');
  group.allowExcessArguments(true).action((_options: unknown, command: Command) => {
    const name = command.args[0];
    const names = group.commands.map((c) => c.name()).filter((n) => n !== 'help');
    const path = commandPath(group);
    if (name === undefined)
      throw usageError(`'${path}' needs a command: ${names.join(', ')}; see '${path} --help'`);
    const suggestion = closest(name, names);
    throw usageError(
      `unknown command '${name}' for '${path}'; ${suggestion === undefined ? '' : `did you mean '${suggestion}'? `}` +
        `the commands are ${names.join(', ')}`,
    );
  });
}

/** Builds the command tree. */
export function createProgram(deps: CliDeps): Command {
  const program = new Command('tidings')
    .description(
      'Inspect and operate a Tidings embedded log: topics, events, consumer groups, dead letters, parked keys.',
    )
    .version(deps.version, '-V, --version', 'print the version')
    .helpOption('-h, --help', 'show help for a command')
    .configureOutput({
      writeOut: (text) => void deps.stdout.write(text),
      writeErr: (text) => void deps.stderr.write(text),
    })
    .exitOverride()
    .addHelpText(
      'after',
      `
Commands that work on a data directory take --data-dir <dir> (default: $TIDINGS_DATA_DIR, else
${defaultDataDir}); schema and outbox do not, and relay only with --transport log. Commands that print
results take --json for machine-readable output; serve does not, and asyncapi writes JSON anyway.
Run 'tidings <command> --help' for each command's options.

Exit codes: 0 success, 1 the operation failed (the message on stderr says why and what to do),
2 the command line was wrong. Set TIDINGS_DEBUG=1 to print the stack of a failure, and
TIDINGS_BUSY_TIMEOUT_MS to change how long a write waits for another process's lock (10000).

Examples:
  tidings topics create orders --partitions 8
  tidings publish orders --type OrderPlaced --key o-1 --data '{"total":42}'
  tidings tail orders --follow
  tidings groups lag
  tidings dead-letters list --group email --topic orders`,
    );

  registerTopics(program, deps);
  registerPublish(program, deps);
  registerTail(program, deps);
  registerGroups(program, deps);
  registerDeadLetters(program, deps);
  registerParked(program, deps);
  registerRelay(program, deps);
  registerOutbox(program, deps);
  registerServe(program, deps);
  registerSchema(program, deps);
  registerTopology(program, deps);
  registerTrace(program, deps);
  registerAsyncApi(program, deps);

  // Commander's own errors (unknown option, missing argument, bad value), as one line naming the command's help.
  const configure = (command: Command) => {
    command.configureOutput({
      outputError: (text, write) => {
        const message = oneLine(text).replace(/^error:\s*/i, '');
        write(`error: ${message}; see '${commandPath(command)} --help'\n`);
      },
    });
    command.commands.forEach(configure);
  };
  configure(program);
  requireSubcommand(program);
  for (const command of program.commands) if (command.commands.length > 0) requireSubcommand(command);
  return program;
}

/**
 * Runs the program on `args` (without the node and script paths) and resolves with the exit code. Never rejects:
 * every failure is written to stderr as one line (plus the stack with `TIDINGS_DEBUG=1`).
 */
export async function runCli(args: readonly string[], deps: CliDeps): Promise<ExitCode> {
  const program = createProgram(deps);
  try {
    await program.parseAsync(args, { from: 'user' });
    return ExitCode.OK;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version exit 0; commander has already printed its own errors through outputError.
      return error.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE;
    }
    const failure = describeFailure(error);
    deps.stderr.write(`error: ${failure.line}\n`);
    if (deps.env['TIDINGS_DEBUG'] === '1' && error instanceof Error)
      deps.stderr.write(`${error.stack ?? ''}\n`);
    return failure.exitCode;
  }
}
