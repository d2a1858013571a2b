/**
 * Finding and loading the code's event definitions for `tidings schema`: the module named by `--definitions`, else
 * by `"tidings": { "definitions": "..." }` in the working directory's package.json. TypeScript modules are loaded
 * through tsx (its `tsImport` API), JavaScript ones with `import()`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { extname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { JsonSchemaConverter, MessageDefinition } from 'tidings';
import { collectDefinitions } from 'tidings/registry';
import type { CliDeps } from '../context.js';
import { CliError, usageError } from '../errors.js';

/** The definitions found, and the converter the module exports as `jsonSchemaConverter`, if any. */
export interface LoadedDefinitions {
  /** Absolute path of the module. */
  file: string;
  definitions: MessageDefinition[];
  converter?: JsonSchemaConverter;
}

const typeScript = new Set(['.ts', '.mts', '.cts', '.tsx']);

/** Where the definitions module is: the option, else package.json's `tidings.definitions`. Throws a usage error. */
export function definitionsPath(deps: CliDeps, option: string | undefined): string {
  if (option !== undefined) return resolve(deps.cwd, option);
  const manifest = resolve(deps.cwd, 'package.json');
  if (existsSync(manifest)) {
    let field: unknown;
    try {
      field = (JSON.parse(readFileSync(manifest, 'utf8')) as { tidings?: { definitions?: unknown } }).tidings
        ?.definitions;
    } catch {
      field = undefined;
    }
    if (typeof field === 'string' && field !== '') return resolve(deps.cwd, field);
  }
  throw usageError(
    `no definitions module: pass --definitions <module> (the file exporting your defineEvent definitions), or set ` +
      `"tidings": { "definitions": "src/events.ts" } in package.json`,
  );
}

/** Imports the module and collects the definitions it exports. */
export async function loadDefinitions(deps: CliDeps, option: string | undefined): Promise<LoadedDefinitions> {
  const file = definitionsPath(deps, option);
  if (!existsSync(file)) {
    throw usageError(
      `the definitions module ${file} does not exist; check --definitions or package.json's tidings.definitions`,
    );
  }
  let exports: Record<string, unknown>;
  try {
    if (typeScript.has(extname(file))) {
      const { tsImport } = await import('tsx/esm/api');
      exports = (await tsImport(pathToFileURL(file).href, import.meta.url)) as Record<string, unknown>;
    } else {
      exports = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
    }
  } catch (error) {
    throw new CliError(
      `could not load the definitions module ${file}: ${error instanceof Error ? error.message : String(error)}; ` +
        `fix the error in it (run it with 'npx tsx ${file}' to see the whole failure)`,
      { cause: error },
    );
  }
  const definitions = collectDefinitions(exports);
  if (definitions.length === 0) {
    throw new CliError(
      `the definitions module ${file} exports no event or command definitions; export the values defineEvent ` +
        `returns (e.g. export const OrderPlaced = defineEvent(...))`,
    );
  }
  const converter = exports['jsonSchemaConverter'];
  return typeof converter === 'function'
    ? { file, definitions, converter: converter as JsonSchemaConverter }
    : { file, definitions };
}
