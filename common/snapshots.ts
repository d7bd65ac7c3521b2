/** Snapshot arithmetic shared by the drivers and the volume workflow. Pure code. */

/** Newest snapshot present on both sides, by imgflow's time-sorted names. */
export function newestCommon(source: readonly string[], target: readonly string[]): string | undefined {
  const onTarget = new Set(target);
  return [...source]
    .sort()
    .reverse()
    .find((name) => onTarget.has(name));
}
