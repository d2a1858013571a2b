// The peers underneath any durable log on this machine: what the disk allows (appends + fdatasync) and what raw
// better-sqlite3 does with the same 256-byte records. Measured in the same run as the log cases they are compared to.
import { closeSync, fdatasyncSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { median } from './report.js';

export const recordBytes = 256;
const writeBytes = 64 * 1024;

/** A fresh directory under the OS temp dir, removed by the returned function. */
export function tempDir(prefix: string): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), `tidings-bench-${prefix}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/**
 * The physical limit: `records` 256-byte records appended to a new file in 64 KiB writes, each write followed by
 * fdatasync, as records/s. A log that group-commits perfectly cannot beat this.
 */
export function appendFsyncRate(records: number): number {
  const dir = tempDir('fsync');
  try {
    const fd = openSync(join(dir.path, 'append.log'), 'a');
    const chunk = Buffer.alloc(writeBytes, 0x78);
    const perWrite = writeBytes / recordBytes;
    const writes = Math.ceil(records / perWrite);
    const started = performance.now();
    for (let i = 0; i < writes; i++) {
      writeSync(fd, chunk);
      fdatasyncSync(fd);
    }
    const seconds = (performance.now() - started) / 1000;
    closeSync(fd);
    return (writes * perWrite) / seconds;
  } finally {
    dir.remove();
  }
}

/** The median latency, in ms, of one 256-byte append followed by fdatasync, over `samples` appends. */
export function fdatasyncLatencyMs(samples: number): number {
  const dir = tempDir('fsync-latency');
  try {
    const fd = openSync(join(dir.path, 'append.log'), 'a');
    const record = Buffer.alloc(recordBytes, 0x78);
    const times: number[] = [];
    for (let i = 0; i < samples; i++) {
      const started = performance.now();
      writeSync(fd, record);
      fdatasyncSync(fd);
      times.push(performance.now() - started);
    }
    closeSync(fd);
    return percentile(times, 0.5);
  } finally {
    dir.remove();
  }
}

/** Raw better-sqlite3: `rows` 256-byte blobs in 1000-row transactions into a WAL database with synchronous=FULL. */
export function sqliteInsertRate(rows: number): number {
  const dir = tempDir('sqlite');
  try {
    const db = new Database(join(dir.path, 'peer.db'));
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.exec('CREATE TABLE records (id INTEGER PRIMARY KEY, value BLOB NOT NULL)');
    const insert = db.prepare('INSERT INTO records (value) VALUES (?)');
    const blob = Buffer.alloc(recordBytes, 0x78);
    const batch = db.transaction((count: number) => {
      for (let i = 0; i < count; i++) insert.run(blob);
    });
    const started = performance.now();
    for (let done = 0; done < rows; done += 1000) batch(Math.min(1000, rows - done));
    const seconds = (performance.now() - started) / 1000;
    db.close();
    return rows / seconds;
  } finally {
    dir.remove();
  }
}

export interface DiskPeers {
  /** records/s, 64 KiB appends + fdatasync. */
  appendFsync: number;
  /** ms, median of one 256-byte append + fdatasync. */
  fdatasyncMs: number;
  /** rows/s, raw better-sqlite3 WAL synchronous=FULL, 1000-row transactions. */
  sqlite: number;
}

/** Each peer is the median of `runs` measurements; computed once per bench run and shared by the cases. */
export async function measureDiskPeers(events: number, runs: number): Promise<DiskPeers> {
  const appendFsync = await median(runs, () =>
    Promise.resolve(appendFsyncRate(Math.max(events, 256 * 1024))),
  );
  const fdatasyncMs = await median(runs, () => Promise.resolve(fdatasyncLatencyMs(500)));
  const sqlite = await median(runs, () => Promise.resolve(sqliteInsertRate(events)));
  return { appendFsync, fdatasyncMs, sqlite };
}

/** The value at quantile `q` (0..1) of `values` (nearest rank); sorts `values` in place. */
export function percentile(values: number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  values.sort((a, b) => a - b);
  return values[Math.min(values.length - 1, Math.max(0, Math.ceil(q * values.length) - 1))]!;
}
