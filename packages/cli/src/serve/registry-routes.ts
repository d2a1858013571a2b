/**
 * The schema registry's routes under `/registry` (the Confluent Schema Registry REST subset).
 */
import type { FastifyInstance } from 'fastify';
import type { ServeContext } from './context.js';

/** Adds the registry routes to `app`. Resolves with a function that releases what they opened. */
export function registerRegistryRoutes(
  _app: FastifyInstance,
  _context: ServeContext,
): Promise<() => Promise<void>> {
  return Promise.resolve(() => Promise.resolve());
}
