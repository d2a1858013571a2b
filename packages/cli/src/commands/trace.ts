/** `tidings trace <correlation-id>`: the events of one flow in causal order, with each group's outcome. */
import type { Command } from 'commander';
import { commonOptions, withCommonOptions, withTransport, writeJson, type CliDeps } from '../context.js';
import { CliError } from '../errors.js';
import { requireTopic } from '../lookup.js';
import { parseInteger } from '../parse.js';
import { collectTrace, type TracedEvent } from '../trace/collect.js';
import { renderTrace } from '../trace/render.js';

/** Events kept without `--limit`. */
export const defaultTraceLimit = 1000;

/** An event as `--json` prints it: its children nested. */
const eventJson = (event: TracedEvent): Record<string, unknown> => ({
  ...event,
  children: event.children.map(eventJson),
});

export function registerTrace(program: Command, deps: CliDeps): void {
  withCommonOptions(program.command('trace'))
    .description(
      'show the events of one flow (a correlation id) as a tree, with what each group did with them',
    )
    .argument(
      '<correlation-id>',
      "the flow's correlation id (the first event's id; see 'tidings tail --json')",
    )
    .option('-t, --topic <topic...>', 'search only these topics (default: every topic)')
    .option('-n, --limit <n>', `the most events to show (default ${defaultTraceLimit})`)
    .addHelpText(
      'after',
      `
Outcomes: handled (the group committed past the event), retried (handled after more than one attempt),
parked (with what followed: released or skipped), dead-lettered (with a later retry or skip), pending (not
processed yet). Retries and parking history come from the __outcomes journal consumers write; dead letters from
<topic>.<group>.dlq; which groups consume a type from the topology. The topics are scanned page by page.`,
    )
    .action(async (correlationId: string, _options: unknown, command: Command) => {
      const common = commonOptions(deps, command);
      const options = command.opts<{ topic?: string[]; limit?: string }>();
      const limit =
        options.limit === undefined ? defaultTraceLimit : parseInteger(options.limit, '--limit', 1);
      const trace = await withTransport(deps, { ...common.open, create: false }, async (transport) => {
        for (const topic of options.topic ?? []) await requireTopic(transport, topic, common.dataDir);
        return collectTrace(transport, correlationId, {
          limit,
          ...(options.topic === undefined ? {} : { topics: options.topic }),
        });
      });
      if (trace.events === 0) {
        throw new CliError(
          `no event with correlation id "${correlationId}" in ${common.dataDir}; ` +
            `find one with 'tidings tail <topic> --json' (the correlationid attribute, or the first event's id)`,
        );
      }
      if (common.json) return writeJson(deps.stdout, { ...trace, roots: trace.roots.map(eventJson) });
      deps.stdout.write(renderTrace(trace));
    });
}
