/**
 * The demo's second arch: which one, refused when it is the machine's own, and one line saying why
 * when this machine cannot build for it (emulation that cannot be set up), before the demo starts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { VersionRecord } from '../../common/lineage.js';
import {
  checkSecondArchVersion,
  defaultSecondArch,
  formatPackageArches,
  secondArchOption,
  secondArchPlatform,
} from '../../starters/demo-arch.js';
import { tempDir } from '../support/dirs.js';

/** Debian's qemu-user-static definition of its aarch64 handler, as shipped in /usr/lib/binfmt.d. */
const AARCH64_CONF =
  ':qemu-aarch64:M::\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF';

describe("the demo's second arch", () => {
  const dir = tempDir();
  const run = async (argv: readonly string[]) => {
    throw new Error(`no command expected here, got ${argv.join(' ')}`);
  };

  /** A binfmt_misc directory as the kernel shows it, and definition directories with nothing in them. */
  function machine(name: string, status = 'enabled', definition?: string) {
    const binfmtDir = path.join(dir, name, 'binfmt_misc');
    const defs = path.join(dir, name, 'binfmt.d');
    fs.mkdirSync(binfmtDir, { recursive: true });
    fs.mkdirSync(defs, { recursive: true });
    fs.writeFileSync(path.join(binfmtDir, 'register'), '');
    fs.writeFileSync(path.join(binfmtDir, 'status'), `${status}\n`);
    if (definition) fs.writeFileSync(path.join(defs, 'qemu-aarch64.conf'), `${definition}\n`);
    return { run, machine: 'x86_64', binfmtDir, definitionDirs: [defs] };
  }

  it("is i686 on x86_64 and x86_64 elsewhere; another may be asked for, never the machine's own", () => {
    expect([defaultSecondArch('x86_64'), defaultSecondArch('aarch64')]).toEqual(['i686', 'x86_64']);
    expect(secondArchOption(undefined, 'x86_64')).toBe('i686');
    expect(secondArchOption('aarch64', 'x86_64')).toBe('aarch64');
    expect(() => secondArchOption('x86_64', 'x86_64')).toThrow(
      /^--second-arch: expected an arch other than this machine's \(x86_64\), got "x86_64"$/,
    );
    expect(() => secondArchOption('sparc', 'x86_64')).toThrow(/^--second-arch: expected one of x86_64, aarch64, /);
  });

  it('says in one line, naming the image and the arch, when emulation cannot be set up', async () => {
    await expect(secondArchPlatform('aarch64', machine('no-qemu'))).rejects.toThrow(
      /^demo: demo-node-aarch64 cannot be built for aarch64 on this machine: builder for aarch64: qemu-user-static is not installed \(no qemu-aarch64\.conf in [^\n]*\); run scripts\/setup\.sh or apt-get install qemu-user-static$/,
    );
    await expect(secondArchPlatform('aarch64', machine('disabled', 'disabled', AARCH64_CONF))).rejects.toThrow(
      /^demo: demo-node-aarch64 cannot be built for aarch64 on this machine: builder for aarch64: binfmt_misc is disabled on this machine \([^\n]*\); enable it to build aarch64 images here$/,
    );
  });

  it("takes a version as the arch's only when its record and its packages say so", () => {
    const version = {
      id: 'v2',
      arch: 'i686',
      provenance: { build: { arch: 'i686', machine: 'x86_64', mode: 'native' } },
    } as VersionRecord;
    expect(() => checkSecondArchVersion(version, 'i686', { i386: 80, all: 12 })).not.toThrow();
    expect(() => checkSecondArchVersion(version, 'i686', { amd64: 80, all: 12 })).toThrow(
      /^demo: demo-node-i686:v2 has no i386 package installed/,
    );
    expect(() => checkSecondArchVersion({ ...version, arch: 'x86_64' }, 'i686', { i386: 80 })).toThrow(
      /^demo: demo-node-i686:v2 records arch x86_64 built for i686, not i686$/,
    );
    expect(formatPackageArches({ all: 12, i386: 80 })).toBe('92 installed: 80 i386, 12 all');
  });
});
