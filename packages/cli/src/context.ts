/**
 * What every command gets: the process's streams and environment, a way to open the data directory, and the
 * options of the commands that work on one (`--data-dir`, and `--json` where the output has a JSON form). Injected, so that tests can run commands in-process on the
 * in-memory transport.
 */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { Transport } from 'tidings';
import type { Output } from './format.js';
import { parseInteger } from './parse.js';

/** How the CLI opens a data directory. */
export interface OpenOptions {
  /** Absolute path of the data directory. */
  dataDir: string;
  /** Create the directory if it does not exist (`topics create`, `publish`); otherwise a missing one is an error. */
  create: boolean;
  /** How long a write waits for another process's write lock (`TIDINGS_BUSY_TIMEOUT_MS`); the log's default if absent. */
  busyTimeoutMs?: number;
}

/** The process around the CLI. */
export interface CliDeps {
  stdout: Output & { readonly columns?: number };
  stderr: Output;
  stdin: AsyncIterable<string | Uint8Array> & { readonly isTTY?: boolean };
  env: Readonly<Record<string, string | undefined>>;
  cwd: string;
  /** Aborted on SIGINT / SIGTERM: long-running commands (`tail --follow`, waits) stop cleanly. */
  signal: AbortSignal;
  /** Opens the transport over a data directory; rejects with a one-line `CliError` when it cannot. */
  open(options: OpenOptions): Promise<Transport>;
  /** The CLI's version, for `--version`. */
  version: string;
}

/** The options of a command that works on a data directory (`json` false where it takes no `--json`). */
export interface CommonOptions {
  /** Absolute path of the data directory. */
  dataDir: string;
  json: boolean;
  /** How to open the data directory, but for whether to create it. */
  open: Omit<OpenOptions, 'create'>;
}

export const defaultDataDir = './.tidings';

/**
 * Adds `--data-dir` and `--json` to a command that works on a data directory. `json` is the description of `--json`,
 * or `false` for a command whose output has no JSON form (`serve`) or is JSON already (`asyncapi`).
 */
export function withCommonOptions(
  command: Command,
  { json = 'print machine-readable JSON instead of text' }: { json?: string | false } = {},
): Command {
  command.option(
    '-d, --data-dir <dir>',
    `the data directory (default: $TIDINGS_DATA_DIR, else ${defaultDataDir})`,
  );
  return json === false ? command : command.option('--json', json);
}

/** Reads the common options of a command, resolving the data directory against the working directory. */
export function commonOptions(deps: CliDeps, command: Command): CommonOptions {
  const options = command.opts<{ dataDir?: string; json?: boolean }>();
  const dir = options.dataDir ?? deps.env['TIDINGS_DATA_DIR'] ?? defaultDataDir;
  const dataDir = resolve(deps.cwd, dir === '' ? defaultDataDir : dir);
  const busy = deps.env['TIDINGS_BUSY_TIMEOUT_MS'];
  const open: Omit<OpenOptions, 'create'> =
    busy === undefined || busy === ''
      ? { dataDir }
      : { dataDir, busyTimeoutMs: parseInteger(busy, 'TIDINGS_BUSY_TIMEOUT_MS') };
  return { dataDir, json: options.json === true, open };
}

/**
 * Opens the data directory, runs `fn`, and closes the transport whatever happens. A failure to close after `fn`
 * failed does not hide `fn`'s error.
 */
export async function withTransport<T>(
  deps: CliDeps,
  options: OpenOptions,
  fn: (transport: Transport) => Promise<T>,
): Promise<T> {
  const transport = await deps.open(options);
  let result: T;
  try {
    result = await fn(transport);
  } catch (error) {
    await transport.close().catch(() => undefined);
    throw error;
  }
  await transport.close();
  return result;
}

/** Writes one JSON document, indented, with a final newline. */
export function writeJson(out: Output, value: unknown): void {
  out.write(`${JSON.stringify(value, jsonReplacer, 2)}\n`);
}

/** Writes one JSON value on one line (JSON Lines), for streams of results. */
export function writeJsonLine(out: Output, value: unknown): void {
  out.write(`${JSON.stringify(value, jsonReplacer)}\n`);
}

/** Bytes become base64 strings rather than objects of indices. */
function jsonReplacer(_key: string, value: unknown): unknown {
  return value instanceof Uint8Array ? Buffer.from(value).toString('base64') : value;
}
