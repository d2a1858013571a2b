import { defaultServerConditions } from 'vite';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // Run the TypeScript sources of the workspace packages directly, without a build step (tests import `tidings`,
  // which the `tidings-source` export condition maps to src/). Vitest resolves test imports as SSR.
  resolve: { conditions: ['tidings-source'] },
  // Without `module`: Node never resolves it, and packages such as @opentelemetry/* point it at ESM builds with
  // extensionless imports that Node cannot load once Vitest externalizes them.
  ssr: {
    resolve: {
      conditions: [
        'tidings-source',
        ...defaultServerConditions.filter((condition) => condition !== 'module'),
      ],
    },
  },
  test: {
    include: ['packages/*/test/**/*.spec.ts', 'examples/**/*.spec.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
