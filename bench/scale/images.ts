/**
 * The scale bench's images: each a lineage with its versions, each version a small qcow2 file in
 * the store of the NAS the image lives on (image i on NAS i mod N), registered as a build
 * registers it. The files are copies of one template per NAS (16 MiB virtual, its first 64 KiB
 * written), so a thousand images take little room; each version is a file of its own.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import type { Run } from '../../activities/runner.js';
import { sha256File } from '../../lib/files.js';
import { paths } from '../../lib/config.js';
import { updateLineage } from '../../starters/lineage-client.js';
import { registerVersionUpdate } from '../../workflows/lineage/messages.js';
import { newVersion } from '../../test/support/versions.js';
import type { NasHost } from './site.js';

const MiB = 1024 * 1024;

export interface ScaleImage {
  image: string;
  nas: string;
  versions: number;
}

async function template(run: Run, dir: string): Promise<{ file: string; sha256: string; bytes: number }> {
  const file = path.join(dir, 'template.qcow2');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  await run(['qemu-img', 'create', '-q', '-f', 'qcow2', file, String(16 * MiB)]);
  await run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x5a 0 64k', file]);
  return { file, sha256: await sha256File(file), bytes: fs.statSync(file).size };
}

/** Registers `count` images of `versions` versions each, `lanes` at a time; returns them in order. */
export async function makeImages(
  client: Client,
  run: Run,
  o: { prefix: string; count: number; versions: number; nas: NasHost[]; scratch: string; lanes: number },
): Promise<ScaleImage[]> {
  const templates = new Map<string, Awaited<ReturnType<typeof template>>>();
  for (const nas of o.nas) templates.set(nas.host, await template(run, path.join(o.scratch, 'templates', nas.host)));
  const images = Array.from({ length: o.count }, (_, i) => ({
    image: `${o.prefix}-i${i}`,
    nas: o.nas[i % o.nas.length]!.host,
    versions: o.versions,
  }));
  let next = 0;
  const lane = async () => {
    for (let i = next++; i < images.length; i = next++) {
      const { image, nas } = images[i]!;
      const home = o.nas.find((n) => n.host === nas)!.home;
      const t = templates.get(nas)!;
      for (let v = 1; v <= o.versions; v++) {
        const file = path.join(paths({ home }).nas(nas), 'store', image, `v${v}`, `${image}-v${v}.qcow2`);
        fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
        fs.copyFileSync(t.file, file);
        fs.chmodSync(file, 0o400);
        const artifact = { format: 'qcow2' as const, host: nas, path: file, sha256: t.sha256, bytes: t.bytes };
        await updateLineage(client, image, registerVersionUpdate, { ...newVersion(v, 'scale'), artifacts: [artifact] });
      }
    }
  };
  await Promise.all(Array.from({ length: o.lanes }, lane));
  return images;
}
