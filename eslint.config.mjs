// Lint rules that keep imgflow safe to run: no floating promises, type-only imports, no import
// cycles, and deterministic workflow code (no Node built-ins, no I/O libraries) in workflows/ and common/.
import tseslint from 'typescript-eslint';
import { importX } from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';
import { builtinModules } from 'node:module';

const nodeBuiltins = [...builtinModules, ...builtinModules.map((m) => `node:${m}`)];
/** Activity roles: each imports only activities/shared/, the drivers and the runner beneath them, never another role. */
const roles = ['builder', 'nas', 'compute', 'cloud', 'control'];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'bin/**', 'eslint.config.mjs'] },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/restrict-template-expressions': 'off',
      '@typescript-eslint/no-base-to-string': 'off',
    },
  },
  {
    // Settings come from lib/config.ts, read when the worker starts and handed to the factories.
    files: ['activities/**/*.ts', 'workers/roles.ts'],
    rules: {
      'no-restricted-properties': [
        'error',
        {
          object: 'process',
          property: 'env',
          message: 'activities take their settings from lib/config.ts through their factory',
        },
      ],
    },
  },
  ...roles.map((role) => ({
    files: [`activities/${role}/**/*.ts`],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: roles
            .filter((other) => other !== role)
            .map((other) => ({
              regex: `^(\\.\\./)+${other}/`,
              message: `a role does not import another role (${other}): what both need belongs in activities/shared/`,
            })),
        },
      ],
    },
  })),
  {
    // A module that imports itself through others: its imports are half-made when it runs, and
    // the modules stop being separable. Type-only imports are erased and do not count.
    plugins: { 'import-x': importX },
    settings: {
      // Imported files are parsed as TypeScript, and `.js` specifiers (NodeNext) resolve to their `.ts` sources.
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
      'import-x/extensions': ['.ts', '.js', '.mjs'],
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: 'tsconfig.json' })],
    },
    rules: { 'import-x/no-cycle': 'error' },
  },
  {
    files: ['workflows/**/*.ts', 'common/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: nodeBuiltins.map((name) => ({
            name,
            message: 'workflow code must be deterministic: no Node built-ins (activities do I/O)',
          })),
          patterns: [
            {
              group: ['**/activities/**'],
              allowTypeImports: true,
              message: 'workflows import activities as types only',
            },
            { group: ['execa', 'pino'], message: 'no I/O libraries in deterministic workflow code' },
            {
              group: ['@temporalio/client', '@temporalio/worker', '@temporalio/activity', '**/lib/*'],
              message: 'not allowed in deterministic workflow code',
            },
          ],
        },
      ],
    },
  },
);
