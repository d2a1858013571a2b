import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));

/** Runs an example the way a reader would (through tsx, on the workspace sources) and returns its output lines. */
async function runExample(file: string, args: string[] = []): Promise<string[]> {
  const { stdout } = await run(
    process.execPath,
    ['--import', 'tsx', '--conditions=tidings-source', file, ...args],
    {
      cwd: root,
      timeout: 120_000,
      env: { ...process.env, NODE_NO_WARNINGS: '1' },
    },
  );
  return stdout.trim().split('\n');
}

describe('examples run and report success', () => {
  it('01-quickstart (the README tour)', async () => {
    const lines = await runExample('examples/01-quickstart/main.ts');
    expect(lines).toContain('rejected: VALIDATION_FAILED');
    expect(lines.at(-1)).toBe('quickstart ok');
  });

  it('shop (the npm start demo): separate processes on the embedded log', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tidings-shop-'));
    try {
      const lines = await runExample('examples/shop/main.ts', ['--orders', '20', '--data-dir', dataDir]);
      const output = lines.join('\n');
      expect(lines.at(-1)).toBe('demo ok');
      expect(output).toMatch(/email: still down, \d+ events behind, nothing lost/);
      expect(output).toMatch(/recommendations: backfilled 20 OrderPlaced events/);
      expect(output).toMatch(/warehouse: key order-0007 is parked after 3 attempts/);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 150_000);
});
