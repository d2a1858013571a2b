import { execFile } from 'node:child_process';
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
      timeout: 60_000,
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

  it('shop (the npm start demo)', async () => {
    const lines = await runExample('examples/shop/main.ts', ['--orders', '20']);
    expect(lines.at(-1)).toBe('demo ok');
    expect(lines.join('\n')).toMatch(/warehouse: parked key order-0007/);
  });
});
