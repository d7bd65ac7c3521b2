/**
 * A rollout's plan, as pure functions: which members each wave moves, and in which order a
 * rollback takes them back. No workflow APIs here, so the unit tests run it as it is.
 */
import type { Member } from '../../common/rollout.js';

/**
 * The members split into waves: wave i ends with the first ceil(n * waves[i] / 100) members, so
 * the first wave moves at least one member whenever there is one, and the last moves the rest.
 * Members go packs first, then volumes, each by name: the same request always gives the same waves.
 * A wave may be empty (few members, close percentages); it is shown, and nothing is moved in it.
 */
export function planWaves(members: readonly Member[], waves: readonly number[]): Member[][] {
  const ordered = [...members].sort((a, b) => a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name));
  const plan: Member[][] = [];
  let start = 0;
  for (const percent of waves) {
    const end = Math.min(ordered.length, Math.ceil((ordered.length * percent) / 100));
    plan.push(ordered.slice(start, end));
    start = end;
  }
  return plan;
}

/** The order a rollback undoes moves in: the reverse of the order they were made. */
export function returnOrder<T extends { movedAt?: number }>(moved: readonly T[]): T[] {
  return moved
    .map((m, i) => ({ m, i }))
    .filter(({ m }) => m.movedAt !== undefined)
    .sort((a, b) => b.m.movedAt! - a.m.movedAt! || b.i - a.i)
    .map(({ m }) => m);
}

/** A member as a table row names where it goes: a pack by tag, a volume by version. */
export function describeMove(m: Member): { from: string; to: string } {
  return m.kind === 'pack'
    ? { from: `${m.from.tag} (${m.from.version})`, to: `${m.to.tag} (${m.to.version})` }
    : { from: m.from.version, to: m.to.version };
}
