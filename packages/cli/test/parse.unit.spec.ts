import { describe, expect, it } from 'vitest';
import { CliError } from '../src/errors.js';
import {
  parseBytes,
  parseDeadLetterId,
  parseDuration,
  parseInteger,
  parseIsoTime,
  parseJson,
  parseReadPosition,
  parseStartPosition,
} from '../src/parse.js';

const usage = (fn: () => unknown) => {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(CliError);
    expect((error as CliError).exitCode).toBe(2);
    return (error as CliError).message;
  }
  throw new Error('expected a usage error');
};

describe('option parsers', () => {
  it('reads whole numbers and rejects anything else, naming the option', () => {
    expect(parseInteger('42', '--limit', 1)).toBe(42);
    expect(parseInteger(' 0 ', '--wait-ms')).toBe(0);
    expect(usage(() => parseInteger('0', '--limit', 1))).toBe(
      '--limit must be a whole number of at least 1, got "0"',
    );
    for (const bad of ['-1', '1.5', 'abc', '', '1e3', '9'.repeat(16)])
      usage(() => parseInteger(bad, '--limit'));
  });

  it('reads durations and sizes with units', () => {
    expect(parseDuration('7d', '--retention')).toBe(7 * 86_400_000);
    expect(parseDuration('15m', '--retention')).toBe(900_000);
    expect(parseDuration('250', '--retention')).toBe(250);
    expect(usage(() => parseDuration('7 days', '--retention'))).toContain('such as 30m, 12h or 7d');
    usage(() => parseDuration('0s', '--retention'));
    expect(parseBytes('1GiB', '--retention-bytes')).toBe(1024 ** 3);
    expect(parseBytes('64mb', '--retention-bytes')).toBe(64 * 1024 ** 2);
    expect(parseBytes('512', '--retention-bytes')).toBe(512);
    usage(() => parseBytes('12 parsecs', '--retention-bytes'));
  });

  it('reads ISO dates and times, and rejects impossible calendar dates', () => {
    expect(parseIsoTime('2025-05-01T12:00:00Z')).toBe(Date.UTC(2025, 4, 1, 12));
    expect(parseIsoTime('2025-05-01T12:00:00.250+02:00')).toBe(Date.UTC(2025, 4, 1, 10, 0, 0, 250));
    expect(parseIsoTime('2025-05-01')).toBe(Date.UTC(2025, 4, 1));
    expect(parseIsoTime('2024-02-29')).toBe(Date.UTC(2024, 1, 29));
    for (const bad of ['2025-02-29', '2025-13-01', '2025-05-01T24:00:00Z', 'yesterday', '1714564800000'])
      expect(parseIsoTime(bad)).toBeUndefined();
  });

  it('reads --from positions: earliest, latest, an offset, partition offsets, a time', () => {
    expect(parseReadPosition('earliest', '--from')).toEqual({ kind: 'earliest' });
    expect(parseReadPosition('latest', '--from')).toEqual({ kind: 'latest' });
    expect(parseReadPosition('17', '--from')).toEqual({ kind: 'offset', offset: 17 });
    expect(parseReadPosition('0:5,2:9', '--from')).toEqual({
      kind: 'partitions',
      offsets: new Map([
        [0, 5],
        [2, 9],
      ]),
    });
    expect(parseReadPosition('2025-05-01T00:00:00Z', '--from')).toEqual({
      kind: 'time',
      timestamp: Date.UTC(2025, 4, 1),
    });
    expect(usage(() => parseReadPosition('-3', '--from'))).toContain(
      'is not a position; use earliest, latest',
    );
    expect(usage(() => parseReadPosition('0:1,0:2', '--from'))).toContain('names partition 0 twice');
    usage(() => parseReadPosition('2025-02-30', '--from'));
  });

  it('reads --to positions for a reset, which move every partition', () => {
    expect(parseStartPosition('earliest', '--to')).toBe('earliest');
    expect(parseStartPosition('3', '--to')).toEqual({ offset: 3 });
    expect(parseStartPosition('2025-05-01', '--to')).toEqual({ timestamp: Date.UTC(2025, 4, 1) });
    expect(usage(() => parseStartPosition('0:3', '--to'))).toContain('moves every partition');
  });

  it('checks dead-letter ids and JSON', () => {
    expect(parseDeadLetterId('0:12')).toBe('0:12');
    expect(usage(() => parseDeadLetterId('12'))).toContain('ids look like 0:12');
    expect(parseJson('{"a":[1,2]}', '--data')).toEqual({ a: [1, 2] });
    expect(usage(() => parseJson('{a:1}', '--data'))).toMatch(/^--data is not valid JSON \(.+\); quote it/);
  });
});
