/**
 * `GET /metrics` in the Prometheus text format, when `tidings serve --metrics` is given. Everything is read from the
 * data directory at scrape time, so the figures cover every process that shares it:
 *
 * - `tidings_topic_high_offset{topic,partition}`: the offset the next record gets, i.e. records ever published to
 *   the partition; `tidings_topic_records{topic}`: records stored now (after retention);
 * - `tidings_group_committed_offset{group,topic,partition}`: records the group has processed (settled);
 * - `tidings_consumer_lag{group,topic,partition}`: published but not yet processed;
 * - `tidings_group_members{group}`: live members;
 * - `tidings_parked_keys{group}`, `tidings_parked_events{group}`: what is parked now;
 * - `tidings_dead_letters{group,topic}`: unresolved dead letters.
 *
 * In-process counts (retries, handler durations) are not in the data directory: they come from `tidings/otel`'s
 * OpenTelemetry metrics, exported by each service.
 */
import type { FastifyInstance } from 'fastify';
import { Gauge, Registry } from 'prom-client';
import { listDeadLetters, type Transport } from 'tidings';
import { describeGroups } from '../lookup.js';
import type { ServeContext } from './context.js';

/** The most dead letters counted per group and topic at a scrape (past it the gauge reports this bound). */
export const deadLettersCountedMax = 100_000;

/** The gauges, created once per server on their own registry. */
function createGauges(registry: Registry) {
  const gauge = <L extends string>(name: string, help: string, labelNames: readonly L[]) =>
    new Gauge<L>({ name, help, labelNames, registers: [registry] });
  return {
    highOffset: gauge(
      'tidings_topic_high_offset',
      'Records ever published to the partition (its next offset)',
      ['topic', 'partition'],
    ),
    records: gauge('tidings_topic_records', 'Records stored in the topic now', ['topic']),
    committed: gauge('tidings_group_committed_offset', 'Records the group has processed in the partition', [
      'group',
      'topic',
      'partition',
    ]),
    lag: gauge('tidings_consumer_lag', 'Records published but not yet processed by the group', [
      'group',
      'topic',
      'partition',
    ]),
    members: gauge('tidings_group_members', 'Live members of the group', ['group']),
    parkedKeys: gauge('tidings_parked_keys', 'Keys parked now', ['group']),
    parkedEvents: gauge('tidings_parked_events', 'Events held by parked keys now', ['group']),
    deadLetters: gauge('tidings_dead_letters', 'Unresolved dead letters', ['group', 'topic']),
  };
}

type Gauges = ReturnType<typeof createGauges>;

/** Dead-letter counts by dead-letter topic, with the topic's high offsets they were counted at. */
type DeadLetterCounts = Map<string, { highOffsets: string; count: number }>;

/**
 * Unresolved dead letters of `group` for `topic`. Counting reads the dead-letter topic, so a count is reused while
 * the topic has not grown (no new dead letter and no new resolution since the last scrape).
 */
async function countDeadLetters(
  transport: Transport,
  topic: string,
  group: string,
  counts: DeadLetterCounts,
): Promise<number> {
  const dlq = `${topic}.${group}.dlq`;
  const highOffsets = (await transport.admin.describeTopic(dlq)).partitionOffsets
    .map((p) => p.highOffset)
    .join(',');
  const known = counts.get(dlq);
  if (known !== undefined && known.highOffsets === highOffsets) return known.count;
  const count = (await listDeadLetters(transport, topic, group, deadLettersCountedMax)).length;
  counts.set(dlq, { highOffsets, count });
  return count;
}

/** Reads the data directory and sets every gauge afresh. */
async function refresh(transport: Transport, gauges: Gauges, counts: DeadLetterCounts): Promise<void> {
  for (const g of Object.values(gauges)) g.reset();
  const topics = await transport.admin.listTopics();
  for (const topic of topics) {
    if (topic.startsWith('__')) continue;
    const description = await transport.admin.describeTopic(topic);
    let stored = 0;
    for (const p of description.partitionOffsets) {
      gauges.highOffset.set({ topic, partition: String(p.partition) }, p.highOffset);
      stored += p.highOffset - p.lowOffset;
    }
    gauges.records.set({ topic }, stored);
  }
  for await (const { group, description } of describeGroups(transport)) {
    gauges.members.set({ group }, description.members.length);
    const groupTopics = new Set<string>();
    for (const l of description.lag) {
      const labels = { group, topic: l.topic, partition: String(l.partition) };
      gauges.committed.set(labels, l.committedOffset);
      gauges.lag.set(labels, l.lag);
      groupTopics.add(l.topic);
    }
    for (const topic of groupTopics) {
      if (!topics.includes(`${topic}.${group}.dlq`)) continue;
      gauges.deadLetters.set({ group, topic }, await countDeadLetters(transport, topic, group, counts));
    }
    const parked = (await transport.stores?.parking?.list(group)) ?? [];
    gauges.parkedKeys.set({ group }, parked.length);
    gauges.parkedEvents.set(
      { group },
      parked.reduce((sum, key) => sum + key.events.length, 0),
    );
  }
}

/** Adds the metrics route to `app`. Resolves with a function that releases what it opened. */
export async function registerMetricsRoutes(
  app: FastifyInstance,
  context: ServeContext,
): Promise<() => Promise<void>> {
  const transport = await context.deps.open({ ...context.common.open, create: false });
  const registry = new Registry();
  const gauges = createGauges(registry);
  const deadLetterCounts: DeadLetterCounts = new Map();
  let scrape = Promise.resolve(); // one scrape at a time: the gauges are shared
  app.get('/metrics', async (_request, reply) => {
    const run = scrape.then(async () => {
      await refresh(transport, gauges, deadLetterCounts);
      return registry.metrics();
    });
    scrape = run.then(
      () => undefined,
      () => undefined,
    );
    const text = await run;
    return reply.type(registry.contentType).send(text);
  });
  return () => transport.close();
}
