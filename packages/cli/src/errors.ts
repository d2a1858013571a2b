/**
 * Turning any failure into what the user sees: one line on stderr that says what is wrong and what to do, and an
 * exit code. Stack traces only with `TIDINGS_DEBUG=1`.
 */
import { isTidingsError } from 'tidings';

/** Exit codes of the `tidings` command. */
export const ExitCode = {
  OK: 0,
  /** The operation failed: unknown topic, bad data, a conflict, a request that did not succeed. */
  FAILED: 1,
  /** The command line itself was wrong: unknown command or option, a bad option value. */
  USAGE: 2,
} as const;

export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/**
 * A failure the CLI itself detected and worded. `message` is one sentence of what is wrong followed by what to do;
 * it is printed as it is.
 */
export class CliError extends Error {
  readonly exitCode: ExitCode;

  constructor(message: string, options: { exitCode?: ExitCode; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CliError';
    this.exitCode = options.exitCode ?? ExitCode.FAILED;
  }
}

/** A bad option value or argument: exit code 2. */
export function usageError(message: string): CliError {
  return new CliError(message, { exitCode: ExitCode.USAGE });
}

/** Collapses a message to one line: newlines and runs of blanks become single spaces. */
export function oneLine(text: string): string {
  return text
    .trim()
    .replace(/\s*\n\s*/g, '; ')
    .replace(/\s+/g, ' ');
}

/** What to print for a failure, and the exit code. */
export interface Failure {
  line: string;
  exitCode: ExitCode;
}

/** SQLite's busy and locked result codes, as better-sqlite3 reports them in `error.code`. */
const lockedCodes: ReadonlySet<string> = new Set(['SQLITE_BUSY', 'SQLITE_LOCKED', 'SQLITE_BUSY_TIMEOUT']);

/** File-system codes worth translating into advice. */
function fileSystemAdvice(error: NodeJS.ErrnoException): string | undefined {
  const where = error.path === undefined ? '' : ` ${error.path}`;
  switch (error.code) {
    case 'EACCES':
    case 'EPERM':
      return `permission denied on${where}; run as a user who can read and write the data directory, or choose another with --data-dir`;
    case 'ENOSPC':
      return `no space left on the device holding${where || ' the data directory'}; free some space and try again`;
    case 'EROFS':
      return `the data directory${where} is on a read-only file system; choose a writable one with --data-dir`;
    case 'ENOTDIR':
      return `${where.trim() || 'the data directory'} is not a directory; point --data-dir at a Tidings data directory`;
    default:
      return undefined;
  }
}

/** Finds an error with a string `code` anywhere in a `cause` chain (SQLite and file-system errors are wrapped). */
function findCoded(error: unknown, depth = 0): (Error & { code: string }) | undefined {
  if (depth > 8 || !(error instanceof Error)) return undefined;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && (lockedCodes.has(code) || fileSystemAdvice(error) !== undefined))
    return error as Error & { code: string };
  return findCoded(error.cause, depth + 1);
}

/**
 * Describes any thrown value as one line and an exit code. `CliError` and `TidingsError` messages are already
 * written for people; other errors caused by a SQLite lock or the file system get advice; anything else is reported
 * as unexpected.
 */
export function describeFailure(error: unknown): Failure {
  if (error instanceof CliError) return { line: oneLine(error.message), exitCode: error.exitCode };
  // Tidings errors are worded for people already (the log's lock and permission errors included).
  if (isTidingsError(error)) {
    const exitCode = error.code === 'INVALID_CONFIG' ? ExitCode.USAGE : ExitCode.FAILED;
    return { line: oneLine(error.message), exitCode };
  }
  const coded = findCoded(error);
  if (coded !== undefined) {
    if (lockedCodes.has(coded.code)) {
      return {
        line:
          'the data directory is locked by another process for longer than the busy timeout; ' +
          'try again in a moment, or stop the process that holds it',
        exitCode: ExitCode.FAILED,
      };
    }
    const advice = fileSystemAdvice(coded);
    if (advice !== undefined) return { line: advice, exitCode: ExitCode.FAILED };
  }
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return {
    line: `unexpected failure (${oneLine(text)}); rerun with TIDINGS_DEBUG=1 for details and report it if it persists`,
    exitCode: ExitCode.FAILED,
  };
}
