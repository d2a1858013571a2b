/**
 * The attribute names `tidings/otel` writes, from the OpenTelemetry messaging semantic conventions (semconv 1.27 and
 * later: `messaging.operation.type`, `messaging.operation.name`, `messaging.consumer.group.name`, ...), plus a few
 * `tidings.*` attributes for what the conventions do not name. Kept as string literals so that the library needs
 * only `@opentelemetry/api`.
 */

export const attr = {
  system: 'messaging.system',
  operationName: 'messaging.operation.name',
  operationType: 'messaging.operation.type',
  destinationName: 'messaging.destination.name',
  partitionId: 'messaging.destination.partition.id',
  consumerGroup: 'messaging.consumer.group.name',
  messageId: 'messaging.message.id',
  conversationId: 'messaging.message.conversation_id',
  bodySize: 'messaging.message.body.size',
  errorType: 'error.type',
  messageType: 'tidings.message.type',
  messageKey: 'tidings.message.key',
  offset: 'tidings.message.offset',
  causationId: 'tidings.message.causation_id',
  deliveryCount: 'tidings.delivery.count',
  attempts: 'tidings.handler.attempts',
  outcome: 'tidings.outcome',
  service: 'tidings.service',
} as const;

/**
 * `messaging.system` for a transport name: the semantic conventions' well-known value where there is one
 * (`kafka`, `rabbitmq`, `aws_sqs`, `gcp_pubsub`), else the transport's name; the embedded log and the in-memory
 * transport report `tidings`, and so does an outbox enqueue (`create`, whose `PublishInfo.system` is `tidings`: the
 * outbox's database is not a messaging system, and the transport is only chosen when a relay publishes the event).
 */
export function messagingSystem(transportName: string): string {
  switch (transportName) {
    case 'log':
    case 'memory':
      return 'tidings';
    case 'sqs':
      return 'aws_sqs';
    case 'gcp-pubsub':
      return 'gcp_pubsub';
    default:
      return transportName;
  }
}

/** `error.type` of an error: a `TidingsError`'s code, else the error's class name, else `_OTHER`. */
export function errorType(error: unknown): string {
  if (typeof error === 'object' && error !== null) {
    const code = (error as { code?: unknown }).code;
    if (typeof code === 'string' && code.length > 0) return code;
    const name = (error as { constructor?: { name?: unknown } }).constructor?.name;
    if (typeof name === 'string' && name.length > 0) return name;
  }
  return '_OTHER';
}
