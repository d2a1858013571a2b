import { describe, expect, it } from 'vitest';
import { runChaos } from '../../../../scripts/chaos-outbox/harness.js';

// The short CI version of `npm run chaos:outbox`: producers, relays (the `tidings relay` command) and consumers as
// real processes, a few cycles of SIGKILL at random moments, then every committed change must have exactly one
// effect downstream, nothing from a rolled-back transaction, and each order's versions in order.

describe.each(['postgres', 'mariadb', 'sqlite'] as const)('outbox chaos on %s (short)', (db) => {
  it('survives SIGKILLs of producers, relays and consumers with exactly-once effects in key order', async () => {
    const lines: string[] = [];
    const result = await runChaos({ db, cycles: 4, stallTimeoutMs: 30_000, log: (line) => lines.push(line) });
    expect(result.problems, lines.join('\n')).toEqual([]);
    expect(result.events).toBeGreaterThan(0);
    expect(result).toMatchObject({ lost: 0, appliedTwice: 0, outOfOrder: 0, leaked: 0, ok: true });
    expect(result.line).toBe(
      `chaos ok: cycles=4 events=${result.events} lost=0 applied-twice=0 out-of-order=0`,
    );
  }, 90_000);
});
