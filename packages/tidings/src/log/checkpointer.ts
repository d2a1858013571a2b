/**
 * WAL checkpoints off the event loop. SQLite's automatic checkpoint runs inside the COMMIT that crosses the
 * threshold, on the committing thread: copying megabytes into the database file and fsyncing it, which would stall
 * publishes and deliveries for tens of milliseconds. Instead every transport turns automatic checkpoints off and
 * runs `PRAGMA wal_checkpoint(PASSIVE)` every 200 ms from a worker thread with its own connection. A PASSIVE
 * checkpoint never waits for a lock and never blocks writers or readers; several processes' checkpointers simply
 * take turns. The worker is a small plain-JavaScript script (evaluated, so it runs the same from TypeScript sources
 * and from the build), does not keep the process alive and is stopped by `close()`.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/** How often the worker checkpoints. */
export const checkpointIntervalMs = 200;

const workerSource = `
'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file, { fileMustExist: true, timeout: 0 });
db.pragma('busy_timeout = 0');
db.pragma('synchronous = NORMAL');
db.pragma('wal_autocheckpoint = 0');
db.pragma('cache_size = -1024');
const checkpoint = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');
const timer = setInterval(() => {
  try {
    checkpoint.get();
  } catch {
    // Busy (another checkpointer, a WAL recovery) or a transient I/O error: the next interval tries again.
  }
}, workerData.intervalMs);
parentPort.on('message', (message) => {
  if (message !== 'close') return;
  clearInterval(timer);
  try {
    db.close();
  } finally {
    parentPort.close();
  }
});
`;

/** A running checkpoint worker; `close` stops it and resolves once its connection is closed. */
export interface Checkpointer {
  close(): Promise<void>;
}

/**
 * Starts the checkpoint worker for the database `file`, or returns undefined if a worker cannot be started (the
 * caller then keeps SQLite's automatic checkpoints).
 */
export function startCheckpointer(file: string): Checkpointer | undefined {
  let worker: Worker;
  try {
    const driver = createRequire(import.meta.url).resolve('better-sqlite3');
    worker = new Worker(workerSource, {
      eval: true,
      workerData: { driver, file, intervalMs: checkpointIntervalMs },
      stdout: false,
      stderr: false,
    });
  } catch {
    return undefined;
  }
  worker.unref();
  const exited = new Promise<void>((resolve) => {
    worker.once('exit', () => resolve());
    worker.once('error', () => resolve());
  });
  let closing: Promise<void> | undefined;
  return {
    close: () => {
      closing ??= (async () => {
        worker.ref(); // keep the process alive until the worker has closed its connection and exited
        worker.postMessage('close');
        const timeout = setTimeout(() => void worker.terminate(), 5_000);
        timeout.unref();
        await exited;
        clearTimeout(timeout);
      })();
      return closing;
    },
  };
}
