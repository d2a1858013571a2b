/**
 * The schema CI gate, `tidings schema lock|check|diff`: in-process for the outputs, and as a user runs it (a
 * subprocess, through tsx on the sources) for exit codes and the package.json setting.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseLock } from 'tidings/registry';
import { createTestTransport, run } from './support.js';

const repo = resolve(import.meta.dirname, '../../..');
const fixtures = join(import.meta.dirname, 'fixtures/schema');
const v1 = join(fixtures, 'events-v1.ts');
const v2 = join(fixtures, 'events-v2.ts');
const v3 = join(fixtures, 'events-v3-breaking.ts');

const transport = createTestTransport();
afterAll(() => transport.shutdown());

let dir: string;
let lock: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tidings-schema-'));
  lock = join(dir, 'tidings.schema.lock.json');
});
afterEach(() => rm(dir, { recursive: true, force: true }));

const schema = (command: string, definitions: string, ...rest: string[]) =>
  run(transport, ['schema', command, ...rest, '--definitions', definitions, '--lock', lock]);

describe('tidings schema (in-process)', () => {
  it('lock writes the lock file from the definitions; check passes on the same code', async () => {
    const locked = await schema('lock', v1);
    expect(locked.stderr).toBe('');
    expect(locked.code).toBe(0);
    expect(locked.stdout).toContain('locked OrderPlaced version 1 (new)');
    const content = parseLock(await readFile(lock, 'utf8'));
    expect(content.compatibility).toBe('BACKWARD');
    expect(Object.keys(content.subjects)).toEqual(['OrderPlaced', 'OrderShipped']);
    expect(content.subjects['OrderPlaced']!.versions).toMatchObject([
      { version: 1, schema: { type: 'object', required: ['orderId', 'amount', 'status'] } },
    ]);
    const checked = await schema('check', v1);
    expect(checked.code).toBe(0);
    expect(checked.stdout).toContain('ok: the code matches the lock');
  });

  it('check accepts a compatible change (exit 0) and says to lock it; lock appends version 2', async () => {
    await schema('lock', v1);
    const checked = await schema('check', v2);
    expect(checked.stderr).toBe('');
    expect(checked.code).toBe(0);
    expect(checked.stdout).toContain('OrderPlaced: compatible change under BACKWARD (version 2, locked 1)');
    expect(checked.stdout).toContain('+ note: property added (optional, type "string")');
    expect(checked.stdout).toContain('+ status: enum values added ("cancelled")');
    expect(checked.stdout).toMatch(/ok: 1 compatible change; run 'tidings schema lock'/);
    expect((await schema('lock', v2)).code).toBe(0);
    const content = parseLock(await readFile(lock, 'utf8'));
    expect(content.subjects['OrderPlaced']!.versions.map((v) => v.version)).toEqual([1, 2]);
    expect((await schema('check', v2)).stdout).toContain('ok: the code matches the lock');
  });

  it('check fails (exit 1) on a breaking change with a readable diff naming field, rule and mode', async () => {
    await schema('lock', v1);
    await schema('lock', v2);
    const checked = await schema('check', v3);
    expect(checked.code).toBe(1);
    const out = checked.stdout;
    expect(out).toContain('✗ OrderPlaced: BREAKING under BACKWARD (version 3, locked 2)');
    expect(out).toMatch(/✗ field "amount" breaks BACKWARD compatibility with version 2 \(rule TYPE_NARROWED/);
    expect(out).toMatch(
      /✗ field "status" breaks BACKWARD compatibility with version 2 \(rule ENUM_NARROWED.*"paid"/,
    );
    expect(out).toMatch(
      /✗ field "customer" breaks BACKWARD compatibility with version 2 \(rule PROPERTY_ADDED_REQUIRED/,
    );
    expect(out).toContain('+ customer: property added (required, type "string")');
    expect(out).toContain('- status: enum values removed ("paid")');
    expect(out).toContain('OrderShipped: unchanged');
    expect(checked.stderr).toMatch(
      /^error: 1 event type has a breaking change \(OrderPlaced\); make it compatible/,
    );
    expect(checked.stderr.trim().split('\n')).toHaveLength(1);
    // lock refuses it too, and leaves the lock as it was; --force records it.
    const before = await readFile(lock, 'utf8');
    const refused = await schema('lock', v3);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/not locked: OrderPlaced has a breaking change/);
    expect(await readFile(lock, 'utf8')).toBe(before);
    expect((await schema('lock', v3, '--force')).code).toBe(0);
    expect(
      parseLock(await readFile(lock, 'utf8')).subjects['OrderPlaced']!.versions.map((v) => v.version),
    ).toEqual([1, 2, 3]);
  });

  it("honours a subject's mode from the lock (NONE lets the breaking change pass)", async () => {
    await schema('lock', v1);
    await schema('lock', v2);
    const content = parseLock(await readFile(lock, 'utf8'));
    content.subjects['OrderPlaced']!.compatibility = 'NONE';
    await writeFile(lock, JSON.stringify(content));
    const checked = await schema('check', v3);
    expect(checked.code).toBe(0);
    expect(checked.stdout).toContain('OrderPlaced: compatible change under NONE');
  });

  it('diff <type> shows what changed, and suggests a type for a typo', async () => {
    await schema('lock', v1);
    const diff = await run(transport, ['schema', 'diff', 'OrderPlaced', '--definitions', v3, '--lock', lock]);
    expect(diff.code).toBe(0);
    expect(diff.stdout).toContain('~ amount: type changed ("number" → "integer")');
    expect(diff.stdout).toContain(
      '+ currency: property added (optional, type "string", default "EUR", enum ["EUR","USD"])',
    );
    const typo = await run(transport, ['schema', 'diff', 'OrderPlacd', '--definitions', v3, '--lock', lock]);
    expect(typo.code).toBe(1);
    expect(typo.stderr).toMatch(/no event type "OrderPlacd".*did you mean 'OrderPlaced'\?/);
    const json = await run(transport, [
      'schema',
      'diff',
      'OrderPlaced',
      '--json',
      '--definitions',
      v3,
      '--lock',
      lock,
    ]);
    expect(JSON.parse(json.stdout)).toMatchObject({
      type: 'OrderPlaced',
      status: 'breaking',
      mode: 'BACKWARD',
    });
  });

  it('says what to do when the lock or definitions are missing or wrong', async () => {
    const noLock = await schema('check', v1);
    expect(noLock.code).toBe(1);
    expect(noLock.stderr).toMatch(
      /^error: no schema lock at .*; create it with 'tidings schema lock' and commit it/,
    );
    await schema('lock', v1);
    const noDefinitions = await run(transport, ['schema', 'check', '--lock', lock]);
    expect(noDefinitions.code).toBe(2);
    expect(noDefinitions.stderr).toMatch(/no definitions module: pass --definitions <module>/);
    const missing = await schema('lock', join(dir, 'nope.ts'));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/nope\.ts does not exist/);
    const throws = await schema('lock', join(fixtures, 'throws.ts'));
    expect(throws.code).toBe(1);
    expect(throws.stderr).toMatch(/could not load the definitions module .*throws\.ts: database URL missing/);
    const empty = await schema('lock', join(fixtures, 'empty.ts'));
    expect(empty.code).toBe(1);
    expect(empty.stderr).toMatch(/exports no event or command definitions/);
    const badMode = await schema('lock', v1, '--compatibility', 'SIDEWAYS');
    expect(badMode.code).toBe(2);
    expect(badMode.stderr).toMatch(/--compatibility "SIDEWAYS" is not one of BACKWARD/);
    await writeFile(lock, '{"lockfileVersion": 7}');
    const corrupt = await schema('check', v1);
    expect(corrupt.code).toBe(1);
    expect(corrupt.stderr).toMatch(/is not a valid schema lock \(lockfileVersion 7, expected 1\)/);
  });
});

describe('tidings schema (as the user runs it, a subprocess)', () => {
  const main = join(repo, 'packages/cli/src/main.ts');
  // tsx from the repository (the temporary working directory has no node_modules).
  const tsx = pathToFileURL(join(repo, 'node_modules/tsx/dist/loader.mjs')).href;
  function tidings(args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((done) => {
      execFile(
        process.execPath,
        ['--import', tsx, '--conditions=tidings-source', main, ...args],
        { cwd, env: { ...process.env, NODE_NO_WARNINGS: '1' } },
        (error, stdout, stderr) => done({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
      );
    });
  }

  it('finds the definitions through package.json and exits 0, 1 and 2', async () => {
    await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'app', tidings: { definitions: v1 } }));
    const locked = await tidings(['schema', 'lock'], dir);
    expect(locked.stderr).toBe('');
    expect(locked.code).toBe(0);
    expect(JSON.parse(await readFile(lock, 'utf8'))).toMatchObject({ lockfileVersion: 1 });
    expect((await tidings(['schema', 'check'], dir)).code).toBe(0);
    const breaking = await tidings(['schema', 'check', '--definitions', v3], dir);
    expect(breaking.code).toBe(1);
    expect(breaking.stdout).toContain('✗ OrderPlaced: BREAKING under BACKWARD');
    expect(breaking.stderr).toMatch(/^error: 1 event type has a breaking change/);
    const usage = await tidings(['schema', 'check', '--bogus'], dir);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/unknown option '--bogus'/);
  }, 60_000);
});
