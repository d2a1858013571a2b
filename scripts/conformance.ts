/**
 * `npm run conformance`: runs the transport conformance suite against every transport that has a spec file in
 * packages/tidings/test/conformance (`<transport>.conformance.spec.ts`) and prints a table of passed, failed and
 * skipped cases per transport, then every skipped case with its reason and every failed case with its error.
 *
 *   npm run conformance                 every transport
 *   npm run conformance -- log nats     only these spec files
 *   npm run conformance -- --json       prints [{ transport, passed, failed, skipped }] on stdout, nothing else
 *
 * Exits 1 when a case failed, a spec file could not run, or no spec file matched.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const specDir = path.join('packages', 'tidings', 'test', 'conformance');
const specSuffix = '.conformance.spec.ts';
/** Separates a skipped case's name from its reason in its title (as `tidings/conformance` writes it). */
const skipSeparator = ' — skipped: ';

interface Row {
  transport: string;
  passed: number;
  failed: number;
  skipped: number;
}

interface Detail {
  transport: string;
  name: string;
  text: string;
}

/** The part of vitest's JSON report this script reads. */
interface JsonReport {
  testResults?: Array<{
    name: string;
    status: string;
    message?: string;
    assertionResults?: Array<{
      ancestorTitles: string[];
      title: string;
      status: string;
      failureMessages?: string[];
    }>;
  }>;
}

const args = process.argv.slice(2);
const json = args.includes('--json');
const wanted = args.filter((arg) => arg !== '--json');
const unknownFlag = wanted.find((arg) => arg.startsWith('-'));
if (unknownFlag !== undefined) {
  console.error(
    `conformance: unknown option ${unknownFlag}; usage: npm run conformance -- [--json] [transport...]`,
  );
  process.exit(2);
}

const available = fs
  .readdirSync(path.join(repoRoot, specDir))
  .filter((file) => file.endsWith(specSuffix))
  .map((file) => file.slice(0, -specSuffix.length))
  .sort();
const unknown = wanted.filter((name) => !available.includes(name));
if (unknown.length > 0) {
  console.error(
    `conformance: no spec file for ${unknown.join(', ')} in ${specDir}; the transports are: ${available.join(', ')}`,
  );
  process.exit(2);
}
const transports = wanted.length > 0 ? wanted : available;
if (transports.length === 0) {
  console.error(`conformance: no *${specSuffix} file in ${specDir}`);
  process.exit(1);
}

const reportFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-conformance-')), 'report.json');
const vitest = path.join(
  path.dirname(createRequire(import.meta.url).resolve('vitest/package.json')),
  'vitest.mjs',
);
const files = transports.map((name) => path.join(specDir, `${name}${specSuffix}`));
const exitCode = await new Promise<number | null>((resolve, reject) => {
  const child = spawn(
    process.execPath,
    [
      vitest,
      'run',
      ...files,
      '--reporter=json',
      `--outputFile.json=${reportFile}`,
      ...(json ? [] : ['--reporter=default']),
    ],
    // With --json, stdout carries only the summary: vitest's own output goes to stderr.
    { cwd: repoRoot, stdio: ['ignore', json ? process.stderr : 'inherit', 'inherit'] },
  );
  child.on('error', reject);
  child.on('exit', (code) => resolve(code));
});

let report: JsonReport;
try {
  report = JSON.parse(fs.readFileSync(reportFile, 'utf8')) as JsonReport;
} catch (error) {
  console.error(
    `conformance: vitest exited with ${String(exitCode)} and wrote no report (${(error as Error).message})`,
  );
  process.exit(1);
} finally {
  fs.rmSync(path.dirname(reportFile), { recursive: true, force: true });
}

const rows = new Map<string, Row>();
const skips: Detail[] = [];
const failures: Detail[] = [];
const rowOf = (transport: string): Row => {
  let row = rows.get(transport);
  if (!row) rows.set(transport, (row = { transport, passed: 0, failed: 0, skipped: 0 }));
  return row;
};
for (const file of report.testResults ?? []) {
  const results = file.assertionResults ?? [];
  if (results.length === 0) {
    // The file did not run at all (an import failed, the suite threw while registering).
    const transport = path.basename(file.name).replace(specSuffix, '');
    rowOf(transport).failed++;
    failures.push({ transport, name: '(spec file)', text: firstLine(file.message ?? file.status) });
    continue;
  }
  for (const result of results) {
    const transport = result.ancestorTitles[0] ?? path.basename(file.name).replace(specSuffix, '');
    const row = rowOf(transport);
    if (result.status === 'passed') {
      row.passed++;
    } else if (result.status === 'failed') {
      row.failed++;
      failures.push({
        transport,
        name: result.title,
        text: firstLine(result.failureMessages?.[0] ?? 'failed'),
      });
    } else {
      row.skipped++;
      const at = result.title.indexOf(skipSeparator);
      skips.push({
        transport,
        name: at >= 0 ? result.title.slice(0, at) : result.title,
        text: at >= 0 ? result.title.slice(at + skipSeparator.length) : `(${result.status}, no reason given)`,
      });
    }
  }
}

const summary = [...rows.values()];
const anyFailed = summary.some((row) => row.failed > 0) || summary.length === 0;
if (json) {
  process.stdout.write(`${JSON.stringify(summary)}\n`);
} else {
  const header = ['transport', 'passed', 'failed', 'skipped'];
  const lines = summary.map((row) => [
    row.transport,
    String(row.passed),
    String(row.failed),
    String(row.skipped),
  ]);
  const widths = header.map((title, i) => Math.max(title.length, ...lines.map((line) => line[i]!.length)));
  const format = (cells: string[]) =>
    cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ');
  console.log(`\nTransport conformance\n\n${format(header)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}`);
  for (const line of lines) console.log(format(line));
  if (skips.length > 0) {
    console.log('\nSkipped:');
    for (const skip of skips) console.log(`  ${skip.transport}: ${skip.name}\n      ${skip.text}`);
  }
  if (failures.length > 0) {
    console.log('\nFailed:');
    for (const failure of failures)
      console.log(`  ${failure.transport}: ${failure.name}\n      ${failure.text}`);
  }
  console.log('');
}
if (exitCode !== 0 && !anyFailed) {
  console.error(
    `conformance: every case passed or was skipped, but vitest exited with ${String(exitCode)} ` +
      '(an unhandled error outside the cases?); see its output above',
  );
}
process.exit(anyFailed || exitCode !== 0 ? 1 : 0);

function firstLine(text: string): string {
  const line = text.split('\n').find((l) => l.trim() !== '') ?? text;
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}
