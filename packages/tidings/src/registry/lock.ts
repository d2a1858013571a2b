/**
 * The schema lock file (`tidings.schema.lock.json`): the committed history of every event type's JSON Schema, which
 * the CI gate compares the code with. Reading, building and comparing it; the CLI does the file I/O.
 */
import { isDefinition, type MessageDefinition } from '../core/define.js';
import { ErrorCode, TidingsError } from '../core/errors.js';
import type { JsonSchema, JsonSchemaConverter } from '../core/json-schema.js';
import { checkCompatibility, type CompatibilityResult } from './compatibility.js';
import { diffSchemas, type SchemaChange } from './diff.js';
import { jsonEqual } from './json-pointer.js';
import { defaultCompatibilityMode, isCompatibilityMode, type CompatibilityMode } from './modes.js';
import { canonicalSchema, checkSubject, maxVersionsPerSubject } from './registry.js';

/** The lock file's name, in the project root. */
export const lockFileName = 'tidings.schema.lock.json';

/** One locked version of an event type. */
export interface LockedVersion {
  /** The definition's `version` when it was locked. */
  version: number;
  schema: JsonSchema;
}

/** An event type in the lock. */
export interface LockedSubject {
  /** The subject's own mode; the lock's `compatibility` when absent. Edit it by hand to change it. */
  compatibility?: CompatibilityMode;
  /** Ascending by version; one schema per definition version. */
  versions: LockedVersion[];
}

/** The lock file's content. */
export interface SchemaLock {
  lockfileVersion: 1;
  /** The default mode of every subject. */
  compatibility: CompatibilityMode;
  /** By event type (the subject). */
  subjects: Record<string, LockedSubject>;
}

/** How one type compares with the lock. */
export interface SubjectReport {
  type: string;
  /**
   * `unchanged`; `changed` (compatible under its mode); `breaking`; `new` (not in the lock yet); `removed` (in the
   * lock, no longer in the code: stored events of the type may still exist).
   */
  status: 'unchanged' | 'changed' | 'breaking' | 'new' | 'removed';
  mode: CompatibilityMode;
  /** The code's definition version (absent for `removed`). */
  version?: number;
  /** The latest locked version (absent for `new`). */
  lockedVersion?: number;
  /** The compatibility verdict against the locked history (absent for `unchanged`, `new` and `removed`). */
  result?: CompatibilityResult;
  /** What changed from the latest locked schema to the code's. */
  changes: SchemaChange[];
  /** Remarks that do not fail the check (e.g. a schema changed without a version bump). */
  notes: string[];
}

/** An empty lock. */
export function emptyLock(compatibility: CompatibilityMode = defaultCompatibilityMode): SchemaLock {
  return { lockfileVersion: 1, compatibility, subjects: {} };
}

/** Parses and validates lock-file text; throws `INVALID_CONFIG` naming what is wrong in `file`. */
export function parseLock(text: string, file = lockFileName): SchemaLock {
  const bad = (problem: string) =>
    new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `${file} is not a valid schema lock (${problem}); restore it from version control or recreate it with ` +
        `'tidings schema lock'`,
    );
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw bad(`not JSON: ${(error as Error).message}`);
  }
  if (typeof value !== 'object' || value === null) throw bad('not an object');
  const lock = value as Partial<SchemaLock>;
  if (lock.lockfileVersion !== 1)
    throw bad(`lockfileVersion ${JSON.stringify(lock.lockfileVersion)}, expected 1`);
  if (!isCompatibilityMode(lock.compatibility))
    throw bad(`compatibility ${JSON.stringify(lock.compatibility)}`);
  if (typeof lock.subjects !== 'object' || lock.subjects === null) throw bad('"subjects" is not an object');
  for (const [type, subject] of Object.entries(lock.subjects)) {
    if (subject.compatibility !== undefined && !isCompatibilityMode(subject.compatibility))
      throw bad(`subjects.${type}.compatibility ${JSON.stringify(subject.compatibility)}`);
    if (!Array.isArray(subject.versions) || subject.versions.length === 0)
      throw bad(`subjects.${type}.versions is not a non-empty array`);
    for (const entry of subject.versions) {
      if (
        !Number.isInteger(entry.version) ||
        entry.version < 1 ||
        typeof entry.schema !== 'object' ||
        entry.schema === null
      )
        throw bad(
          `subjects.${type}.versions holds an entry without a positive integer version and a schema object`,
        );
    }
  }
  return lock as SchemaLock;
}

/** The lock as file text: 2-space JSON, subjects sorted, a final newline (stable diffs in review). */
export function formatLock(lock: SchemaLock): string {
  const subjects: Record<string, LockedSubject> = {};
  for (const type of Object.keys(lock.subjects).sort()) subjects[type] = lock.subjects[type]!;
  return `${JSON.stringify({ ...lock, subjects }, null, 2)}\n`;
}

/** The event and command definitions among a module's exports (top level, or inside exported arrays and objects). */
export function collectDefinitions(exports: Record<string, unknown>): MessageDefinition[] {
  const found = new Map<string, MessageDefinition>();
  const visit = (value: unknown, depth: number) => {
    if (isDefinition(value)) {
      const existing = found.get(value.type);
      if (existing !== undefined && existing !== value) {
        throw new TidingsError(
          ErrorCode.INVALID_CONFIG,
          `two different definitions of "${value.type}" are exported (versions ${existing.version} and ` +
            `${value.version}); export only the current one`,
        );
      }
      found.set(value.type, value);
    } else if (depth < 2 && Array.isArray(value)) {
      for (const item of value) visit(item, depth + 1);
    } else if (depth < 2 && typeof value === 'object' && value !== null) {
      for (const item of Object.values(value)) visit(item, depth + 1);
    }
  };
  for (const value of Object.values(exports)) visit(value, 0);
  return [...found.values()].sort((a, b) => a.type.localeCompare(b.type));
}

/** The code's current schemas, by type. */
export function currentSchemas(
  definitions: readonly MessageDefinition[],
  converter?: JsonSchemaConverter,
): Map<string, { version: number; schema: JsonSchema }> {
  const schemas = new Map<string, { version: number; schema: JsonSchema }>();
  for (const definition of definitions) {
    checkSubject(definition.type);
    schemas.set(definition.type, {
      version: definition.version,
      schema: JSON.parse(canonicalSchema(definition.jsonSchema(converter))) as JsonSchema,
    });
  }
  return schemas;
}

/** Compares the code's schemas with the lock, type by type, under each subject's mode. */
export function compareWithLock(
  lock: SchemaLock,
  current: ReadonlyMap<string, { version: number; schema: JsonSchema }>,
): SubjectReport[] {
  const reports: SubjectReport[] = [];
  const types = [...new Set([...Object.keys(lock.subjects), ...current.keys()])].sort();
  for (const type of types) {
    const locked = lock.subjects[type];
    const code = current.get(type);
    const mode = locked?.compatibility ?? lock.compatibility;
    if (locked === undefined) {
      reports.push({ type, status: 'new', mode, version: code!.version, changes: [], notes: [] });
      continue;
    }
    const latest = locked.versions.at(-1)!;
    if (code === undefined) {
      reports.push({
        type,
        status: 'removed',
        mode,
        lockedVersion: latest.version,
        changes: [],
        notes: [`no longer defined in the code; its stored events can no longer be read by it`],
      });
      continue;
    }
    const notes: string[] = [];
    if (code.version < latest.version) {
      notes.push(`the code's version ${code.version} is older than the locked version ${latest.version}`);
    }
    if (jsonEqual(code.schema, latest.schema)) {
      reports.push({
        type,
        status: 'unchanged',
        mode,
        version: code.version,
        lockedVersion: latest.version,
        changes: [],
        notes,
      });
      continue;
    }
    if (code.version === latest.version) {
      notes.push(
        `the schema changed but the version stayed ${code.version}; bump "version" (and add an upcaster if old ` +
          `events need one) so that consumers can tell the shapes apart`,
      );
    }
    const result = checkCompatibility(code.schema, locked.versions, mode);
    reports.push({
      type,
      status: result.compatible ? 'changed' : 'breaking',
      mode,
      version: code.version,
      lockedVersion: latest.version,
      result,
      changes: diffSchemas(latest.schema, code.schema),
      notes,
    });
  }
  return reports;
}

/**
 * The lock updated with the code's schemas: a changed schema becomes a new locked version (or replaces the latest
 * one when the definition's version did not change); types the code no longer defines stay locked. Throws
 * `SCHEMA_INCOMPATIBLE` when a change is breaking, unless `force`.
 */
export function updateLock(
  lock: SchemaLock,
  current: ReadonlyMap<string, { version: number; schema: JsonSchema }>,
  options: { force?: boolean } = {},
): { lock: SchemaLock; reports: SubjectReport[] } {
  const reports = compareWithLock(lock, current);
  const breaking = reports.filter((report) => report.status === 'breaking');
  if (breaking.length > 0 && options.force !== true) {
    throw new TidingsError(
      ErrorCode.SCHEMA_INCOMPATIBLE,
      `not locked: ${breaking.map((report) => report.type).join(', ')} ${
        breaking.length === 1 ? 'has' : 'have'
      } a breaking change (see 'tidings schema check'); make the change compatible, or pass --force to lock it anyway`,
    );
  }
  const next: SchemaLock = { ...lock, subjects: { ...lock.subjects } };
  for (const report of reports) {
    const code = current.get(report.type);
    if (code === undefined || report.status === 'unchanged') continue;
    const previous = next.subjects[report.type];
    const versions = previous === undefined ? [] : [...previous.versions];
    const entry: LockedVersion = { version: code.version, schema: code.schema };
    if (versions.at(-1)?.version === code.version) versions[versions.length - 1] = entry;
    else versions.push(entry);
    if (versions.length > maxVersionsPerSubject) versions.splice(0, versions.length - maxVersionsPerSubject);
    next.subjects[report.type] = {
      ...(previous?.compatibility === undefined ? {} : { compatibility: previous.compatibility }),
      versions,
    };
  }
  return { lock: next, reports };
}
