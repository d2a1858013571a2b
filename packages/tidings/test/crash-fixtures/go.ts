import { writeLine } from './write-line.js';

/**
 * Prints "loaded <pid>" and resolves once the parent writes a line "go" on stdin. The crash tests start the next
 * process while the previous one still runs (loading TypeScript takes seconds on a busy machine) and let it open the
 * log only once the previous one is dead. The process exits when stdin ends, so that it never outlives its parent.
 */
export function waitForGo(): Promise<void> {
  writeLine(1, `loaded ${process.pid}\n`);
  return new Promise((resolve) => {
    let buffered = '';
    let started = false;
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (chunk: string) => {
      if (started) return;
      buffered += chunk;
      if (!buffered.split('\n').includes('go')) return;
      started = true;
      resolve();
    });
    process.stdin.on('end', () => process.exit(0));
  });
}
