import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const script = fileURLToPath(new URL('./fixtures/close-on-signal.ts', import.meta.url));

describe('closeOnSignals', () => {
  it('closes gracefully on SIGTERM: the in-flight handler finishes, then the process exits 0 by itself', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--conditions=tidings-source', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let output = '';
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('in-flight')) resolve();
      });
      child.on('exit', () => reject(new Error(`child exited early: ${output}`)));
    });
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    // Handler 2 was in flight at the signal and finished; 3 was queued and is left for redelivery.
    expect(output).toMatch(/closed handled=2 error=none/);
  });
});
