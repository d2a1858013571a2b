/**
 * The in-process transport, the reference implementation of the transport contract. See
 * {@link createMemoryTransport} for what it promises.
 */
export {
  createMemoryTransport,
  type MemorySubscription,
  type MemoryTransport,
  type MemoryTransportOptions,
} from './transport.js';
