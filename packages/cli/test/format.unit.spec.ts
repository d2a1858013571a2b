import { describe, expect, it } from 'vitest';
import { describeFailure, CliError, oneLine } from '../src/errors.js';
import { createProgress, formatAge, formatBytes, formatDuration, table, truncate } from '../src/format.js';
import { TidingsError } from 'tidings';

describe('human output', () => {
  it('aligns tables: text to the left, numbers to the right, no trailing blanks', () => {
    const text = table(
      [{ header: 'TOPIC' }, { header: 'EVENTS', align: 'right' }, { header: 'NOTE' }],
      [
        ['orders', '1,024', ''],
        ['payments-eu', '7', 'slow'],
      ],
    );
    expect(text).toBe(
      ['TOPIC        EVENTS  NOTE', 'orders        1,024', 'payments-eu       7  slow', ''].join('\n'),
    );
  });

  it('truncates with an ellipsis, and formats durations, sizes and ages', () => {
    expect(truncate('abcdef', 4)).toBe('abc…');
    expect(truncate('abc', 4)).toBe('abc');
    expect(formatDuration(7 * 86_400_000)).toBe('7d');
    expect(formatDuration(90_000)).toBe('90s');
    expect(formatDuration(250)).toBe('250ms');
    expect(formatBytes(1024 ** 3)).toBe('1 GiB');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatAge(1_000, 1_500)).toBe('just now');
    expect(formatAge(0, 120_000)).toBe('2m ago');
  });

  it('shows progress on a terminal only, for operations that run longer than the delay, and clears it', () => {
    let written = '';
    const terminal = { write: (text: string) => (written += text), isTTY: true };
    const quick = createProgress(terminal, { label: 'reading', unit: 'events' });
    quick.update(10, 20);
    quick.stop();
    expect(written).toBe('');
    const slow = createProgress(terminal, { label: 'reading', unit: 'events', delayMs: 0, intervalMs: 0 });
    slow.update(10, 20);
    slow.stop();
    expect(written).toBe('\r\x1b[2Kreading: 10 of 20 events (0s)\r\x1b[2K');
    const wait = createProgress(terminal, { label: 'waiting', delayMs: 0, intervalMs: 0 });
    wait.update(1);
    wait.stop();
    expect(written).toContain('\r\x1b[2Kwaiting (0s)');
    let piped = '';
    const pipe = createProgress(
      { write: (text: string) => (piped += text) },
      { label: 'x', delayMs: 0, intervalMs: 0 },
    );
    pipe.update(1);
    pipe.stop();
    expect(piped).toBe('');
  });
});

describe('failures as one line', () => {
  it('keeps CLI and Tidings messages, on one line, with their exit codes', () => {
    expect(describeFailure(new CliError('bad thing; do this'))).toEqual({
      line: 'bad thing; do this',
      exitCode: 1,
    });
    expect(describeFailure(new TidingsError('NOT_FOUND', 'no such topic\n  create it first'))).toEqual({
      line: 'no such topic; create it first',
      exitCode: 1,
    });
    expect(describeFailure(new TidingsError('INVALID_CONFIG', 'bad option')).exitCode).toBe(2);
    expect(oneLine('  a\n\n b  c \n')).toBe('a; b c');
  });

  it('turns SQLite lock and file-system errors into advice, and anything else into an unexpected failure', () => {
    const busy = Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });
    expect(describeFailure(Object.assign(new Error('wrapped'), { cause: busy })).line).toMatch(
      /^the data directory is locked by another process/,
    );
    const denied = Object.assign(new Error('EACCES'), { code: 'EACCES', path: '/x/.tidings' });
    expect(describeFailure(denied).line).toMatch(/^permission denied on \/x\/\.tidings; /);
    const other = describeFailure(new RangeError('boom\nat somewhere'));
    expect(other.line).toBe(
      'unexpected failure (RangeError: boom; at somewhere); rerun with TIDINGS_DEBUG=1 for details and report it if it persists',
    );
  });
});
