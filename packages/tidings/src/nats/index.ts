/**
 * `tidings/nats`: the NATS JetStream transport (`@nats-io/jetstream` and `@nats-io/transport-node`, v3, optional
 * peer dependencies). See {@link createNatsTransport} for what it promises and `docs/transports/nats.md` for how
 * topics, groups, offsets and leases map onto JetStream.
 */
export { createNatsTransport, type NatsTransport } from './transport.js';
export type { NatsSubscription } from './member.js';
export type { NatsConnectionOptions, NatsTransportOptions } from './options.js';
