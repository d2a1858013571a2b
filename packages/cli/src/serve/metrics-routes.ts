/**
 * `GET /metrics` in the Prometheus text format, when `tidings serve --metrics` is given.
 */
import type { FastifyInstance } from 'fastify';
import type { ServeContext } from './context.js';

/** Adds the metrics route to `app`. Resolves with a function that releases what it opened. */
export function registerMetricsRoutes(
  _app: FastifyInstance,
  _context: ServeContext,
): Promise<() => Promise<void>> {
  return Promise.resolve(() => Promise.resolve());
}
