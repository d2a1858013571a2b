/**
 * The registry over each store (memory, the data directory's SQLite file, PostgreSQL): registration under the
 * subject's mode, ids shared across subjects, modes, limits, durability across reopen, and concurrent registrations.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isTidingsError } from 'tidings';
import {
  createMemorySchemaStore,
  createPostgresSchemaStore,
  createSchemaRegistry,
  createSqliteSchemaStore,
  maxSchemaBytes,
  maxVersionsPerSubject,
  registryFileName,
  type SchemaRegistry,
  type SchemaStore,
} from 'tidings/registry';
import { existsSync } from 'node:fs';

const pgUrl = 'postgres://postgres@127.0.0.1:5432/test';
const v1 = { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] };
const v2 = {
  type: 'object',
  properties: { id: { type: 'string' }, note: { type: 'string' } },
  required: ['id'],
};
const breaking = { ...v2, required: ['id', 'note'] };

async function rejection(
  promise: Promise<unknown>,
): Promise<Error & { code?: string; details?: Record<string, unknown> }> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a rejection');
}

const dirs: string[] = [];
const schemas: string[] = [];
afterAll(async () => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  const pool = new pg.Pool({ connectionString: pgUrl });
  for (const schema of schemas) await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await pool.end();
});

interface Kind {
  name: string;
  /** Opens a store; `again` reopens the same durable storage. */
  open(): Promise<{ store: SchemaStore; again?: () => Promise<SchemaStore> }>;
}

const kinds: Kind[] = [
  { name: 'memory', open: () => Promise.resolve({ store: createMemorySchemaStore() }) },
  {
    name: 'sqlite (data directory)',
    open() {
      const dir = mkdtempSync(join(tmpdir(), 'tidings-registry-'));
      dirs.push(dir);
      const dataDir = join(dir, 'data');
      return Promise.resolve({
        store: createSqliteSchemaStore({ dataDir }),
        again: () => Promise.resolve(createSqliteSchemaStore({ dataDir })),
      });
    },
  },
  {
    name: 'postgres',
    async open() {
      const schema = `registry_test_${process.pid}_${schemas.length}_${Date.now() % 100000}`;
      schemas.push(schema);
      return {
        store: await createPostgresSchemaStore({ url: pgUrl, schema }),
        again: () => createPostgresSchemaStore({ url: pgUrl, schema }),
      };
    },
  },
];

describe.each(kinds)('the registry on the $name store', (kind) => {
  let registry: SchemaRegistry;
  let again: (() => Promise<SchemaStore>) | undefined;
  const extra: SchemaRegistry[] = [];

  beforeEach(async () => {
    const opened = await kind.open();
    registry = createSchemaRegistry({ store: opened.store });
    again = opened.again;
  });
  afterEach(async () => {
    await registry.close();
    for (const other of extra.splice(0)) await other.close();
  });

  it('registers versions, is idempotent for the same document, and reads them back', async () => {
    const first = await registry.register('OrderPlaced', v1);
    expect(first).toMatchObject({ subject: 'OrderPlaced', version: 1, created: true, schema: v1 });
    // Key order does not matter: the same document is the same version.
    const same = await registry.register('OrderPlaced', {
      required: ['id'],
      properties: { id: { type: 'string' } },
      type: 'object',
    });
    expect(same).toMatchObject({ version: 1, id: first.id, created: false });
    const second = await registry.register('OrderPlaced', v2);
    expect(second).toMatchObject({ version: 2, created: true });
    expect(second.id).not.toBe(first.id);
    expect(await registry.versions('OrderPlaced')).toEqual([1, 2]);
    expect((await registry.getVersion('OrderPlaced', 'latest')).schema).toEqual(v2);
    expect(await registry.getSchema(first.id)).toEqual(v1);
    expect(await registry.lookup('OrderPlaced', v1)).toMatchObject({ version: 1 });
    expect(await registry.lookup('OrderPlaced', breaking)).toBeUndefined();
    // The same document under another subject keeps its id.
    const other = await registry.register('OrderShipped', v1);
    expect(other).toMatchObject({ version: 1, id: first.id });
    expect(await registry.subjects()).toEqual(['OrderPlaced', 'OrderShipped']);
  });

  it('refuses an incompatible version with SCHEMA_INCOMPATIBLE naming field, rule and mode, and writes nothing', async () => {
    await registry.register('OrderPlaced', v1);
    const error = await rejection(registry.register('OrderPlaced', breaking));
    expect(isTidingsError(error, 'SCHEMA_INCOMPATIBLE')).toBe(true);
    expect(error.message).toMatch(
      /field "note" breaks BACKWARD compatibility with version 1 \(rule PROPERTY_ADDED_REQUIRED/,
    );
    expect(error.details).toMatchObject({ subject: 'OrderPlaced', mode: 'BACKWARD' });
    expect(await registry.versions('OrderPlaced')).toEqual([1]);
    const check = await registry.check('OrderPlaced', breaking);
    expect(check).toMatchObject({ compatible: false, mode: 'BACKWARD', comparedWith: [1] });
  });

  it('keeps a mode per subject and a global default of BACKWARD', async () => {
    expect(await registry.getCompatibility()).toBe('BACKWARD');
    expect(await registry.getCompatibilityConfig('OrderPlaced')).toBeUndefined();
    await registry.register('OrderPlaced', v1);
    await registry.setCompatibility('NONE', 'OrderPlaced');
    expect(await registry.getCompatibility('OrderPlaced')).toBe('NONE');
    expect((await registry.register('OrderPlaced', breaking)).version).toBe(2);
    await registry.setCompatibility('FULL');
    expect(await registry.getCompatibility()).toBe('FULL');
    expect(await registry.getCompatibility('Other')).toBe('FULL');
    expect(await registry.getCompatibility('OrderPlaced')).toBe('NONE');
  });

  it('enforces its limits and reports unknown subjects, versions and ids as NOT_FOUND', async () => {
    const huge = { type: 'object', description: 'x'.repeat(maxSchemaBytes) };
    expect(await rejection(registry.register('Big', huge))).toMatchObject({ code: 'INVALID_CONFIG' });
    expect(await rejection(registry.register('', v1))).toMatchObject({ code: 'INVALID_CONFIG' });
    expect(await rejection(registry.register('a\nb', v1))).toMatchObject({ code: 'INVALID_CONFIG' });
    expect(await rejection(registry.versions('Nope'))).toMatchObject({ code: 'NOT_FOUND' });
    await registry.register('OrderPlaced', v1);
    expect(await rejection(registry.getVersion('OrderPlaced', 7))).toMatchObject({ code: 'NOT_FOUND' });
    expect(await rejection(registry.getSchema(9999))).toMatchObject({ code: 'NOT_FOUND' });
  });

  const durable = kind.name === 'memory' ? () => undefined : it;
  durable('is durable: a reopened store holds the versions and modes', async () => {
    await registry.register('OrderPlaced', v1);
    await registry.register('OrderPlaced', v2);
    await registry.setCompatibility('FULL_TRANSITIVE', 'OrderPlaced');
    const reopened = createSchemaRegistry({ store: await again!() });
    extra.push(reopened);
    expect(await reopened.versions('OrderPlaced')).toEqual([1, 2]);
    expect(await reopened.getCompatibility('OrderPlaced')).toBe('FULL_TRANSITIVE');
  });

  durable('serialises concurrent registrations through two connections', async () => {
    const second = createSchemaRegistry({ store: await again!() });
    extra.push(second);
    await registry.register('OrderPlaced', v1);
    // Two compatible, different documents at once: both land, as versions 2 and 3, never both as 2.
    const a = { ...v2, description: 'a' };
    const b = { ...v2, description: 'b' };
    const results = await Promise.all([
      registry.register('OrderPlaced', a),
      second.register('OrderPlaced', b),
    ]);
    expect(results.map((r) => r.version).sort()).toEqual([2, 3]);
    expect(await registry.versions('OrderPlaced')).toEqual([1, 2, 3]);
  });
});

it('the data directory store lives beside the log, in registry.db', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tidings-registry-'));
  dirs.push(dir);
  const store = createSqliteSchemaStore({ dataDir: dir });
  expect(existsSync(join(dir, registryFileName))).toBe(true);
  return store.close();
});

it(`refuses a version past the ${maxVersionsPerSubject}th of a subject with CONFLICT`, async () => {
  const registry = createSchemaRegistry({ store: createMemorySchemaStore() });
  await registry.setCompatibility('NONE');
  for (let n = 1; n <= maxVersionsPerSubject; n++)
    await registry.register('Busy', { type: 'object', description: `v${n}` });
  const error = await rejection(registry.register('Busy', { type: 'object', description: 'one too many' }));
  expect(error).toMatchObject({ code: 'CONFLICT' });
  expect(error.message).toMatch(
    /already holds 1000 versions, the most allowed \(1000\); start a new event type/,
  );
  await registry.close();
});
