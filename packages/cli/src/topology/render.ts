/** The topology as text: a table, a Mermaid flowchart or a Graphviz digraph. */
import { table } from '../format.js';
import type { Topology } from './model.js';

/** The graph formats `tidings topology --format` prints besides the table and JSON. */
export type GraphFormat = 'mermaid' | 'dot';

/** A Mermaid node id: letters, digits and `_` only. */
const mermaidId = (prefix: string, name: string) => `${prefix}_${name.replace(/[^A-Za-z0-9]/g, '_')}`;
/** A Mermaid label, quoted; `"` becomes `#quot;`. */
const mermaidLabel = (text: string) => `"${text.replace(/"/g, '#quot;')}"`;
/** A Graphviz quoted string. */
const dotString = (text: string) => `"${text.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

/**
 * The topology as a table: one row per message type with its topic, producers and consuming groups, then the
 * findings (types produced but never consumed, consumed but never produced).
 */
export function renderTable(topology: Topology): string {
  const rows = topology.types.map((t) => [
    t.type,
    t.kind,
    t.topic,
    t.producers.length === 0 ? '(none)' : t.producers.map((p) => p.service).join(', '),
    t.consumers.length === 0 ? '(none)' : t.consumers.map((c) => c.group).join(', '),
  ]);
  let out = table(
    [
      { header: 'TYPE' },
      { header: 'KIND' },
      { header: 'TOPIC' },
      { header: 'PRODUCED BY' },
      { header: 'CONSUMED BY (GROUPS)' },
    ],
    rows,
  );
  out += renderFindings(topology);
  return out;
}

/** The findings as lines, or nothing when there are none. */
export function renderFindings(topology: Topology): string {
  let out = '';
  for (const type of topology.neverConsumed)
    out += `warning: ${type} is produced (declared or published) but no group consumes it\n`;
  for (const type of topology.neverProduced)
    out += `warning: ${type} is consumed but no service was seen or declared to produce it\n`;
  return out;
}

/** A Mermaid flowchart: services --> message types --> consumer groups. */
export function renderMermaid(topology: Topology): string {
  const lines = ['flowchart LR'];
  const declared = new Set<string>();
  const node = (id: string, definition: string) => {
    if (declared.has(id)) return id;
    declared.add(id);
    lines.push(`  ${definition}`);
    return id;
  };
  for (const t of topology.types) {
    const typeId = node(
      mermaidId('type', t.type),
      `${mermaidId('type', t.type)}[/${mermaidLabel(`${t.type}<br/>${t.topic}`)}/]`,
    );
    for (const p of t.producers) {
      const id = node(
        mermaidId('service', p.service),
        `${mermaidId('service', p.service)}(${mermaidLabel(p.service)})`,
      );
      lines.push(`  ${id} -->|${t.kind === 'command' ? 'sends' : 'publishes'}| ${typeId}`);
    }
    for (const c of t.consumers) {
      const label = `${c.group}<br/>(${c.services.join(', ')})`;
      const id = node(
        mermaidId('group', c.group),
        `${mermaidId('group', c.group)}[[${mermaidLabel(label)}]]`,
      );
      lines.push(`  ${typeId} --> ${id}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/** A Graphviz digraph: services (boxes) -> message types (ellipses) -> consumer groups (components). */
export function renderDot(topology: Topology): string {
  const lines = ['digraph tidings {', '  rankdir=LR;'];
  const declared = new Set<string>();
  const node = (id: string, attributes: string) => {
    if (!declared.has(id)) {
      declared.add(id);
      lines.push(`  ${dotString(id)} [${attributes}];`);
    }
    return dotString(id);
  };
  for (const t of topology.types) {
    const typeNode = node(`type:${t.type}`, `label=${dotString(`${t.type}\n${t.topic}`)}, shape=ellipse`);
    for (const p of t.producers)
      lines.push(
        `  ${node(`service:${p.service}`, `label=${dotString(p.service)}, shape=box`)} -> ${typeNode};`,
      );
    for (const c of t.consumers) {
      const group = node(
        `group:${c.group}`,
        `label=${dotString(`${c.group}\n(${c.services.join(', ')})`)}, shape=component`,
      );
      lines.push(`  ${typeNode} -> ${group};`);
    }
  }
  lines.push('}');
  return `${lines.join('\n')}\n`;
}
