import * as fs from 'node:fs';

const pause = new Int32Array(new SharedArrayBuffer(4));

/**
 * Writes `line` to `fd` synchronously and completely: once this returns, the line is in the pipe or file even if the
 * process is killed the next instant. Node may leave a pipe non-blocking; while it is full (the parent reads slower
 * than we write) the write fails with EAGAIN, and this blocks 1 ms and tries again.
 */
export function writeLine(fd: number, line: string): void {
  const bytes = Buffer.from(line);
  let written = 0;
  while (written < bytes.length) {
    try {
      written += fs.writeSync(fd, bytes, written);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') throw error;
      Atomics.wait(pause, 0, 0, 1);
    }
  }
}
