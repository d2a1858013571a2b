import { defaultServerConditions } from 'vite';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // Run the TypeScript sources of the workspace packages directly, without a build step (tests import `tidings`,
  // which the `tidings-source` export condition maps to src/). Vitest resolves test imports as SSR.
  resolve: { conditions: ['tidings-source'] },
  ssr: { resolve: { conditions: ['tidings-source', ...defaultServerConditions] } },
  test: {
    include: ['packages/*/test/**/*.spec.ts', 'examples/**/*.spec.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
