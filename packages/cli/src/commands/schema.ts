/**
 * `tidings schema lock|check|diff <type>`: the CI gate over the schema lock file. `lock` records the code's event
 * schemas in `tidings.schema.lock.json`; `check` compares the code with the lock under each subject's compatibility
 * mode and exits 1 on a breaking change; `diff <type>` shows what changed for one type.
 */
import { existsSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import {
  compareWithLock,
  currentSchemas,
  emptyLock,
  formatLock,
  lockFileName,
  parseCompatibilityMode,
  parseLock,
  updateLock,
  type CompatibilityMode,
  type SchemaLock,
} from 'tidings/registry';
import { writeJson, type CliDeps } from '../context.js';
import { CliError, usageError } from '../errors.js';
import { plural } from '../format.js';
import { closest } from '../lookup.js';
import { loadDefinitions } from '../schema/definitions.js';
import { formatReport } from '../schema/report.js';

interface SchemaOptions {
  definitions?: string;
  lock?: string;
  json?: boolean;
}

function withSchemaOptions(command: Command): Command {
  return command
    .option(
      '--definitions <module>',
      'the module exporting the event definitions (default: package.json "tidings.definitions")',
    )
    .option('--lock <file>', `the lock file (default: ./${lockFileName})`)
    .option('--json', 'print machine-readable JSON');
}

const lockPath = (deps: CliDeps, options: SchemaOptions) => resolve(deps.cwd, options.lock ?? lockFileName);

async function readLock(file: string, required: boolean): Promise<SchemaLock | undefined> {
  if (!existsSync(file)) {
    if (!required) return undefined;
    throw new CliError(
      `no schema lock at ${file}; create it with 'tidings schema lock' and commit it, then run 'tidings schema check' in CI`,
    );
  }
  try {
    return parseLock(await readFile(file, 'utf8'), file);
  } catch (error) {
    if (error instanceof Error && 'code' in error && error.code === 'INVALID_CONFIG')
      throw new CliError(error.message);
    throw error;
  }
}

async function current(deps: CliDeps, options: SchemaOptions) {
  const loaded = await loadDefinitions(deps, options.definitions);
  return currentSchemas(loaded.definitions, loaded.converter);
}

export function registerSchema(program: Command, deps: CliDeps): void {
  const schema = program
    .command('schema')
    .description(
      "the schema CI gate: lock the code's event schemas, check changes against the lock, diff a type",
    )
    .addHelpText(
      'after',
      `
The code's definitions come from --definitions <module> (TypeScript through tsx, or JavaScript), or from
"tidings": { "definitions": "src/events.ts" } in package.json; every exported defineEvent/defineCommand value
counts. A function exported as jsonSchemaConverter converts schemas that cannot produce JSON Schema themselves.

In CI:  tidings schema check   (exit 0: compatible; 1: a breaking change, the diff on stdout; 2: usage)`,
    );

  withSchemaOptions(schema.command('lock'))
    .description(`write ${lockFileName} from the code's event definitions`)
    .option('--force', 'lock even a breaking change (the lock keeps the earlier versions)')
    .option('--compatibility <mode>', 'the default compatibility mode of the lock (BACKWARD unless set)')
    .action(async (_options: unknown, command: Command) => {
      const options = command.opts<SchemaOptions & { force?: boolean; compatibility?: string }>();
      let mode: CompatibilityMode | undefined;
      if (options.compatibility !== undefined) {
        try {
          mode = parseCompatibilityMode(options.compatibility, '--compatibility');
        } catch (error) {
          throw usageError((error as Error).message);
        }
      }
      const file = lockPath(deps, options);
      const previous = (await readLock(file, false)) ?? emptyLock(mode);
      const base = mode === undefined ? previous : { ...previous, compatibility: mode };
      const schemas = await current(deps, options);
      let updated: ReturnType<typeof updateLock>;
      try {
        updated = updateLock(base, schemas, { force: options.force === true });
      } catch (error) {
        for (const report of compareWithLock(base, schemas).filter((r) => r.status === 'breaking'))
          deps.stdout.write(`${formatReport(report).join('\n')}\n`);
        throw error;
      }
      const text = formatLock(updated.lock);
      const temporary = `${file}.${process.pid}.tmp`;
      await writeFile(temporary, text);
      await rename(temporary, file);
      if (options.json === true) {
        writeJson(deps.stdout, { file, reports: updated.reports });
        return;
      }
      for (const report of updated.reports) {
        if (report.status === 'unchanged' || report.status === 'removed') continue;
        deps.stdout.write(`locked ${report.type} version ${report.version} (${report.status})\n`);
      }
      const changed = updated.reports.filter(
        (r) => r.status !== 'unchanged' && r.status !== 'removed',
      ).length;
      deps.stdout.write(
        `${changed === 0 ? 'nothing changed; ' : ''}${file} holds ${plural(Object.keys(updated.lock.subjects).length, 'event type')}\n`,
      );
    });

  withSchemaOptions(schema.command('check'))
    .description("compare the code with the lock under each type's mode; exit 1 on a breaking change")
    .action(async (_options: unknown, command: Command) => {
      const options = command.opts<SchemaOptions>();
      const lock = (await readLock(lockPath(deps, options), true))!;
      const reports = compareWithLock(lock, await current(deps, options));
      const breaking = reports.filter((report) => report.status === 'breaking');
      if (options.json === true) {
        writeJson(deps.stdout, { compatible: breaking.length === 0, reports });
      } else {
        deps.stdout.write(`schema check against ${lockPath(deps, options)}:\n`);
        for (const report of reports) deps.stdout.write(`${formatReport(report).join('\n')}\n`);
        const pending = reports.filter((r) => r.status === 'changed' || r.status === 'new').length;
        if (breaking.length === 0) {
          deps.stdout.write(
            pending === 0
              ? 'ok: the code matches the lock\n'
              : `ok: ${plural(pending, 'compatible change')}; run 'tidings schema lock' and commit the lock to record ${pending === 1 ? 'it' : 'them'}\n`,
          );
        }
      }
      if (breaking.length > 0) {
        throw new CliError(
          `${plural(breaking.length, 'event type')} ${breaking.length === 1 ? 'has' : 'have'} a breaking change ` +
            `(${breaking.map((r) => r.type).join(', ')}); make ${breaking.length === 1 ? 'it' : 'them'} compatible ` +
            `(optional fields or defaults, widen rather than narrow), or introduce a new event type`,
        );
      }
    });

  withSchemaOptions(schema.command('diff'))
    .argument('<type>', 'the event type')
    .description('show what changed in one event type between the lock and the code')
    .action(async (type: string, _options: unknown, command: Command) => {
      const options = command.opts<SchemaOptions>();
      const lock = (await readLock(lockPath(deps, options), true))!;
      const reports = compareWithLock(lock, await current(deps, options));
      const report = reports.find((r) => r.type === type);
      if (report === undefined) {
        const names = reports.map((r) => r.type);
        const suggestion = closest(type, names);
        throw new CliError(
          `no event type "${type}" in the code or the lock; ${suggestion === undefined ? '' : `did you mean '${suggestion}'? `}` +
            `the types are ${names.join(', ')}`,
        );
      }
      if (options.json === true) {
        writeJson(deps.stdout, report);
        return;
      }
      deps.stdout.write(`${formatReport(report).join('\n')}\n`);
      if (report.status === 'new') {
        const schemaText = JSON.stringify((await current(deps, options)).get(type)?.schema, null, 2);
        deps.stdout.write(`    schema:\n${schemaText.replace(/^/gm, '      ')}\n`);
      }
    });
}
