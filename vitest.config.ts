import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.spec.ts'],
    reporters: ['default', './test/summary-reporter.ts'],
    setupFiles: ['./test/setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration specs spawn real processes; two cores, so keep files from starving each other.
    maxWorkers: 2,
    fileParallelism: true
  }
})
