// ESLint flat config. Formatting is Prettier's job (`npm run format`); ESLint only looks for likely bugs.
// typescript-eslint's `recommended`, not the type-checked sets: those need a TypeScript program per run,
// which makes linting as slow as `tsc`, and `npm run typecheck` already runs in CI.
import js from '@eslint/js';
import { defineConfig, globalIgnores } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  globalIgnores(['dist/', 'node_modules/', '.tap/', '.local/', 'bench/results/']),
  {
    files: ['**/*.ts'],
    extends: [js.configs.recommended, tseslint.configs.recommended],
    rules: {
      // A leading underscore marks a parameter or binding that is unused on purpose (callback signatures,
      // destructuring that drops fields).
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrorsIgnorePattern: '^_',
          destructuredArrayIgnorePattern: '^_',
        },
      ],
    },
  },
  {
    // The ops page's script runs in the browser as a classic script (no build step), with uPlot loaded before it.
    files: ['public/**/*.js'],
    extends: [js.configs.recommended],
    languageOptions: {
      sourceType: 'script',
      globals: Object.fromEntries(
        ['document', 'window', 'sessionStorage', 'fetch', 'setTimeout', 'clearTimeout', 'uPlot'].map((name) => [
          name,
          'readonly',
        ]),
      ),
    },
  },
  {
    // Kysely's migration docs ask for `Kysely<any>`, not `Kysely<YourDatabase>`: a migration is frozen in time and
    // must not depend on the application's current schema types. The rule would flag every up() and down().
    files: ['migrations/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    // Tests poke at replies and internals whose types do not matter to the assertion.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'warn' },
  },
);
