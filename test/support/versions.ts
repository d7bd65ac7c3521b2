import type { NewVersion } from '../../common/lineage.js';

/** A version record as a build registers it; the lineage checks its shape, not its bytes. */
export function newVersion(n: number, by = 'alice'): NewVersion {
  return {
    createdAt: new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString(),
    by,
    message: `build ${n}`,
    arch: 'x86_64',
    os: 'debian-12',
    recipeDigest: `r${n}`.padEnd(64, '0'),
    artifacts: [
      {
        format: 'qcow2',
        host: 'nas1',
        path: `/store/img/v${n}.qcow2`,
        sha256: `${n}`.padEnd(64, 'a'),
        bytes: 1000 + n,
      },
    ],
    packages: 88 + n,
    bytes: 200_000_000 + n,
    manifests: {
      packages: { path: `/store/img/v${n}.packages.json`, sha256: 'p'.repeat(64) },
      files: { path: `/store/img/v${n}.files.json`, sha256: 'f'.repeat(64) },
    },
    private: [],
    shared: false,
    report: [{ phase: 'bootstrap', durationMs: 1000, packages: 88, bytes: 200_000_000 }],
    provenance: {
      builder: 'b1',
      source: 'debootstrap bookworm',
      tools: { debootstrap: '1.0.128' },
      workflowId: `build-${n}`,
    },
  };
}
