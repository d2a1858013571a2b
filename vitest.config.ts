import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // Run the TypeScript sources of the workspace packages directly, without a build step.
    conditions: ['tidings-source'],
  },
  test: {
    include: ['packages/*/test/**/*.spec.ts', 'examples/**/*.spec.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
