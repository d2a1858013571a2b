/**
 * `tidings relay` and `tidings outbox status`, in-process, on a real SQLite outbox (and PostgreSQL and MariaDB for
 * status), publishing to the in-memory transport the test reads back.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { decodeEnvelope, defineEvent } from 'tidings';
import { createOutbox, postgres, sqlite } from 'tidings/outbox';
import { waitUntil } from 'tidings/testing';
import { createTestTransport, run } from './support.js';

const postgresUrl = process.env['TIDINGS_POSTGRES_URL'] ?? 'postgresql://postgres@127.0.0.1:5432/test';
const mariadbUrl = process.env['TIDINGS_MARIADB_URL'] ?? 'mysql://root@127.0.0.1:3306/test';

/** `text` as a literal in a regular expression. */
const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A failure: exit code 1, nothing on stdout, one line on stderr matching `pattern`. */
function expectOneLine(result: { code: number; stdout: string; stderr: string }, pattern: RegExp): void {
  expect(result.code).toBe(1);
  expect(result.stdout).toBe('');
  expect(result.stderr).toMatch(/^error: [^\n]*\n$/);
  expect(result.stderr).toMatch(pattern);
  expect(result.stderr).not.toContain('unexpected failure');
}

const OrderPlaced = defineEvent('OrderPlaced', {
  schema: z.object({ orderId: z.string() }),
  key: 'orderId',
  topic: 'orders',
});

let dir: string;
let file: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tidings-cli-outbox-'));
  file = join(dir, 'app.db');
});
afterEach(async () => rm(dir, { recursive: true, force: true }));

/** Enqueues `ids` in one committed transaction of the SQLite database at `file`. */
async function enqueue(ids: string[]): Promise<void> {
  const db = new Database(file);
  try {
    const outbox = createOutbox({ database: sqlite(db) });
    await outbox.setup();
    db.transaction(() => {
      for (const id of ids) outbox.enqueueSync(db, OrderPlaced, { orderId: id });
    })();
  } finally {
    db.close();
  }
}

describe('tidings outbox status', () => {
  it('prints the backlog and the age of the oldest event, as text and as JSON', async () => {
    await enqueue(['o-1', 'o-2']);
    const transport = createTestTransport();
    const json = await run(transport, ['outbox', 'status', '--database-url', `sqlite:${file}`, '--json']);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ table: 'tidings_outbox', backlog: 2, maxAttempts: 0 });
    const text = await run(transport, ['outbox', 'status', '--database-url', `sqlite:${file}`]);
    expect(text.stdout).toMatch(
      /^Outbox tidings_outbox in sqlite:.*: 2 unpublished events, the oldest .* old\.\n$/,
    );
  });

  it('reads a PostgreSQL outbox from a URL', async () => {
    const url = postgresUrl;
    const schema = `tidings_cli_outbox_${process.pid}`;
    const pool = new pg.Pool({ connectionString: url, max: 2 });
    try {
      await pool.query(`CREATE SCHEMA ${schema}`);
      await createOutbox({ database: postgres(pool), table: `${schema}.outbox` }).setup();
      const result = await run(createTestTransport(), [
        'outbox',
        'status',
        '--database-url',
        url,
        '--table',
        `${schema}.outbox`,
      ]);
      expect(result).toMatchObject({ code: 0, stderr: '' });
      expect(result.stdout).toContain('empty, every event is published');
    } finally {
      await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await pool.end();
    }
  });

  it('says there is no outbox table, and what creates one, on SQLite, PostgreSQL and MariaDB', async () => {
    new Database(file).close(); // an existing database without the outbox
    const transport = createTestTransport();
    const table = `tidings_cli_missing_${process.pid}`;
    const advice =
      escape(
        'it is created by outbox.setup() (or your migrations with outbox.schemaSql()) and by tidings relay; ' +
          'pass --table if yours has another name',
      ) + '\\n$';
    expectOneLine(
      await run(transport, ['outbox', 'status', '--database-url', `sqlite:${file}`]),
      new RegExp(`^error: no outbox table "tidings_outbox" in sqlite:.*app\\.db; ${advice}`),
    );
    expectOneLine(
      await run(transport, ['outbox', 'status', '--database-url', postgresUrl, '--table', table]),
      new RegExp(
        `^error: no outbox table "${table}" in postgresql://postgres@127\\.0\\.0\\.1:5432/test; ${advice}`,
      ),
    );
    expectOneLine(
      await run(transport, ['outbox', 'status', '--database-url', postgresUrl, '--table', `${table}.outbox`]),
      new RegExp(`^error: no outbox table "${table}\\.outbox" in postgresql:`),
    );
    expectOneLine(
      await run(transport, ['outbox', 'status', '--database-url', mariadbUrl, '--table', table, '--json']),
      new RegExp(`^error: no outbox table "${table}" in mysql://root@127\\.0\\.0\\.1:3306/test; ${advice}`),
    );
  });

  it('does not create a SQLite file that does not exist, and says so', async () => {
    const transport = createTestTransport();
    const result = await run(transport, ['outbox', 'status', '--database-url', `sqlite:${file}`]);
    expectOneLine(
      result,
      /^error: no SQLite database file .*app\.db \(sqlite:.*app\.db\); check the path of the URL \(a relative path/,
    );
    expect(existsSync(file)).toBe(false);
    const nested = join(dir, 'missing', 'app.db');
    expectOneLine(
      await run(transport, ['outbox', 'status', '--database-url', `file:${nested}`]),
      /^error: no SQLite database file .*missing.app\.db /,
    );
    expect(await readdir(dir)).toEqual([]);
  });

  it('says in one line that the database in the URL does not exist', async () => {
    const transport = createTestTransport();
    expectOneLine(
      await run(transport, [
        'outbox',
        'status',
        '--database-url',
        postgresUrl.replace(/\/test$/, '/tidings_no_such_db'),
      ]),
      /^error: database "tidings_no_such_db" does not exist; check the database name in the URL/,
    );
    expectOneLine(
      await run(transport, [
        'outbox',
        'status',
        '--database-url',
        mariadbUrl.replace(/\/test$/, '/tidings_no_such_db'),
      ]),
      /^error: Unknown database 'tidings_no_such_db'; check the database name in the URL/,
    );
  });

  it('fails with one line and exit code 2 without a database URL or with an unknown scheme', async () => {
    const transport = createTestTransport();
    const missing = await run(transport, ['outbox', 'status']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe(
      'error: give the database with --database-url <url> (or $DATABASE_URL), e.g. postgres://localhost/shop\n',
    );
    const unknown = await run(transport, ['outbox', 'status', '--database-url', 'oracle://db/x']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^error: unsupported database URL oracle:\/\/db\/x; use postgres:\/\//);
  });
});

describe('tidings relay', () => {
  it('publishes the outbox to the transport until interrupted, then reports what it did', async () => {
    await enqueue(['o-1', 'o-2', 'o-1']);
    const transport = createTestTransport();
    const interrupt = new AbortController();
    let stdout = '';
    const running = run(transport, ['relay', '--database-url', `sqlite:${file}`, '--json'], {
      signal: interrupt.signal,
      onStdout: (text) => (stdout += text),
    });
    await waitUntil(async () => {
      const topics = await transport.admin.listTopics();
      if (!topics.includes('orders')) return false;
      const described = await transport.admin.describeTopic('orders');
      return described.partitionOffsets.reduce((sum, p) => sum + p.highOffset, 0) === 3;
    });
    await waitUntil(() => stdout.includes('"event":"started"'));
    interrupt.abort();
    const result = await running;
    expect(result.code).toBe(0);
    const [started, stopped] = result.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as object);
    expect(started).toMatchObject({ event: 'started', table: 'tidings_outbox' });
    expect(stopped).toMatchObject({ event: 'stopped', published: 3, errors: 0 });
    const records = [];
    for (const p of (await transport.admin.describeTopic('orders')).partitionOffsets)
      records.push(...(await transport.admin.read('orders', p.partition, 0, 100)));
    const o1 = records.filter((r) => r.key === 'o-1').map((r) => decodeEnvelope(r).type);
    expect(o1).toEqual(['OrderPlaced', 'OrderPlaced']);
    await transport.shutdown();
  });

  it('refuses a SQLite file that does not exist instead of relaying a new empty database', async () => {
    const transport = createTestTransport();
    const result = await run(transport, ['relay', '--database-url', `sqlite:${file}`]);
    expectOneLine(result, /^error: no SQLite database file .*app\.db \(sqlite:.*app\.db\); check the path/);
    expect(await readdir(dir)).toEqual([]);
    expect(await transport.admin.listTopics()).toEqual([]);
    await transport.shutdown();
  });

  it('creates a missing outbox table in an existing database, and says when it cannot', async () => {
    new Database(file).close();
    const transport = createTestTransport();
    const interrupt = new AbortController();
    let stdout = '';
    const running = run(transport, ['relay', '--database-url', `sqlite:${file}`], {
      signal: interrupt.signal,
      onStdout: (text) => (stdout += text),
    });
    await waitUntil(() => stdout.includes('relay started'));
    interrupt.abort();
    expect(await running).toMatchObject({ code: 0, stderr: '' });
    const status = await run(transport, ['outbox', 'status', '--database-url', `sqlite:${file}`]);
    expect(status.stdout).toContain('empty, every event is published');
    const schema = `tidings_cli_no_schema_${process.pid}`;
    expectOneLine(
      await run(transport, ['relay', '--database-url', postgresUrl, '--table', `${schema}.outbox`]),
      new RegExp(
        `^error: could not create the outbox table ${schema}\\.outbox in postgresql:.*: schema "${schema}" does not exist; ` +
          'create its schema \\(or database\\) first, or pass another --table\n$',
      ),
    );
    await transport.shutdown();
  });

  it('stops with exit code 1 and one line when the outbox table is dropped under it', async () => {
    await enqueue(['o-1']);
    const transport = createTestTransport();
    let stdout = '';
    const running = run(transport, ['relay', '--database-url', `sqlite:${file}`, '--lease-ms', '100'], {
      onStdout: (text) => (stdout += text),
    });
    await waitUntil(() => stdout.includes('relay started'));
    const db = new Database(file);
    try {
      db.pragma('busy_timeout = 5000');
      db.exec('DROP TABLE tidings_outbox');
    } finally {
      db.close();
    }
    const result = await running;
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /^error: the outbox relay stopped: no such table: tidings_outbox; create the outbox table tidings_outbox .*\n$/,
    );
    expect(result.stdout).toMatch(/relay stopped: published 1 events/);
    await transport.shutdown();
  });
});
