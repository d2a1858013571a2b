/** A trace as a tree: each event, the groups that consumed it with their outcome, then the events it caused. */
import type { GroupOutcome, Trace, TracedEvent } from './collect.js';

/** One line for a group's outcome: `handled`, `parked after 3 attempts (error), then skipped`, ... */
export function describeOutcome(outcome: GroupOutcome): string {
  let text: string = outcome.outcome;
  if (outcome.attempts !== undefined && outcome.attempts > 0)
    text += ` after ${outcome.attempts} attempt${outcome.attempts === 1 ? '' : 's'}`;
  if (outcome.error !== undefined && outcome.error !== '') text += ` (${oneLine(outcome.error, 100)})`;
  if (outcome.then !== undefined) text += `, then ${outcome.then}`;
  return text;
}

function oneLine(text: string, max: number): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length > max ? `${line.slice(0, max - 3)}...` : line;
}

/** A copy's `handled`: the group's offset passed it, but whether it ran the handler again is not recorded. */
const copyPassed = 'passed (handled again, or dropped by an inbox)';

/** The service a `source` like `tidings://orders` names, else the source itself. */
const serviceOf = (source: string) =>
  source.startsWith('tidings://') ? source.slice('tidings://'.length) : source;

/** The tree of a trace, as text lines. */
export function renderTrace(trace: Trace): string {
  const lines: string[] = [
    `Correlation ${trace.correlationId}: ${trace.events} event${trace.events === 1 ? '' : 's'}` +
      (trace.copies > 0
        ? ` (+${trace.copies} re-published cop${trace.copies === 1 ? 'y' : 'ies'} of the same id)`
        : '') +
      (trace.truncated ? ' (more matched; raise --limit to see them all)' : ''),
  ];
  const groupWidth = Math.max(5, ...allOutcomes(trace.roots).map((o) => label(o).length));
  const walk = (event: TracedEvent, prefix: string, last: boolean, root: boolean) => {
    const head = root ? '' : last ? '└─ ' : '├─ ';
    lines.push(
      `${prefix}${head}${event.type} ${event.id}${event.copy ? ' (re-published copy)' : ''}  ${event.topic}[${event.partition}]@${event.offset}  ` +
        `service ${serviceOf(event.source)}  ${event.time ?? ''}`.trimEnd(),
    );
    const inner = root ? prefix : `${prefix}${last ? '   ' : '│  '}`;
    const items: Array<{ outcome: GroupOutcome } | { event: TracedEvent }> = [
      ...event.outcomes.map((outcome) => ({ outcome })),
      ...event.children.map((child) => ({ event: child })),
    ];
    if (items.length === 0) lines.push(`${inner}└─ (no group consumes ${event.type})`);
    items.forEach((item, index) => {
      const isLast = index === items.length - 1;
      if ('outcome' in item) {
        lines.push(
          `${inner}${isLast ? '└─' : '├─'} ${label(item.outcome).padEnd(groupWidth)}  ${
            event.copy && item.outcome.outcome === 'handled' ? copyPassed : describeOutcome(item.outcome)
          }`,
        );
      } else {
        walk(item.event, inner, isLast, false);
      }
    });
  };
  trace.roots.forEach((event, index) => {
    if (index > 0) lines.push('');
    walk(event, '', true, true);
  });
  return `${lines.join('\n')}\n`;
}

/** `group` or `group (service, ...)` when the services differ from the group's name. */
function label(outcome: GroupOutcome): string {
  const services = outcome.services.filter((s) => s !== outcome.group);
  return services.length === 0 ? outcome.group : `${outcome.group} (${services.join(', ')})`;
}

function allOutcomes(events: readonly TracedEvent[]): GroupOutcome[] {
  return events.flatMap((e) => [...e.outcomes, ...allOutcomes(e.children)]);
}
