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

/** Runs the `tidings` CLI (on the workspace sources) from the repository root; resolves with its exit code too. */
async function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(
      process.execPath,
      ['--import', 'tsx', '--conditions=tidings-source', 'packages/cli/src/main.ts', ...args],
      { cwd: root, timeout: 120_000, env: { ...process.env, NODE_NO_WARNINGS: '1' } },
    );
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: unknown; stdout?: string; stderr?: string };
    if (typeof failed.code !== 'number') throw error;
    return { code: failed.code, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
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

  it('03-schema-evolution: the schema CI gate passes current.ts and fails breaking.ts against the committed lock', async () => {
    const lock = ['--lock', 'examples/03-schema-evolution/tidings.schema.lock.json'];
    const current = await runCli([
      'schema',
      'check',
      '--definitions',
      'examples/03-schema-evolution/current.ts',
      ...lock,
    ]);
    expect(current.code, current.stdout + current.stderr).toBe(0);
    expect(current.stdout).toContain('  OrderPlaced: unchanged (version 3, locked 3)');
    expect(current.stdout).toContain('ok: the code matches the lock');

    const breaking = await runCli([
      'schema',
      'check',
      '--definitions',
      'examples/03-schema-evolution/breaking.ts',
      ...lock,
    ]);
    expect(breaking.code, breaking.stdout + breaking.stderr).toBe(1);
    expect(breaking.stdout).toContain('✗ OrderPlaced: BREAKING under BACKWARD (version 4, locked 3)');
    expect(breaking.stdout).toMatch(/✗ field "amountCents" breaks BACKWARD compatibility with version 3/);
    expect(breaking.stdout).toContain('- amount: property removed (was required)');
    expect(breaking.stdout).toContain('+ amountCents: property added (required, type "integer")');
    expect(breaking.stderr).toMatch(/^error: 1 event type has a breaking change \(OrderPlaced\)/);
  }, 150_000);

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
      const records = events.map(
        (line) => JSON.parse(line) as { key: string; envelope: { id: string; type: string } },
      );
      const poison = records.find((e) => e.key === 'order-0007' && e.envelope.type === 'OrderPlaced');

      // The demo prints a ready-to-paste trace command for the poison order's flow (its OrderPlaced id).
      const printed = lines.find((line) => line.includes('npx tidings trace '));
      expect(printed).toBe(
        `shop: order-0007's flow (parked, then skipped): npx tidings trace ${poison!.envelope.id} --data-dir ${dataDir}`,
      );
      expect(lines.indexOf(printed!)).toBeLessThan(lines.length - 1);
      const traceArgs = printed!
        .slice(printed!.indexOf('npx tidings trace ') + 'npx tidings '.length)
        .split(' ');
      const trace = await runExample('packages/cli/src/main.ts', traceArgs);
      expect(trace[0]).toBe(`Correlation ${poison!.envelope.id}: 2 events`);
      expect(trace).toContain(
        '├─ warehouse        parked after 3 attempts (Error: SKU "SKU-DOES-NOT-EXIST" does not exist), then skipped',
      );
      expect(trace.join('\n')).toMatch(
        /└─ PaymentReceived .*\n +├─ analytics +handled\n +└─ loyalty +handled/,
      );

      // The producer retry re-published order-0001's payment with its id, correlation and causation: one flow,
      // the copy shown as such, not as a second event.
      const first = records.find((e) => e.key === 'order-0001' && e.envelope.type === 'OrderPlaced');
      const retried = await runExample('packages/cli/src/main.ts', [
        'trace',
        first!.envelope.id,
        '--data-dir',
        dataDir,
      ]);
      const retriedText = retried.join('\n');
      expect(retried[0]).toBe(
        `Correlation ${first!.envelope.id}: 2 events (+1 re-published copy of the same id)`,
      );
      expect(retriedText).toMatch(
        /PaymentReceived (\S+) .*\n(?:.*\n)*.*PaymentReceived \1 \(re-published copy\)/,
      );
      expect(retriedText).toMatch(
        /\(re-published copy\).*\n +├─ analytics +passed \(handled again, or dropped by an inbox\)/,
      );
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 150_000);
});
