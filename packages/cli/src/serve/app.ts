/**
 * The HTTP server of `tidings serve`: one Fastify app that mounts each feature's routes, and releases what they
 * opened when it closes.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { ServeContext } from './context.js';
import { registerMetricsRoutes } from './metrics-routes.js';
import { registerRegistryRoutes } from './registry-routes.js';

/** The largest request body accepted, in bytes (a schema document is far smaller). */
export const maxRequestBytes = 1024 * 1024;

/**
 * Builds the app with every route mounted, not yet listening. `GET /healthz` answers `{"status":"ok"}`. Closing the
 * app releases what the routes opened (data directory, database connections).
 */
export async function buildServeApp(context: ServeContext): Promise<FastifyInstance> {
  const app = Fastify({ logger: false, bodyLimit: maxRequestBytes });
  const releases: Array<() => Promise<void>> = [];
  app.addHook('onClose', async () => {
    for (const release of releases.reverse()) await release();
  });
  app.get('/healthz', (_request, reply) => reply.send({ status: 'ok' }));
  releases.push(await registerRegistryRoutes(app, context));
  if (context.metrics) releases.push(await registerMetricsRoutes(app, context));
  return app;
}
