/**
 * How `tidings schema check|lock|diff` print what they found: one block per event type, readable in a CI log.
 */
import { formatViolation, type SchemaChange, type SubjectReport } from 'tidings/registry';

const symbol: Record<SchemaChange['kind'], string> = {
  'property added': '+',
  'property removed': '-',
  'now required': '~',
  'now optional': '~',
  'type changed': '~',
  'enum values added': '+',
  'enum values removed': '-',
  'additionalProperties changed': '~',
  'default changed': '~',
  'constraint changed': '~',
};

/** The changes as indented lines: `+ note: property added (optional, type "string")`. */
export function formatChanges(changes: readonly SchemaChange[], indent = '    '): string[] {
  return changes.map(
    (change) => `${indent}${symbol[change.kind]} ${change.path}: ${change.kind} (${change.detail})`,
  );
}

/** The heading of a type's block. */
function heading(report: SubjectReport): string {
  const versions =
    report.lockedVersion === undefined
      ? `version ${report.version}`
      : report.version === undefined
        ? `locked version ${report.lockedVersion}`
        : `version ${report.version}, locked ${report.lockedVersion}`;
  switch (report.status) {
    case 'unchanged':
      return `  ${report.type}: unchanged (${versions})`;
    case 'new':
      return `  ${report.type}: new, not locked yet (${versions})`;
    case 'removed':
      return `  ${report.type}: no longer in the code (${versions})`;
    case 'changed':
      return `  ${report.type}: compatible change under ${report.mode} (${versions})`;
    case 'breaking':
      return `✗ ${report.type}: BREAKING under ${report.mode} (${versions})`;
  }
}

/** A type's block: heading, violations, changes, notes. */
export function formatReport(report: SubjectReport): string[] {
  const lines = [heading(report)];
  for (const violation of report.result?.violations ?? []) lines.push(`    ✗ ${formatViolation(violation)}`);
  if (report.changes.length > 0) {
    lines.push('    changes:');
    lines.push(...formatChanges(report.changes, '      '));
  }
  for (const note of report.notes) lines.push(`    note: ${note}`);
  return lines;
}
