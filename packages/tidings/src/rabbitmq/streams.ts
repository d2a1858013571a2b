/**
 * Reading RabbitMQ streams over AMQP 0-9-1. A stream consumer names where to start (`x-stream-offset`: an offset,
 * `first`, `last` (the last chunk), `next`, or a time in whole seconds) and then receives every later message; it is
 * never told that it reached the end. So a read that must stop at the end uses one of two bounds: a marker it
 * publishes first and reads up to (exact; used on the transport's own streams), or, on partition streams, which hold
 * only records, a pause of `readIdleMs` with nothing arriving (the broker sends a stored chunk in one burst).
 */
import type { Channel, ConfirmChannel, ConsumeMessage, Options } from 'amqplib';
import { randomUUID } from 'node:crypto';
import { describeError, ErrorCode, TidingsError } from '../core/errors.js';
import { streamOffsetOf } from './codec.js';
import { cancelAndClose, type Connector } from './connection.js';

/** Where a stream read starts. A timestamp is in ms; the broker resolves it to the second, the reader filters. */
export type StreamStart = number | 'first' | 'last' | 'next' | { timestamp: number };

export function streamOffsetArgument(start: StreamStart): unknown {
  if (typeof start === 'object') return { '!': 'timestamp', value: Math.floor(start.timestamp / 1000) };
  return start;
}

export const markerHeader = 'x-tidings-marker';

export interface ScanOptions {
  /** Stop if nothing arrives this long after the consumer started, in ms. */
  firstWaitMs: number;
  /** Stop if nothing arrives this long after the last message, in ms. */
  idleMs: number;
  /** Messages in flight from the broker. */
  prefetch: number;
  /** Give up (and reject with `TIMEOUT`) after this long, in ms. */
  maxMs: number;
}

/**
 * Consumes `queue` from `start`, calling `onMessage` for each message in offset order until it returns true or the
 * read goes idle. Resolves with how it ended.
 */
export async function scanStream(
  connector: Connector,
  queue: string,
  start: StreamStart,
  options: ScanOptions,
  onMessage: (message: ConsumeMessage, offset: number) => boolean | void,
): Promise<'stopped' | 'idle'> {
  const channel = await connector.channel();
  let consumerTag: string | undefined;
  try {
    return await new Promise<'stopped' | 'idle'>((resolve, reject) => {
      let done = false;
      let idle: NodeJS.Timeout | undefined;
      const finish = (how: 'stopped' | 'idle' | Error) => {
        if (done) return;
        done = true;
        clearTimeout(idle);
        clearTimeout(overall);
        if (how instanceof Error) reject(how);
        else resolve(how);
      };
      const arm = (ms: number) => {
        clearTimeout(idle);
        idle = setTimeout(() => finish('idle'), ms);
      };
      const overall = setTimeout(
        () =>
          finish(
            new TidingsError(
              ErrorCode.TIMEOUT,
              `Reading stream '${queue}' on RabbitMQ at ${connector.url} took over ${options.maxMs} ms.`,
            ),
          ),
        options.maxMs,
      );
      channel.on('close', () =>
        finish(
          new TidingsError(
            ErrorCode.TRANSPORT_UNAVAILABLE,
            `Lost the channel while reading stream '${queue}' on RabbitMQ at ${connector.url}.`,
          ),
        ),
      );
      channel
        .prefetch(options.prefetch)
        .then(() =>
          channel.consume(
            queue,
            (message) => {
              if (message === null || done) return;
              channel.ack(message);
              const offset = streamOffsetOf(message);
              if (offset === undefined) return;
              arm(options.idleMs);
              if (onMessage(message, offset) === true) finish('stopped');
            },
            { noAck: false, arguments: { 'x-stream-offset': streamOffsetArgument(start) } },
          ),
        )
        .then((reply) => {
          consumerTag = reply.consumerTag;
          if (!done && idle === undefined) arm(options.firstWaitMs);
        })
        .catch((error: unknown) => finish(error instanceof Error ? error : new Error(describeError(error))));
    });
  } finally {
    await cancelAndClose(channel, consumerTag);
  }
}

/** Publishes one message and resolves once the broker confirmed it. */
export function publishConfirmed(
  channel: ConfirmChannel,
  exchange: string,
  routingKey: string,
  content: Buffer,
  properties: Options.Publish,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    channel.publish(exchange, routingKey, content, properties, (error: unknown) => {
      if (error === null || error === undefined) resolve();
      else reject(error instanceof Error ? error : new Error(describeError(error)));
    });
  });
}

/**
 * Reads a stream of the transport's own (JSON records) from `start` up to now, exactly: publishes a marker, then
 * reads until it arrives. Markers are skipped by every reader.
 */
export async function readToMarker(
  connector: Connector,
  queue: string,
  start: StreamStart,
  onRecord: (body: unknown, message: ConsumeMessage) => void,
  maxMs = 15_000,
): Promise<void> {
  const marker = randomUUID();
  const channel = await connector.confirmChannel();
  await publishConfirmed(channel, '', queue, Buffer.from('{}'), { headers: { [markerHeader]: marker } });
  await scanStream(
    connector,
    queue,
    start,
    { firstWaitMs: maxMs, idleMs: maxMs, prefetch: 1_000, maxMs },
    (message) => {
      const seen: unknown = (message.properties.headers as Record<string, unknown> | undefined)?.[
        markerHeader
      ];
      if (seen !== undefined) return markerText(seen) === marker;
      try {
        onRecord(JSON.parse(message.content.toString('utf8')) as unknown, message);
      } catch {
        // not one of ours: skip
      }
      return false;
    },
  );
}

/** Declares a stream (idempotent for the same arguments). */
export async function declareStream(
  channel: Channel,
  queue: string,
  args: Record<string, unknown> = {},
): Promise<void> {
  await channel.assertQueue(queue, { durable: true, arguments: { 'x-queue-type': 'stream', ...args } });
}

/**
 * Resolves once one of the transport's own streams (registry, group streams), just declared, takes traffic: the
 * probe publishes a marker, which every reader of these streams skips. See `Connector.settle`.
 */
export function settleOwnStream(connector: Connector, stream: string): Promise<void> {
  return connector.settle(stream, (channel) =>
    publishConfirmed(channel, '', stream, Buffer.from('{}'), { headers: { [markerHeader]: randomUUID() } }),
  );
}

/**
 * Resolves once a queue that holds records or positions (a partition stream, an offset queue), just declared,
 * takes traffic: the probe starts a consumer and its channel is closed right after, acknowledging nothing (a
 * stream is read from `next`, so nothing is read; on a quorum queue, whatever was handed out goes back when the
 * channel closes, together with the consumer's end, so no other consumer is activated in between). See
 * `Connector.settle`.
 */
export function settleQueue(connector: Connector, queue: string, kind: 'stream' | 'quorum'): Promise<void> {
  return connector.settle(queue, async (channel) => {
    await channel.prefetch(1);
    await channel.consume(queue, () => undefined, {
      noAck: false,
      ...(kind === 'stream' ? { arguments: { 'x-stream-offset': 'next' } } : {}),
    });
  });
}

/** Whether a message is a read marker. */
export function isMarker(message: ConsumeMessage): boolean {
  return (message.properties.headers as Record<string, unknown> | undefined)?.[markerHeader] !== undefined;
}

/** A marker header's value as text (amqplib decodes AMQP long strings as strings or Buffers). */
export function markerText(value: unknown): string {
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  return '';
}
