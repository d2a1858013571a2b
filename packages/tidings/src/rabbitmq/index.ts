/**
 * `tidings/rabbitmq`: the RabbitMQ transport (amqplib, AMQP 0-9-1, RabbitMQ 3.9+ with streams). See
 * {@link createRabbitMqTransport} for what it promises and docs/transports/rabbitmq.md for the mapping onto the
 * broker.
 */
export { createRabbitMqTransport, type RabbitMqTransport } from './transport.js';
export type { RabbitMqSocketOptions, RabbitMqTransportOptions } from './options.js';
