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

  it('02-outbox: outbox, relay and transactional inbox on PostgreSQL', async () => {
    const lines = await runExample('examples/02-outbox/main.ts');
    expect(lines).toContain('rejected at enqueue: VALIDATION_FAILED');
    expect(lines).toContain('outbox backlog before the relay: 1');
    expect(lines).toContain('o-1 delivered 2 times, applied once; invoices: o-1');
    expect(lines.at(-1)).toBe('outbox example ok');
  });

  it('03-schema-evolution: one event through three versions, a breaking v4 refused', async () => {
    const lines = await runExample('examples/03-schema-evolution/main.ts');
    expect(lines).toContain('registry: OrderPlaced versions 1, 2, 3 (BACKWARD)');
    expect(lines).toContain('v4 refused: SCHEMA_INCOMPATIBLE');
    expect(lines.join('\n')).toMatch(/field "amountCents" breaks BACKWARD compatibility with version 3/);
    expect(lines.filter((line) => line.startsWith('replayed '))).toHaveLength(4);
    expect(lines).toContain('replayed v1 s-2 → 30 EUR via store');
    expect(lines.at(-1)).toBe('schema evolution ok');
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

      // The CLI on the demo's data directory: who subscribes to OrderPlaced, and order-0007's flow.
      const who = await runExample('packages/cli/src/main.ts', [
        'topology',
        '--who-subscribes',
        'OrderPlaced',
        '--data-dir',
        dataDir,
      ]);
      expect(who[0]).toBe('OrderPlaced (topic orders) is consumed by 6 groups:');
      const groups = who.slice(2).map((line) => line.split(/\s+/)[0]);
      for (const group of ['email', 'analytics', 'warehouse', 'loyalty', 'fraud-detection'])
        expect(groups).toContain(group);
      const events = await runExample('packages/cli/src/main.ts', [
        'tail',
        'orders',
        '--from',
        'earliest',
        '--json',
        '--data-dir',
        dataDir,
      ]);
      const poison = events
        .map((line) => JSON.parse(line) as { key: string; envelope: { id: string; type: string } })
        .find((e) => e.key === 'order-0007' && e.envelope.type === 'OrderPlaced');
      const trace = await runExample('packages/cli/src/main.ts', [
        'trace',
        poison!.envelope.id,
        '--data-dir',
        dataDir,
      ]);
      expect(trace[0]).toBe(`Correlation ${poison!.envelope.id}: 2 events`);
      expect(trace).toContain(
        '├─ warehouse        parked after 3 attempts (Error: SKU "SKU-DOES-NOT-EXIST" does not exist), then skipped',
      );
      expect(trace.join('\n')).toMatch(
        /└─ PaymentReceived .*\n +├─ analytics +handled\n +└─ loyalty +handled/,
      );
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 150_000);
});
