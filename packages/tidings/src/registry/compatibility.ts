/**
 * Compatibility of a new schema with a subject's history under a {@link CompatibilityMode}: which earlier versions it
 * is compared with, in which direction, and the violations found, each naming the field, the rule and the mode.
 */
import type { JsonSchema } from '../core/json-schema.js';
import { modeRules, type CompatibilityMode } from './modes.js';
import { readerIssues, type CompatibilityIssue } from './reader-writer.js';

/** An earlier version of a subject, as the checker needs it. */
export interface HistoricVersion {
  /** The version number within the subject (1, 2, ...). */
  version: number;
  schema: JsonSchema;
}

/** One way a candidate schema breaks a mode. */
export interface CompatibilityViolation extends CompatibilityIssue {
  mode: CompatibilityMode;
  /** `backward`: the new schema cannot read the version's data; `forward`: the version cannot read the new data. */
  direction: 'backward' | 'forward';
  /** The earlier version it is incompatible with. */
  version: number;
}

/** The outcome of a check. */
export interface CompatibilityResult {
  compatible: boolean;
  mode: CompatibilityMode;
  /** The versions compared with, ascending. */
  comparedWith: number[];
  violations: CompatibilityViolation[];
}

/**
 * Checks `candidate` against `history` (any order) under `mode`: the latest version only, or every version for a
 * `_TRANSITIVE` mode; `NONE` and an empty history are always compatible.
 */
export function checkCompatibility(
  candidate: JsonSchema,
  history: readonly HistoricVersion[],
  mode: CompatibilityMode,
): CompatibilityResult {
  const rules = modeRules(mode);
  const sorted = [...history].sort((a, b) => a.version - b.version);
  const latest = sorted.at(-1);
  const targets = mode === 'NONE' ? [] : rules.transitive ? sorted : latest === undefined ? [] : [latest];
  const violations: CompatibilityViolation[] = [];
  for (const target of targets) {
    const name = `version ${target.version}`;
    if (rules.backward) {
      for (const issue of readerIssues(candidate, target.schema, { reader: 'the new schema', writer: name }))
        violations.push({ ...issue, mode, direction: 'backward', version: target.version });
    }
    if (rules.forward) {
      for (const issue of readerIssues(target.schema, candidate, { reader: name, writer: 'the new schema' }))
        violations.push({ ...issue, mode, direction: 'forward', version: target.version });
    }
  }
  return {
    compatible: violations.length === 0,
    mode,
    comparedWith: targets.map((target) => target.version),
    violations,
  };
}

/**
 * One line per violation, e.g. `field "total" breaks BACKWARD compatibility with version 2 (rule TYPE_NARROWED):
 * version 2 writes type number, which the new schema does not accept ...`.
 */
export function formatViolation(violation: CompatibilityViolation): string {
  const field = violation.path === '(root)' ? 'the document root' : `field "${violation.path}"`;
  const direction =
    violation.direction === 'backward'
      ? `the new schema cannot read version ${violation.version} data`
      : `version ${violation.version} readers cannot read new data`;
  return (
    `${field} breaks ${violation.mode} compatibility with version ${violation.version} ` +
    `(rule ${violation.rule}; ${direction}): ${violation.message}`
  );
}
