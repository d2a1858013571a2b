/**
 * The metrics `tidings/otel` records through an OpenTelemetry meter: counts per outcome, handler and publish
 * durations (the semantic conventions' `messaging.process.duration` and `messaging.client.operation.duration`, in
 * seconds), and consumer lag per group and partition, read from the transport at collection time.
 */
import type { Attributes, Counter, Histogram, Meter, ObservableResult } from '@opentelemetry/api';
import { isTidingsError } from '../core/errors.js';
import type { Transport } from '../core/transport.js';
import { attr } from './attributes.js';

/** The names of the metrics, as exported (Prometheus exporters turn `.` into `_` and add units and `_total`). */
export const metricNames = {
  /** Counter: messages durably published (events and commands; an outbox relay's publishes too, enqueues not). */
  published: 'tidings.messages.published',
  /** Counter: publishes that failed or were refused (with `error.type`). */
  publishFailed: 'tidings.messages.publish_failed',
  /** Counter: deliveries whose handler succeeded. */
  processed: 'tidings.messages.processed',
  /** Counter: deliveries whose retries were spent (then parked or dead-lettered). */
  failed: 'tidings.messages.failed',
  /** Counter: handler attempts after the first. */
  retried: 'tidings.messages.retried',
  /** Counter: deliveries parked (failed ones and those queued behind a parked key). */
  parked: 'tidings.messages.parked',
  /** Counter: deliveries moved to the dead-letter topic (failed, undecodable or schema-invalid). */
  deadLettered: 'tidings.messages.dead_lettered',
  /** Counter: deliveries the inbox recognised as already handled. */
  duplicates: 'tidings.messages.duplicates',
  /** Histogram, seconds: handling one delivery, every attempt and backoff included. */
  processDuration: 'messaging.process.duration',
  /**
   * Histogram, seconds: one publish or send, until durable; and one outbox enqueue (`messaging.operation.name`
   * `create`), until its row is inserted.
   */
  publishDuration: 'messaging.client.operation.duration',
  /** Gauge: records published but not yet processed, per group, topic and partition. */
  lag: 'tidings.consumer.lag',
} as const;

/** Where lag is read from. */
export interface LagSource {
  /** The transport whose groups' lag is reported (usually `bus.transport`). */
  transport: Transport;
  /** Groups to report; default: every group this instrumentation has seen a delivery for. */
  groups?: readonly string[];
}

/** The instruments, created once per instrumentation. */
export interface TidingsMetrics {
  readonly published: Counter;
  readonly publishFailed: Counter;
  readonly processed: Counter;
  readonly failed: Counter;
  readonly retried: Counter;
  readonly parked: Counter;
  readonly deadLettered: Counter;
  readonly duplicates: Counter;
  readonly processDuration: Histogram;
  readonly publishDuration: Histogram;
  /** Groups seen in deliveries, for the lag gauge. */
  readonly seenGroups: Set<string>;
}

const durationBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** Creates the instruments on `meter`, and the lag gauge when `lag` is given. */
export function createTidingsMetrics(meter: Meter, lag: LagSource | undefined): TidingsMetrics {
  const counter = (name: string, description: string) =>
    meter.createCounter(name, { description, unit: '{message}' });
  const seenGroups = new Set<string>();
  const metrics: TidingsMetrics = {
    published: counter(metricNames.published, 'Messages durably published'),
    publishFailed: counter(metricNames.publishFailed, 'Publishes that failed or were refused'),
    processed: counter(metricNames.processed, 'Deliveries whose handler succeeded'),
    failed: counter(metricNames.failed, 'Deliveries whose retries were spent'),
    retried: counter(metricNames.retried, 'Handler attempts after the first'),
    parked: counter(metricNames.parked, 'Deliveries parked'),
    deadLettered: counter(metricNames.deadLettered, 'Deliveries dead-lettered'),
    duplicates: counter(metricNames.duplicates, 'Deliveries the inbox recognised as duplicates'),
    processDuration: meter.createHistogram(metricNames.processDuration, {
      description: 'Duration of handling one delivery, retries included',
      unit: 's',
      advice: { explicitBucketBoundaries: durationBuckets },
    }),
    publishDuration: meter.createHistogram(metricNames.publishDuration, {
      description: 'Duration of one publish or send until durable',
      unit: 's',
      advice: { explicitBucketBoundaries: durationBuckets },
    }),
    seenGroups,
  };
  if (lag !== undefined) {
    meter
      .createObservableGauge(metricNames.lag, {
        description: 'Records published but not yet processed by the group',
        unit: '{message}',
      })
      .addCallback(async (result: ObservableResult<Attributes>) => {
        const groups = lag.groups ?? [...seenGroups];
        for (const group of groups) {
          let description;
          try {
            description = await lag.transport.admin.describeGroup(group);
          } catch (error) {
            if (isTidingsError(error)) continue; // not joined yet, or the transport is closed
            throw error;
          }
          for (const partition of description.lag) {
            result.observe(partition.lag, {
              [attr.consumerGroup]: group,
              [attr.destinationName]: partition.topic,
              [attr.partitionId]: String(partition.partition),
            });
          }
        }
      });
  }
  return metrics;
}
