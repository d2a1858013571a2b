/**
 * Opening a data directory of the embedded log, with one-line errors for the usual mistakes: a directory that does
 * not exist, a path that is a file, a directory locked by another process.
 */
import { stat } from 'node:fs/promises';
import { isTidingsError, type Transport } from 'tidings';
import { createLogTransport } from 'tidings/log';
import type { OpenOptions } from './context.js';
import { CliError } from './errors.js';

/** The one line for a data directory that does not exist. */
function missing(dataDir: string, cause?: unknown): CliError {
  return new CliError(
    `no Tidings data directory at ${dataDir}; start your application there first (it creates one), ` +
      `create a topic with 'tidings topics create <topic> --data-dir ${dataDir}', ` +
      'or point --data-dir (or TIDINGS_DATA_DIR) at an existing one',
    { cause },
  );
}

/**
 * Opens the embedded log in `dataDir`. Creates the directory only when `create` is set; otherwise a missing one is a
 * `CliError`. Rejects with a `CliError` when the path is not a directory.
 */
export async function openLogDataDir({ dataDir, create, busyTimeoutMs }: OpenOptions): Promise<Transport> {
  try {
    const info = await stat(dataDir);
    if (!info.isDirectory()) {
      throw new CliError(
        `${dataDir} is a file, not a Tidings data directory; point --data-dir at a directory`,
      );
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    if (!create) throw missing(dataDir, error);
  }
  try {
    return createLogTransport({
      dataDir,
      createIfMissing: create,
      ...(busyTimeoutMs === undefined ? {} : { busyTimeoutMs }),
    });
  } catch (error) {
    if (isTidingsError(error, 'NOT_FOUND')) throw missing(dataDir, error);
    throw error;
  }
}
