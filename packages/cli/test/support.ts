/**
 * Running the CLI in-process on the in-memory transport, with stores like the embedded log's (parking, operator
 * requests), so command parsing and formatting can be tested without a build or a data directory.
 */
import { Readable } from 'node:stream';
import { createMemoryParking, createMemoryTransport, type Transport } from 'tidings';
import type { CliDeps } from '../src/context.js';
import type { TransportStores } from '../src/lookup.js';
import { runCli } from '../src/program.js';

type RequestStore = NonNullable<TransportStores['requests']>;
type Filed = NonNullable<Awaited<ReturnType<RequestStore['get']>>>;

/** An in-memory operator request store. */
export function createMemoryRequests(): RequestStore {
  const requests = new Map<string, Filed>();
  let next = 1;
  return {
    add(request) {
      const id = `r${next++}`;
      requests.set(id, { ...request, id, requestedAt: Date.now() });
      return id;
    },
    pending: (group, limit) =>
      [...requests.values()].filter((r) => r.group === group && r.outcome === undefined).slice(0, limit),
    complete(id, outcome) {
      const request = requests.get(id);
      if (request && request.outcome === undefined) request.outcome = outcome;
    },
    get: (id) => requests.get(id),
  };
}

/** A memory transport with durable-looking stores; `close()` is a no-op so several CLI runs share it. */
export function createTestTransport(): Transport & { shutdown(): Promise<void> } {
  const inner = createMemoryTransport();
  const stores = { parking: createMemoryParking(), requests: createMemoryRequests() };
  return {
    name: 'log',
    features: inner.features,
    admin: inner.admin,
    stores,
    publish: (topic, records, options) => inner.publish(topic, records, options),
    subscribe: (options) => inner.subscribe(options),
    close: () => Promise.resolve(),
    shutdown: () => inner.close(),
  };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  stdin?: string;
  /** Whether stdin is a terminal; default false when `stdin` is given, true otherwise. */
  stdinIsTTY?: boolean;
  env?: Record<string, string>;
  signal?: AbortSignal;
  /** Called with each chunk written to stdout, as it is written (for following output live). */
  onStdout?: (text: string) => void;
}

/** Runs `tidings <args>` in-process against `transport`. */
export async function run(
  transport: Transport,
  args: string[],
  options: RunOptions = {},
): Promise<RunResult> {
  let stdout = '';
  let stderr = '';
  const stdin = Object.assign(Readable.from(options.stdin === undefined ? [] : [options.stdin]), {
    isTTY: options.stdinIsTTY ?? options.stdin === undefined,
  });
  const deps: CliDeps = {
    stdout: {
      write: (text: string) => {
        stdout += text;
        options.onStdout?.(text);
      },
    },
    stderr: { write: (text: string) => (stderr += text) },
    stdin,
    env: options.env ?? {},
    cwd: '/tmp/tidings-cli-test',
    signal: options.signal ?? new AbortController().signal,
    open: () => Promise.resolve(transport),
    version: '0.0.0-test',
  };
  const code = await runCli(args, deps);
  return { code, stdout, stderr };
}

/** The lines of a command's output, without the trailing empty one. */
export const lines = (text: string) =>
  text.split('\n').filter((line, i, all) => line !== '' || i < all.length - 1);
