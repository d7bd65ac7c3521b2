/** The few statistics the benches print, computed the same way in each. */

/** The value below which a fraction `p` of the samples fall (nearest rank). */
export function percentile(samples: readonly number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;
}

export const median = (samples: readonly number[]) => percentile(samples, 0.5);

/** Milliseconds right-aligned in a column. */
export const ms = (x: number, width = 8) => x.toFixed(1).padStart(width);

/** Runs `fn` and returns how long it took in milliseconds. */
export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await fn();
  return performance.now() - started;
}
