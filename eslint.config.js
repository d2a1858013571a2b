// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/node_modules/**', '**/dist/**', '**/.tidings/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-imports': 'off',
    },
  },
  {
    // The root entry never imports a transport or a database client (DESIGN.md, "Layout").
    files: ['packages/tidings/src/core/**/*.ts', 'packages/tidings/src/index.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['../log/*', '../nats/*', '../redis/*', '../rabbitmq/*', '../postgres/*', '../kafka/*'],
              message: 'Core never imports a transport.',
            },
            {
              group: ['better-sqlite3', 'pg', 'mysql2', 'ioredis', 'amqplib', '@nats-io/*'],
              message: 'Core never imports a client library.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.js'],
    ...tseslint.configs.disableTypeChecked,
  },
);
