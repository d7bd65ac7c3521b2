/**
 * The pack activity on real files: a NAME on a NAS is one image's. Another image packing under it
 * is refused, naming the field and the image that owns it, and the NAME is left as it was; the
 * owner packs under it again, the previous pack moved aside.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createNasPackActivities, type PackInput } from '../../activities/nas/pack.js';
import { createRunner } from '../../activities/runner.js';
import type { Artifact } from '../../common/lineage.js';
import { loadConfig } from '../../lib/config.js';
import { sha256File } from '../../lib/files.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { requireTools } from '../support/tools.js';

describe('pack names on a NAS', () => {
  requireTools('mkfs.ext4', 'debugfs');
  const dir = tempDir();
  const config = loadConfig({ home: path.join(dir, 'home'), host: 'nas1' }, {});
  const run = createRunner(memoryLogger().logger);
  const packs = createNasPackActivities({ run, config });
  const vm = path.join(config.home, 'nas', 'nas1', 'vm');

  /** A stored raw ext4 version of `image` whose root account is locked. */
  async function stored(image: string, version: string): Promise<Artifact> {
    const tree = path.join(dir, `${image}-${version}`);
    fs.mkdirSync(path.join(tree, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(tree, 'etc', 'shadow'), 'root:*:19000:0:99999:7:::\n');
    fs.writeFileSync(path.join(tree, 'etc', 'hostname'), `${image}-${version}\n`);
    const file = path.join(dir, `${image}-${version}.raw`);
    await run(['mkfs.ext4', '-q', '-F', '-d', tree, file, '8M']);
    return { format: 'raw', host: 'nas1', path: file, sha256: await sha256File(file), bytes: fs.statSync(file).size };
  }

  const request = async (image: string, version: string, stamp: string): Promise<PackInput> => ({
    image,
    version,
    tag: `${version}-tag`,
    name: 'web',
    stamp,
    artifacts: [await stored(image, version)],
  });
  const owner = () =>
    JSON.parse(fs.readFileSync(path.join(vm, 'web', 'version.json'), 'utf8')) as { image: string; version: string };

  it("refuses another image's NAME and leaves it as it was; the owner packs under it again", async () => {
    const first = await packs.packBase(await request('alpha', 'v1', '2026-01-01-00-00-00'));
    expect(first).toMatchObject({ path: path.join(vm, 'web'), format: 'raw', changed: true });
    expect(owner()).toMatchObject({ image: 'alpha', version: 'v1' });

    await expect(packs.packBase(await request('beta', 'v1', '2026-01-01-00-00-01'))).rejects.toMatchObject({
      type: 'InputError',
      nonRetryable: true,
      message: 'as: expected a name not taken by another image on nas1 (web is the vm pack of alpha), got "web"',
    });
    expect(owner()).toMatchObject({ image: 'alpha', version: 'v1' });
    expect(fs.readdirSync(vm).sort()).toEqual(['.web.v1.2026-01-01-00-00-00', 'web']);

    const again = await packs.packBase(await request('alpha', 'v2', '2026-01-01-00-00-02'));
    expect(again).toMatchObject({ changed: true, movedAside: path.join(vm, 'web.moved.aside.on.2026-01-01-00-00-02') });
    expect(owner()).toMatchObject({ image: 'alpha', version: 'v2' });
  });
});
