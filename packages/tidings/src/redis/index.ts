/**
 * `tidings/redis`: the Redis Streams transport (ioredis 6, Redis 7.0 or later). See
 * {@link createRedisTransport} for what it promises and docs/transports/redis.md for how it maps onto Redis.
 */
export { createRedisTransport, type RedisTransport } from './transport.js';
export type { RedisTransportOptions } from './options.js';
export type { RedisSubscription } from './subscription.js';
