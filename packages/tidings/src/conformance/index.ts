/**
 * `tidings/conformance`: the transport conformance suite, public so that anyone can certify a transport. Run it
 * from a vitest spec file:
 *
 * ```ts
 * import { runTransportConformance } from 'tidings/conformance';
 * runTransportConformance({ name: 'mine', create: () => createMyTransport(url), skip: { ... } });
 * ```
 *
 * Needs vitest (a peer dependency of this subpath). See README.md beside this file for every case.
 * @module
 */
import { afterEach, describe, expect, it } from 'vitest';
import { caseImplementations, unavailableReason } from './cases.js';
import { CaseContext } from './context.js';
import { conformanceCases, type ConformanceOptions } from './options.js';

export {
  conformanceCases,
  type ConformanceCase,
  type ConformanceOptions,
  type PrivateBroker,
} from './options.js';

/** What separates a skipped case's name from its reason in the test title (the `npm run conformance` report reads it). */
export const skipSeparator = ' — skipped: ';

const defaultTimeoutMs = 60_000;

/**
 * Registers the conformance suite for one transport: a vitest `describe(options.name)` with one test per case of
 * {@link conformanceCases}, in that order. A case named in `options.skip` is registered as skipped, its title
 * `<case> — skipped: <reason>`; so is a case the options cannot support (no `childProcess`, no `privateBroker`),
 * with the reason the suite gives. A case whose feature the transport declares absent (`features.replayByTime:
 * false`, a `maxRecordBytes` below 1 MiB, ...) fails, saying to skip it by name: nothing is skipped silently.
 *
 * Each case names its topics and groups uniquely (a random suffix), waits for conditions with deadlines (never
 * fixed sleeps), asserts no durations, and closes every bus, subscription, transport, child process and private
 * broker it opened, even when it fails.
 *
 * Throws at once (while vitest collects the file) for a missing `name` or `create`, a skip entry that names no case
 * or has no reason, or a bad `timeoutMs`.
 */
export function runTransportConformance(options: ConformanceOptions): void {
  validate(options);
  const timeoutMs = options.timeoutMs ?? defaultTimeoutMs;
  describe(options.name, () => {
    let current: CaseContext | undefined;
    afterEach(async () => {
      const ctx = current;
      current = undefined;
      await ctx?.dispose();
    }, timeoutMs);

    for (const name of conformanceCases) {
      const reason = options.skip?.[name] ?? unavailableReason(name, options);
      if (reason !== undefined) {
        it.skip(`${name}${skipSeparator}${reason}`, () => undefined);
        continue;
      }
      const budgetMs =
        name === 'a broker restart during a stream loses nothing acknowledged' ? 2 * timeoutMs : timeoutMs;
      it(
        name,
        async () => {
          expect.hasAssertions();
          current = new CaseContext(name, options, budgetMs);
          await caseImplementations[name](current);
        },
        budgetMs,
      );
    }
  });
}

function validate(options: ConformanceOptions): void {
  const fail = (message: string): never => {
    throw new TypeError(`runTransportConformance: ${message}`);
  };
  if (typeof options !== 'object' || options === null) fail('pass an options object');
  if (typeof options.name !== 'string' || options.name.trim() === '')
    fail('"name" must name the transport, e.g. "nats"');
  if (typeof options.create !== 'function') fail('"create" must be a function returning a new transport');
  if (options.timeoutMs !== undefined && !(Number.isInteger(options.timeoutMs) && options.timeoutMs >= 5_000))
    fail(`"timeoutMs" must be an integer of at least 5,000 ms, got ${String(options.timeoutMs)}`);
  const known: ReadonlySet<string> = new Set(conformanceCases);
  for (const [name, reason] of Object.entries(options.skip ?? {})) {
    if (!known.has(name))
      fail(
        `skip names an unknown case ${JSON.stringify(name)}; the cases are:\n  ${conformanceCases.join('\n  ')}`,
      );
    if (typeof reason !== 'string' || reason.trim() === '')
      fail(
        `skip of ${JSON.stringify(name)} needs a reason: a sentence saying why the transport cannot pass it`,
      );
  }
  if (options.childProcess !== undefined && typeof options.childProcess.module !== 'string')
    fail('"childProcess.module" must be the absolute path of a module that creates the transport');
}
