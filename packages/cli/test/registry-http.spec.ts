/**
 * `tidings serve`'s registry over HTTP: the Confluent Schema Registry REST subset, exercised with
 * @kafkajs/confluent-schema-registry (a client no one here wrote) and with plain requests for the rest.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { SchemaRegistry, SchemaType } from '@kafkajs/confluent-schema-registry';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createMemoryTransport } from 'tidings';
import type { CliDeps } from '../src/context.js';
import { buildServeApp } from '../src/serve/app.js';
import { registryContentType } from '../src/serve/registry-routes.js';

const v1 = {
  type: 'object',
  properties: { orderId: { type: 'string' }, amount: { type: 'number' } },
  required: ['orderId', 'amount'],
};
const v2 = { ...v1, properties: { ...v1.properties, note: { type: 'string' } } };
const breaking = { ...v2, required: ['orderId', 'amount', 'note'] };

let dir: string;
let app: FastifyInstance;
let base: string;

async function serve(
  extra: { registryDatabaseUrl?: string; registryDatabaseSchema?: string } = {},
): Promise<void> {
  const deps: CliDeps = {
    stdout: { write: () => true },
    stderr: { write: () => true },
    stdin: Object.assign(Readable.from([]), { isTTY: true }),
    env: {},
    cwd: dir,
    signal: new AbortController().signal,
    open: () => Promise.resolve(createMemoryTransport()),
    version: '0.0.0-test',
  };
  app = await buildServeApp({
    deps,
    common: { dataDir: join(dir, 'data'), json: false, open: { dataDir: join(dir, 'data') } },
    metrics: false,
    ...extra,
  });
  const address = await app.listen({ port: 0, host: '127.0.0.1' });
  base = `${address}/registry`;
}

/** A request as a Confluent client makes it. */
interface Answer {
  status: number;
  // The registry's answers: objects and arrays of whatever the route returns.
  json: Record<string, unknown> & { schema?: string; is_compatible?: boolean; messages?: string[] };
}

async function call(method: string, path: string, body?: unknown): Promise<Answer> {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { 'content-type': registryContentType, accept: registryContentType },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  expect(response.headers.get('content-type')).toContain(registryContentType);
  return { status: response.status, json: (await response.json()) as Answer['json'] };
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tidings-serve-registry-'));
});
afterEach(async () => {
  await app.close();
  await rm(dir, { recursive: true, force: true });
});

describe('with @kafkajs/confluent-schema-registry 3.9', () => {
  it('registers, fetches by id, encodes and decodes, looks up, and is refused an incompatible registration', async () => {
    await serve();
    const client = new SchemaRegistry({ host: base, retry: { retries: 0 } });
    const { id } = await client.register(
      { type: SchemaType.JSON, schema: JSON.stringify(v1) },
      { subject: 'OrderPlaced' },
    );
    expect(id).toBeGreaterThan(0);
    // A first registration makes the client set the subject's mode (its default, BACKWARD).
    expect((await call('GET', '/config/OrderPlaced')).json).toEqual({ compatibilityLevel: 'BACKWARD' });

    // Fetch by id: the client compiles the fetched schema (ajv) and validates payloads with it.
    const fresh = new SchemaRegistry({ host: base, retry: { retries: 0 } });
    expect(await fresh.getSchema(id)).toBeDefined();
    const encoded = await fresh.encode(id, { orderId: 'o-1', amount: 5 });
    expect(await fresh.decode(encoded)).toEqual({ orderId: 'o-1', amount: 5 });
    await expect(fresh.encode(id, { orderId: 'o-1' })).rejects.toThrow(/invalid payload/);

    const second = await client.register(
      { type: SchemaType.JSON, schema: JSON.stringify(v2) },
      { subject: 'OrderPlaced' },
    );
    expect(second.id).not.toBe(id);
    expect(await client.getLatestSchemaId('OrderPlaced')).toBe(second.id);
    expect(await client.getRegistryId('OrderPlaced', 1)).toBe(id);
    expect(
      await client.getRegistryIdBySchema('OrderPlaced', {
        type: SchemaType.JSON,
        schema: JSON.stringify(v1),
      }),
    ).toBe(id);

    // The breaking change is refused with 409, and the message names the field, the rule and the mode.
    const refused = client.register(
      { type: SchemaType.JSON, schema: JSON.stringify(breaking) },
      { subject: 'OrderPlaced' },
    );
    await expect(refused).rejects.toMatchObject({ status: 409 });
    await expect(refused).rejects.toThrow(
      /field "note" breaks BACKWARD compatibility with version 2 \(rule PROPERTY_MADE_REQUIRED/,
    );
    expect((await call('GET', '/subjects/OrderPlaced/versions')).json).toEqual([1, 2]);

    // The client refuses to register under a mode other than the subject's.
    await expect(
      client.register(
        { type: SchemaType.JSON, schema: JSON.stringify(v2) },
        { subject: 'OrderPlaced', compatibility: 'FULL' as never },
      ),
    ).rejects.toThrow(/Compatibility does not match/);
  });
});

describe('the REST subset', () => {
  it('serves subjects, versions, schemas, config and compatibility checks with Confluent errors', async () => {
    await serve();
    expect((await call('GET', '/subjects')).json).toEqual([]);
    const created = await call('POST', '/subjects/OrderPlaced/versions', {
      schema: JSON.stringify(v1),
      schemaType: 'JSON',
    });
    expect(created).toEqual({ status: 200, json: { id: 1 } });
    // Registering the same document again returns the same id.
    expect(
      (await call('POST', '/subjects/OrderPlaced/versions', { schema: JSON.stringify(v1) })).json,
    ).toEqual({ id: 1 });
    expect((await call('GET', '/subjects')).json).toEqual(['OrderPlaced']);
    const latest = await call('GET', '/subjects/OrderPlaced/versions/latest');
    expect(latest.json).toMatchObject({ subject: 'OrderPlaced', id: 1, version: 1, schemaType: 'JSON' });
    expect(JSON.parse(latest.json.schema!)).toEqual(v1);
    expect((await call('GET', '/subjects/OrderPlaced/versions/1/schema')).json).toEqual(v1);
    expect((await call('GET', '/schemas/ids/1')).json).toMatchObject({ schemaType: 'JSON' });
    expect((await call('POST', '/subjects/OrderPlaced', { schema: JSON.stringify(v1) })).json).toMatchObject({
      version: 1,
      id: 1,
    });

    // Compatibility checks.
    expect(
      (
        await call('POST', '/compatibility/subjects/OrderPlaced/versions/latest', {
          schema: JSON.stringify(v2),
        })
      ).json,
    ).toEqual({ is_compatible: true });
    const incompatible = await call('POST', '/compatibility/subjects/OrderPlaced/versions/1', {
      schema: JSON.stringify({ ...v1, properties: { ...v1.properties, amount: { type: 'integer' } } }),
    });
    expect(incompatible.json.is_compatible).toBe(false);
    expect(incompatible.json.messages?.[0]).toMatch(/field "amount" breaks BACKWARD .*rule TYPE_NARROWED/);

    // Config, global and per subject.
    expect((await call('GET', '/config')).json).toEqual({ compatibilityLevel: 'BACKWARD' });
    expect(await call('GET', '/config/OrderPlaced')).toMatchObject({
      status: 404,
      json: { error_code: 40408 },
    });
    expect((await call('GET', '/config/OrderPlaced?defaultToGlobal=true')).json).toEqual({
      compatibilityLevel: 'BACKWARD',
    });
    expect((await call('PUT', '/config', { compatibility: 'FULL' })).json).toEqual({ compatibility: 'FULL' });
    expect((await call('PUT', '/config/OrderPlaced', { compatibility: 'none' })).json).toEqual({
      compatibility: 'NONE',
    });
    expect((await call('GET', '/config/OrderPlaced')).json).toEqual({ compatibilityLevel: 'NONE' });
    expect((await call('GET', '/config')).json).toEqual({ compatibilityLevel: 'FULL' });
    // Under NONE the breaking document is accepted.
    expect(
      (await call('POST', '/subjects/OrderPlaced/versions', { schema: JSON.stringify(breaking) })).json,
    ).toEqual({ id: 2 });

    // Errors.
    expect(await call('GET', '/subjects/Nope/versions')).toMatchObject({
      status: 404,
      json: { error_code: 40401 },
    });
    expect(await call('GET', '/subjects/OrderPlaced/versions/9')).toMatchObject({
      status: 404,
      json: { error_code: 40402 },
    });
    expect(await call('GET', '/subjects/OrderPlaced/versions/zero')).toMatchObject({
      status: 422,
      json: { error_code: 42202 },
    });
    expect(await call('GET', '/schemas/ids/99')).toMatchObject({ status: 404, json: { error_code: 40403 } });
    expect(await call('POST', '/subjects/OrderPlaced', { schema: '{"type":"string"}' })).toMatchObject({
      status: 404,
      json: { error_code: 40403 },
    });
    expect(await call('POST', '/subjects/X/versions', { schema: '{not json' })).toMatchObject({
      status: 422,
      json: { error_code: 42201 },
    });
    expect(
      await call('POST', '/subjects/X/versions', { schema: 'syntax = "proto3";', schemaType: 'PROTOBUF' }),
    ).toMatchObject({
      status: 422,
      json: { error_code: 42201 },
    });
    expect(await call('PUT', '/config', { compatibility: 'SIDEWAYS' })).toMatchObject({
      status: 422,
      json: { error_code: 42203 },
    });
    const huge = await call('POST', '/subjects/X/versions', {
      schema: JSON.stringify({ type: 'object', description: 'x'.repeat(2 ** 20) }),
    });
    expect(huge.status).toBe(413);
  });

  it('keeps the registry in PostgreSQL with --registry-database-url', async () => {
    const schema = `registry_serve_${process.pid}_${Date.now() % 100000}`;
    const url = 'postgres://postgres@127.0.0.1:5432/test';
    const pool = new pg.Pool({ connectionString: url });
    try {
      await serve({ registryDatabaseUrl: url, registryDatabaseSchema: schema });
      const created = await call('POST', '/subjects/OrderPlaced/versions', { schema: JSON.stringify(v1) });
      expect(created).toEqual({ status: 200, json: { id: 1 } });
      const row = await pool.query(`SELECT subject, version FROM "${schema}".registry_versions`);
      expect(row.rows).toEqual([{ subject: 'OrderPlaced', version: 1 }]);
    } finally {
      await app.close();
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.end();
      await serve(); // afterEach closes an app
    }
  });
});

describe('tidings serve --port 0 (a subprocess, as the user runs it)', () => {
  it('serves the registry of the data directory under /registry until interrupted', async () => {
    await serve(); // afterEach closes an app
    const repo = join(import.meta.dirname, '../../..');
    const tsx = pathToFileURL(join(repo, 'node_modules/tsx/dist/loader.mjs')).href;
    const child = spawn(
      process.execPath,
      [
        '--import',
        tsx,
        '--conditions=tidings-source',
        join(repo, 'packages/cli/src/main.ts'),
        'serve',
        '--port',
        '0',
        '--data-dir',
        join(dir, 'served'),
      ],
      { cwd: dir, env: { ...process.env, NODE_NO_WARNINGS: '1' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    try {
      const address = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.setEncoding('utf8').on('data', (text: string) => {
          out += text;
          const match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
          if (match) resolve(match[1]!);
        });
        child.on('exit', (code) => reject(new Error(`tidings serve exited with ${code}`)));
      });
      const client = new SchemaRegistry({ host: `${address}/registry`, retry: { retries: 0 } });
      const { id } = await client.register(
        { type: SchemaType.JSON, schema: JSON.stringify(v1) },
        { subject: 'OrderPlaced' },
      );
      expect(id).toBe(1);
      expect(existsSync(join(dir, 'served', 'registry.db'))).toBe(true);
    } finally {
      const exited = new Promise((resolve) => child.on('exit', resolve));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
  }, 60_000);
});
