/**
 * `tidings`: the core. Events and commands, the envelope, the bus, the handler router and its middleware, errors,
 * and the in-memory transport. Never imports a broker or database client; transports live in their own subpaths.
 * @module
 */
export {
  createBus,
  type Bus,
  type BusOptions,
  type PublishManyItem,
  type ParkedApi,
  type DeadLettersApi,
} from './core/bus.js';
export {
  defineEvent,
  defineCommand,
  isDefinition,
  type EventDefinition,
  type CommandDefinition,
  type MessageDefinition,
  type DefineOptions,
  type KeySelector,
  type InputOf,
  type DataOf,
} from './core/define.js';
export { checkEventName, checkCommandName, type NamingMode } from './core/naming.js';
export type { Envelope } from './core/envelope.js';
export {
  encodeEnvelope,
  decodeEnvelope,
  encodedSize,
  type WireMode,
  type EncodedEnvelope,
} from './core/codec.js';
export type {
  Receipt,
  PublishOptions,
  HandlerContext,
  HandledMessage,
  HandlerFn,
  Middleware,
} from './core/handler.js';
export { composeMiddleware } from './core/handler.js';
export {
  Consumer,
  type ConsumerOptions,
  type ConsumerStats,
  type FailurePolicy,
  type Position,
  type ParkedRetryResult,
} from './core/consumer.js';
export {
  retry,
  timeout,
  idempotent,
  backoffDelayMs,
  resolveRetryOptions,
  type RetryOptions,
} from './core/middleware.js';
export { createMemoryInbox, type InboxStore, type MemoryInboxOptions } from './core/inbox.js';
export {
  createMemoryParking,
  type ParkingStore,
  type ParkedKey,
  type ParkedKeyRef,
  type ParkedEvent,
  type MemoryParkingOptions,
} from './core/parking.js';
export {
  deadLetterTopic,
  listDeadLetters,
  getDeadLetter,
  resolveDeadLetter,
  readDeadLetterHistory,
  type DeadLetterHistoryEntry,
  type DeadLetter,
  type DeadLetterReason,
} from './core/dead-letters.js';
export {
  TidingsError,
  ErrorCode,
  isTidingsError,
  isRetryable,
  type ErrorDetails,
  type TidingsErrorOptions,
} from './core/errors.js';
export { systemClock, type Clock } from './core/clock.js';
export type { Relay, RelaySource, RelayStats, RelayTarget } from './core/relay.js';
export { buildEnvelope, type BuiltEnvelope, type EnvelopeContext } from './core/envelope-builder.js';
export { uuidv7, type IdGenerator } from './core/ids.js';
export { createConsoleLogger, silentLogger, type Logger, type LogLevel } from './core/logger.js';
export { partitionForKey } from './core/partitioner.js';
export { closeOnSignals, type Closable, type CloseOnSignalsOptions } from './core/signals.js';
export type { StandardSchemaV1 } from './core/schema.js';
export { toJsonSchema, type JsonSchema, type JsonSchemaConverter } from './core/json-schema.js';
export {
  traceIdOf,
  type Instrumentation,
  type PublishInfo,
  type PublishScope,
  type PublishOutcome,
  type DeliveryInfo,
  type DeliveryScope,
  type DeliveryOutcome,
  type DeliveryStatus,
} from './core/instrumentation.js';
export {
  topologyTopic,
  topologyHeader,
  parseTopologyFact,
  type TopologyFact,
  type TopologyMessage,
} from './core/topology.js';
export {
  outcomesTopic,
  outcomesRetentionMs,
  parseOutcomeRecord,
  outcomeCorrelationId,
  type OutcomeEntry,
  type JournaledOutcome,
} from './core/outcomes.js';
export type {
  Transport,
  TransportAdmin,
  TransportFeatures,
  Subscription,
  SubscribeOptions,
  Delivery,
  OutgoingRecord,
  StoredRecord,
  PublishAck,
  StartPosition,
  TopicConfig,
  TopicDescription,
  PartitionLag,
  GroupDescription,
  TransportStores,
  OperatorRequest,
  NewOperatorRequest,
  OperatorRequestOutcome,
  OperatorRequestStore,
} from './core/transport.js';
export { readLimitMax } from './core/transport.js';
export { createMemoryTransport, type MemoryTransportOptions } from './memory/index.js';
