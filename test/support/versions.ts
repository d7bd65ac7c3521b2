import fs from 'node:fs';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import type { Run } from '../../activities/runner.js';
import type { NewVersion } from '../../common/lineage.js';
import { sha256File } from '../../lib/files.js';
import { updateLineage } from '../../starters/lineage-client.js';
import { registerVersionUpdate } from '../../workflows/lineage/messages.js';

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

/**
 * A version stored on a NAS as a build leaves it (a disk in the NAS's store with its first MiB
 * written, read-only unless said otherwise) and registered in its image's lineage; returns the file.
 */
export async function storeVersion(
  client: Client,
  run: Run,
  o: {
    home: string;
    nas: string;
    image: string;
    n?: number;
    format?: 'qcow2' | 'raw';
    mib?: number;
    writable?: boolean;
  },
): Promise<string> {
  const { n = 1, format = 'qcow2', mib = 64 } = o;
  const file = path.join(o.home, 'nas', o.nas, 'store', o.image, `v${n}`, `${o.image}-v${n}.${format}`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await run(['qemu-img', 'create', '-q', '-f', format, file, `${mib * 1024 * 1024}`]);
  await run(['qemu-io', '-f', format, '-c', 'write -P 0x5a 0 1M', file]);
  if (!o.writable) fs.chmodSync(file, 0o444);
  const artifact = { format, host: o.nas, path: file, sha256: await sha256File(file), bytes: fs.statSync(file).size };
  await updateLineage(client, o.image, registerVersionUpdate, { ...newVersion(n), artifacts: [artifact] });
  return file;
}
