#!/usr/bin/env node
/**
 * The `tidings` command. Wires the process (streams, environment, signals) to the program and exits with its code.
 */
import { readFileSync } from 'node:fs';
import type { CliDeps } from './context.js';
import { openLogDataDir } from './open.js';
import { runCli } from './program.js';

/** After the command finished, how long open handles may keep the process alive before it exits anyway. */
const exitGraceMs = 2_000;

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
      version?: string;
    };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

const interrupt = new AbortController();
let interrupts = 0;
const onSignal = (signal: NodeJS.Signals) => {
  // The first signal stops long-running commands cleanly (tail --follow, waits); a second one exits at once.
  if (++interrupts > 1) process.exit(signal === 'SIGINT' ? 130 : 143);
  interrupt.abort();
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

// A closed pipe (`tidings tail orders | head`) is not an error: stop quietly.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

const deps: CliDeps = {
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: process.stdin,
  env: process.env,
  cwd: process.cwd(),
  signal: interrupt.signal,
  open: openLogDataDir,
  version: version(),
};

const exitCode = await runCli(process.argv.slice(2), deps);
process.exitCode = exitCode;
setTimeout(() => process.exit(exitCode), exitGraceMs).unref();
