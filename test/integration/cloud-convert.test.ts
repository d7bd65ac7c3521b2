import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { convertImage } from '../../activities/cloud/convert.js';
import { createRunner } from '../../activities/runner.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { requireTools } from '../support/tools.js';

function qemuFormat(file: string): string {
  return (
    JSON.parse(execFileSync('qemu-img', ['info', '--output=json', file], { encoding: 'utf8' })) as { format: string }
  ).format;
}

describe('image conversion with qemu-img', () => {
  const dir = tempDir();
  const run = createRunner(memoryLogger().logger);
  const work = path.join(dir, 'work');

  beforeAll(() => {
    requireTools('qemu-img', 'qemu-io', 'tar');
    execFileSync('qemu-img', ['create', '-q', '-f', 'vmdk', path.join(dir, 'disk1.vmdk'), '8M']);
    execFileSync('qemu-io', ['-f', 'vmdk', '-c', 'write -P 0x5a 0 1M', path.join(dir, 'disk1.vmdk')], {
      stdio: 'ignore',
    });
    fs.writeFileSync(path.join(dir, 'appliance.ovf'), '<?xml version="1.0"?><Envelope/>');
    execFileSync('tar', ['-cf', path.join(dir, 'with-disk.ova'), '-C', dir, 'appliance.ovf', 'disk1.vmdk']);
    execFileSync('tar', ['-cf', path.join(dir, 'no-disk.ova'), '-C', dir, 'appliance.ovf']);
    execFileSync('qemu-img', ['create', '-q', '-f', 'vmdk', path.join(dir, 'disk2.vmdk'), '4M']);
    execFileSync('tar', [
      '-cf',
      path.join(dir, 'two-disks.ova'),
      '-C',
      dir,
      'appliance.ovf',
      'disk1.vmdk',
      'disk2.vmdk',
    ]);
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', path.join(dir, 'plain.raw'), '4M']);
  });

  it('takes the disk out of an OVA and converts it to qcow2', async () => {
    const target = path.join(dir, 'out', 'from-ova.qcow2');
    const result = await convertImage(run, {
      source: path.join(dir, 'with-disk.ova'),
      target,
      format: 'qcow2',
      workDir: work,
    });
    expect(result).toMatchObject({
      format: 'qcow2',
      sourceFormat: 'vmdk',
      ovaMember: 'disk1.vmdk',
      virtualBytes: 8 * 1024 * 1024,
      alreadyDone: false,
    });
    expect(qemuFormat(target)).toBe('qcow2');
    // The pattern written into the vmdk reads back from the converted disk.
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x5a 0 1M', target], { stdio: 'ignore' });
    expect(fs.readdirSync(work)).toEqual([]);
  });

  it('is idempotent: a second call reuses the converted disk', async () => {
    const target = path.join(dir, 'out', 'from-ova.qcow2');
    const before = fs.statSync(target).mtimeMs;
    const result = await convertImage(run, {
      source: path.join(dir, 'with-disk.ova'),
      target,
      format: 'qcow2',
      workDir: work,
    });
    expect(result.alreadyDone).toBe(true);
    expect(fs.statSync(target).mtimeMs).toBe(before);
  });

  it('refuses an OVA without a disk, naming its members', async () => {
    const error = await convertImage(run, {
      source: path.join(dir, 'no-disk.ova'),
      target: path.join(dir, 'out', 'none.qcow2'),
      format: 'qcow2',
      workDir: work,
    }).catch((e: unknown) => e);
    expect((error as Error).message).toMatch(/^convert ova-disk: the OVA holds no disk \(members: appliance\.ovf\)/);
    expect(fs.existsSync(path.join(dir, 'out', 'none.qcow2'))).toBe(false);
  });

  it('refuses an OVA holding several disks, naming them, rather than taking one by tar order', async () => {
    const target = path.join(dir, 'out', 'two.qcow2');
    const error = await convertImage(run, {
      source: path.join(dir, 'two-disks.ova'),
      target,
      format: 'qcow2',
      workDir: work,
    }).catch((e: unknown) => e);
    expect((error as Error).message).toBe(
      'convert ova-disk: the OVA holds 2 disks (disk1.vmdk, disk2.vmdk); an image is one disk, so none is taken',
    );
    expect(fs.existsSync(target)).toBe(false);
  });

  it('refuses a file the list declares an OVA that is not an archive, instead of registering it as a raw disk', async () => {
    const target = path.join(dir, 'out', 'not-ova.qcow2');
    const error = await convertImage(run, {
      source: path.join(dir, 'plain.raw'),
      target,
      format: 'qcow2',
      workDir: work,
      declared: 'OVA',
    }).catch((e: unknown) => e);
    expect((error as Error).message).toBe(
      'convert format: the list declares OVA, the file is not an archive (it reads as raw)',
    );
    expect(fs.existsSync(target)).toBe(false);
  });

  it('reports a declared format the file does not have, and converts what the file is', async () => {
    const fromRaw = await convertImage(run, {
      source: path.join(dir, 'plain.raw'),
      target: path.join(dir, 'out', 'declared.qcow2'),
      format: 'qcow2',
      workDir: work,
      declared: 'qcow2',
    });
    expect(fromRaw).toMatchObject({ sourceFormat: 'raw', formatNote: 'the list declares qcow2, the file is raw' });
    const again = await convertImage(run, {
      source: path.join(dir, 'plain.raw'),
      target: path.join(dir, 'out', 'declared.qcow2'),
      format: 'qcow2',
      workDir: work,
      declared: 'qcow2',
    });
    expect(again).toMatchObject({ alreadyDone: true, formatNote: 'the list declares qcow2, the file is raw' });
    const ova = await convertImage(run, {
      source: path.join(dir, 'with-disk.ova'),
      target: path.join(dir, 'out', 'from-ova.qcow2'),
      format: 'qcow2',
      workDir: work,
      declared: 'VMDK',
    });
    expect(ova.formatNote).toBe('the list declares VMDK, the file is an OVA');
    const agreed = await convertImage(run, {
      source: path.join(dir, 'with-disk.ova'),
      target: path.join(dir, 'out', 'from-ova.qcow2'),
      format: 'qcow2',
      workDir: work,
      declared: 'ova',
    });
    expect(agreed.formatNote).toBeUndefined();
  });

  it('converts a raw image to raw for a raw registry', async () => {
    const target = path.join(dir, 'out', 'plain.raw');
    const result = await convertImage(run, {
      source: path.join(dir, 'plain.raw'),
      target,
      format: 'raw',
      workDir: work,
    });
    expect(result).toMatchObject({ format: 'raw', sourceFormat: 'raw', virtualBytes: 4 * 1024 * 1024 });
  });

  it('refuses a qcow2 with a backing file, so a download cannot read other host files', async () => {
    const overlay = path.join(dir, 'overlay.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', path.join(dir, 'plain.raw'), overlay]);
    const error = await convertImage(run, {
      source: overlay,
      target: path.join(dir, 'out', 'overlay.qcow2'),
      format: 'qcow2',
      workDir: work,
    }).catch((e: unknown) => e);
    expect((error as Error).message).toMatch(/has a backing file/);
  });

  it('refuses an OVA whose disk is a symlink', async () => {
    const linkDir = path.join(dir, 'link');
    fs.mkdirSync(linkDir);
    fs.symlinkSync('/etc/hostname', path.join(linkDir, 'evil.vmdk'));
    execFileSync('tar', ['-cf', path.join(dir, 'evil.ova'), '-C', linkDir, 'evil.vmdk']);
    const error = await convertImage(run, {
      source: path.join(dir, 'evil.ova'),
      target: path.join(dir, 'out', 'evil.qcow2'),
      format: 'qcow2',
      workDir: work,
    }).catch((e: unknown) => e);
    expect((error as Error).message).toMatch(/is not a regular file/);
  });
});
