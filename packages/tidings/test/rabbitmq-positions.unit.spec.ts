// Which of the commits in a RabbitMQ offset queue stands: a reset's commits beat older ones whatever their offset (a
// purge cannot remove a commit a reader holds while the reset runs; it comes back afterwards).
import { describe, expect, it } from 'vitest';
import { laterCommit, parseCommit, type Commit } from '../src/rabbitmq/positions.js';

const commit = (id: string, position: Commit['position'], extra: Partial<Commit> = {}): Commit => ({
  id,
  position,
  at: 1_000,
  ...extra,
});

describe('rabbitmq offset-queue commits', () => {
  it('a concrete offset beats a start position, and the higher offset wins', () => {
    const start = commit('start', { earliest: true });
    const five = commit('five', { offset: 5 });
    const ten = commit('ten', { offset: 10 });
    expect(laterCommit(start, five).id).toBe('five');
    expect(laterCommit(five, start).id).toBe('five');
    expect(laterCommit(ten, five).id).toBe('ten');
    expect(laterCommit(five, ten).id).toBe('ten');
  });

  it("a reset's commit beats an older commit with a higher offset, in either order, and its owner's later commits go on from it", () => {
    const old = commit('old', { offset: 10 });
    const reset = commit('reset', { offset: 5 }, { resetAt: 2_000 });
    expect(laterCommit(old, reset).id).toBe('reset');
    expect(laterCommit(reset, old).id).toBe('reset');
    const after = commit('after', { offset: 7 }, { resetAt: 2_000 });
    expect(laterCommit(reset, after).id).toBe('after');
    const again = commit('again', { offset: 0 }, { resetAt: 3_000 });
    expect(laterCommit(after, again).id).toBe('again');
  });

  it('keeps resetAt through the wire format, and reads commits written before it existed', () => {
    const written = commit('w', { offset: 3 }, { resetAt: 2_000, delivered: 4 });
    expect(parseCommit(Buffer.from(JSON.stringify(written)))).toEqual(written);
    const legacy = parseCommit(Buffer.from(JSON.stringify({ id: 'l', position: { offset: 1 }, at: 5 })));
    expect(legacy).toEqual({ id: 'l', position: { offset: 1 }, at: 5 });
  });
});
