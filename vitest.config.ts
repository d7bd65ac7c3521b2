import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Temporal's native module crashes worker threads: every test file runs in a forked process.
    pool: 'forks',
    globalSetup: ['test/support/global-setup.ts'],
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    fileParallelism: true,
    maxWorkers: 2,
  },
});
