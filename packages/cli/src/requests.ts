/**
 * Operator requests: the CLI cannot run a group's handler (it lives in the application), so `retry` and `skip` of
 * parked keys and dead-letter retries are filed as durable requests that a running consumer of the group carries
 * out (it looks every second). The CLI waits a bounded time for the outcome.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { isTidingsError, type Transport } from 'tidings';
import type { CliDeps } from './context.js';
import { CliError } from './errors.js';
import { createProgress, formatDuration } from './format.js';
import { requireStore, type TransportStores } from './lookup.js';

/** How long the CLI waits for a consumer to carry out a request, unless `--wait-ms` says otherwise. */
export const defaultWaitMs = 10_000;
/** How often the CLI asks whether its request was carried out. */
const pollMs = 100;

type RequestStore = NonNullable<TransportStores['requests']>;
type FiledRequest = NonNullable<Awaited<ReturnType<RequestStore['get']>>>;
type OperatorRequestOutcome = NonNullable<FiledRequest['outcome']>;
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
/**
 * A request as filed: an `OperatorRequest` without its id and time. Derived from the store, since `tidings` does not
 * export the type, and distributive, since `Omit` of the union (the store's parameter type) drops `deadLetterId`.
 */
export type RequestInput = DistributiveOmit<FiledRequest, 'outcome' | 'id' | 'requestedAt'>;

/** What became of a filed request. */
export interface RequestResult {
  requestId: string;
  /** `done`: carried out successfully; `failed`: carried out, unsuccessfully; `queued`: not carried out yet. */
  status: 'done' | 'failed' | 'queued';
  /** The consumer's own sentence for `done` and `failed`; for `queued`, why the CLI stopped waiting. */
  message: string;
}

/** The live members of `group`; none if the group has never subscribed. */
async function liveMembers(transport: Transport, group: string): Promise<number> {
  try {
    return (await transport.admin.describeGroup(group)).members.length;
  } catch (error) {
    if (isTidingsError(error, 'NOT_FOUND')) return 0;
    throw error;
  }
}

/**
 * Files `request` and waits up to `waitMs` for a consumer of its group to carry it out. Does not wait when the group
 * has no live member (nobody could carry it out), nor after `deps.signal` aborts.
 */
export async function fileRequest(
  deps: CliDeps,
  transport: Transport,
  request: RequestInput,
  waitMs: number,
): Promise<RequestResult> {
  const store = requireStore(transport, 'requests');
  const members = await liveMembers(transport, request.group);
  const requestId = await store.add(request);
  const queued = (why: string): RequestResult => ({
    requestId,
    status: 'queued',
    message:
      `request ${requestId} is queued: ${why}; ` +
      `a running consumer of group "${request.group}" on topic "${request.topic}" carries it out within about a second`,
  });
  if (members === 0) return queued(`no consumer of group "${request.group}" is running`);
  if (waitMs <= 0) return queued('not waiting for it (--wait-ms 0)');

  const deadline = Date.now() + waitMs;
  const progress = createProgress(deps.stderr, {
    label: `waiting for a consumer of group ${request.group} to carry out request ${requestId}`,
  });
  try {
    for (let checks = 1; ; checks++) {
      const found = await store.get(requestId);
      const outcome: OperatorRequestOutcome | undefined = found?.outcome;
      if (outcome !== undefined)
        return { requestId, status: outcome.ok ? 'done' : 'failed', message: outcome.message };
      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0 || deps.signal.aborted) break;
      progress.update(checks);
      try {
        await sleep(Math.min(pollMs, remainingMs), undefined, { signal: deps.signal });
      } catch {
        break; // interrupted: report what we know
      }
    }
  } finally {
    progress.stop();
  }
  return queued(`no consumer of group "${request.group}" carried it out within ${formatDuration(waitMs)}`);
}

/**
 * Prints a request's result and fails the command when the request failed, or stayed queued under
 * `--require-done`. `what` names the action for the human line, e.g. `retried dead letter 0:12`.
 */
export function reportRequest(
  deps: CliDeps,
  result: RequestResult,
  options: { json: boolean; requireDone: boolean; what: string; extra?: Record<string, unknown> },
): void {
  if (options.json) {
    deps.stdout.write(`${JSON.stringify({ ...options.extra, ...result })}\n`);
  }
  if (result.status === 'failed') throw new CliError(`could not ${options.what}: ${result.message}`);
  if (result.status === 'queued') {
    if (options.requireDone) throw new CliError(`${result.message}; it was not done yet (--require-done)`);
    if (!options.json) deps.stdout.write(`${capitalise(result.message)}.\n`);
    return;
  }
  if (!options.json) deps.stdout.write(`Done: ${options.what}: ${result.message}.\n`);
}

const capitalise = (text: string) => text.charAt(0).toUpperCase() + text.slice(1);
