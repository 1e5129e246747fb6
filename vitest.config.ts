import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'server/**/*.test.ts', 'agent/**/*.test.ts', 'shared/**/*.test.ts'],
    // A guard against a hung test, not a speed limit: tests that run the CLIs process by process
    // (~2 s a start when idle) take several times longer on a loaded two-core machine, and 60 s
    // cut three of them off there.
    testTimeout: 180_000,
    hookTimeout: 120_000,
    // Two cores: end-to-end files start servers and agent processes, so two files at a time at most.
    maxWorkers: 2,
    // A real PostgreSQL from an npm package, started once per run (see test/helpers/postgres.ts).
    globalSetup: ['test/global-setup.ts'],
  },
});
