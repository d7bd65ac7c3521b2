/**
 * Architecture names (one module for CLI, workers and workflows), how a machine builds each, and
 * reading binfmt_misc handlers and ELF headers.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  elfArch,
  ensureEmulation,
  handlerMatches,
  parseHandlerStatus,
  parseRegistration,
  resolveInRoot,
  treeArch,
} from '../../activities/builder/arch.js';
import {
  ARCHES,
  archFromDebian,
  archFromElf,
  archFromNode,
  archFromUname,
  buildMode,
  debianArch,
  describePlatform,
} from '../../common/arch.js';
import { checkArch } from '../../common/names.js';
import { tempDir } from '../support/dirs.js';

/** Debian's qemu-user-static definition of its aarch64 handler, as shipped in /usr/lib/binfmt.d. */
const AARCH64_CONF =
  ':qemu-aarch64:M::\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF';
/** The same handler as the kernel shows it once registered. */
const AARCH64_STATUS =
  'enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n';

/** The first 20 bytes of an ELF executable: class, byte order, e_type EXEC and e_machine. */
function elfHeader(machine: number, elfClass: 1 | 2, data: 1 | 2 = 1): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt32BE(0x7f454c46, 0);
  b[4] = elfClass;
  b[5] = data;
  b[6] = 1;
  if (data === 2) {
    b.writeUInt16BE(2, 16);
    b.writeUInt16BE(machine, 18);
  } else {
    b.writeUInt16LE(2, 16);
    b.writeUInt16LE(machine, 18);
  }
  return b;
}

describe('architecture names', () => {
  it('maps imgflow names to Debian, Node and uname names and back', () => {
    expect([debianArch('x86_64'), debianArch('i686'), debianArch('aarch64')]).toEqual(['amd64', 'i386', 'arm64']);
    expect([archFromDebian('amd64'), archFromDebian('i386'), archFromDebian('arm64'), archFromDebian('armhf')]).toEqual(
      ['x86_64', 'i686', 'aarch64', undefined],
    );
    expect([archFromNode('x64'), archFromNode('ia32'), archFromNode('arm64'), archFromNode('mips')]).toEqual([
      'x86_64',
      'i686',
      'aarch64',
      'mips',
    ]);
    expect(['x86_64', 'i386', 'i586', 'i686', 'aarch64', 'arm64', 'armv7l'].map(archFromUname)).toEqual([
      'x86_64',
      'i686',
      'i686',
      'i686',
      'aarch64',
      'aarch64',
      'armv7l',
    ]);
    for (const arch of ARCHES) expect(archFromDebian(debianArch(arch))).toBe(arch);
  });

  it('takes i686 as an arch, and lists x86_64 and aarch64 first as before', () => {
    expect(checkArch('arch', 'i686')).toBe('i686');
    expect(() => checkArch('arch', 'i386')).toThrow(/^arch: expected one of x86_64, aarch64, i686, .*got "i386"$/);
  });

  it('builds i686 natively on x86_64, aarch64 emulated; each machine its own natively', () => {
    expect(buildMode('x86_64', 'x86_64')).toBe('native');
    expect(buildMode('x86_64', 'i686')).toBe('native');
    expect(buildMode('x86_64', 'aarch64')).toBe('emulated');
    expect(buildMode('aarch64', 'aarch64')).toBe('native');
    expect(buildMode('aarch64', 'x86_64')).toBe('emulated');
    expect(buildMode('i686', 'x86_64')).toBe('emulated');
    expect(buildMode('mips', 'x86_64')).toBe('emulated');
  });

  it('reads the arch from an ELF header', () => {
    expect(archFromElf(62, 2, 1)).toBe('x86_64');
    expect(archFromElf(3, 1, 1)).toBe('i686');
    expect(archFromElf(183, 2, 1)).toBe('aarch64');
    expect(archFromElf(22, 2, 2)).toBe('s390x');
    expect(archFromElf(62, 1, 1)).toBeUndefined();
    expect(archFromElf(40, 1, 1)).toBeUndefined();
  });

  it('describes a build platform in one line', () => {
    expect(describePlatform({ arch: 'i686', machine: 'x86_64', mode: 'native' })).toBe('i686, native on x86_64');
    expect(
      describePlatform({
        arch: 'aarch64',
        machine: 'x86_64',
        mode: 'emulated',
        emulator: 'qemu-aarch64: qemu-aarch64 version 7.2.22',
      }),
    ).toBe('aarch64, emulated on x86_64 (qemu-aarch64: qemu-aarch64 version 7.2.22)');
  });
});

describe('binfmt_misc handlers', () => {
  it('reads a registration line and the kernel status of the same handler alike', () => {
    const defined = parseRegistration(AARCH64_CONF);
    const shown = parseHandlerStatus('qemu-aarch64', AARCH64_STATUS)!;
    expect(defined).toMatchObject({
      name: 'qemu-aarch64',
      interpreter: '/usr/libexec/qemu-binfmt/aarch64-binfmt-P',
      flags: 'OPF',
      offset: 0,
    });
    expect(shown).toMatchObject({
      name: 'qemu-aarch64',
      enabled: true,
      interpreter: '/usr/libexec/qemu-binfmt/aarch64-binfmt-P',
      flags: 'POF',
      offset: 0,
    });
    expect(defined.magic.toString('hex')).toBe(shown.magic.toString('hex'));
    expect(defined.mask!.toString('hex')).toBe(shown.mask!.toString('hex'));
    expect(parseHandlerStatus('qemu-aarch64', AARCH64_STATUS.replace('enabled', 'disabled'))!.enabled).toBe(false);
    // An extension handler has no magic: it never takes an ELF binary.
    expect(
      parseHandlerStatus('python3.11', 'enabled\ninterpreter /usr/bin/python3.11\nflags: \nextension .pyc\n'),
    ).toBeUndefined();
  });

  it('refuses what is no magic registration line, in one line', () => {
    expect(() => parseRegistration(':python:E::pyc::/usr/bin/python3:')).toThrow(
      /^binfmt_misc: expected a magic-type registration line/,
    );
  });

  it('matches aarch64 executables and shared objects, and no other arch', () => {
    const handler = parseHandlerStatus('qemu-aarch64', AARCH64_STATUS)!;
    const shared = elfHeader(183, 2);
    shared.writeUInt16LE(3, 16); // ET_DYN: the mask lets both through
    expect(handlerMatches(handler, elfHeader(183, 2))).toBe(true);
    expect(handlerMatches(handler, shared)).toBe(true);
    expect(handlerMatches(handler, elfHeader(62, 2))).toBe(false);
    expect(handlerMatches(handler, elfHeader(3, 1))).toBe(false);
    expect(handlerMatches(handler, Buffer.from('#!/bin/sh\n'))).toBe(false);
  });
});

describe('setting up emulation (on a stand-in for /proc/sys/fs/binfmt_misc)', () => {
  const dir = tempDir();
  const run = async (argv: readonly string[]) => {
    throw new Error(`no command expected here, got ${argv.join(' ')}`);
  };
  function binfmt(
    name: string,
    handlers: Record<string, string>,
  ): { binfmtDir: string; definitionDirs: string[]; registered: () => string } {
    const binfmtDir = path.join(dir, name, 'binfmt_misc');
    const defs = path.join(dir, name, 'binfmt.d');
    fs.mkdirSync(binfmtDir, { recursive: true });
    fs.mkdirSync(defs, { recursive: true });
    fs.writeFileSync(path.join(binfmtDir, 'register'), '');
    fs.writeFileSync(path.join(binfmtDir, 'status'), 'enabled\n');
    fs.writeFileSync(path.join(defs, 'qemu-aarch64.conf'), `# qemu-user-static\n${AARCH64_CONF}\n`);
    for (const [handler, text] of Object.entries(handlers)) fs.writeFileSync(path.join(binfmtDir, handler), text);
    return {
      binfmtDir,
      definitionDirs: [defs],
      registered: () => fs.readFileSync(path.join(binfmtDir, 'register'), 'utf8'),
    };
  }

  it('uses an enabled handler another registered for the arch as it is, registering nothing', async () => {
    const machine = binfmt('theirs', {
      aarch64: AARCH64_STATUS.replace('aarch64-binfmt-P', 'qemu-aarch64-other'),
      python: 'enabled\ninterpreter /usr/bin/python3\nflags: \nextension .pyc\n',
    });
    const handler = await ensureEmulation('aarch64', { run, ...machine });
    expect(handler).toMatchObject({ name: 'aarch64', interpreter: '/usr/libexec/qemu-binfmt/qemu-aarch64-other' });
    expect(machine.registered()).toBe('');
  });

  it('refuses, naming it, a handler without the F flag, and one that is disabled, and changes neither', async () => {
    const noF = binfmt('nof', { 'qemu-aarch64': AARCH64_STATUS.replace('flags: POF', 'flags: P') });
    await expect(ensureEmulation('aarch64', { run, ...noF })).rejects.toThrow(
      /^builder for aarch64: the binfmt_misc handler qemu-aarch64 .* lacks the F flag/,
    );
    const disabled = binfmt('disabled', { 'qemu-aarch64': AARCH64_STATUS.replace('enabled', 'disabled') });
    await expect(ensureEmulation('aarch64', { run, ...disabled })).rejects.toThrow(
      /^builder for aarch64: the binfmt_misc handler qemu-aarch64 is there but disabled/,
    );
    expect([noF.registered(), disabled.registered()]).toEqual(['', '']);
  });

  it('says in one line that qemu-user-static is missing when it has no definition for the arch', async () => {
    const machine = binfmt('bare', {});
    fs.rmSync(path.join(machine.definitionDirs[0]!, 'qemu-aarch64.conf'));
    await expect(ensureEmulation('aarch64', { run, ...machine })).rejects.toThrow(
      /^builder for aarch64: qemu-user-static is not installed \(no qemu-aarch64\.conf in .*\); run scripts\/setup\.sh/,
    );
  });
});

describe("an image tree's architecture", () => {
  const dir = tempDir();

  it("follows the image's own symlinks inside the tree, never the host's, and reads /bin/sh's ELF header", async () => {
    const root = path.join(dir, 'root');
    fs.mkdirSync(path.join(root, 'usr/bin'), { recursive: true });
    // Merged /usr, an absolute link as in the image: both must resolve inside the tree.
    fs.symlinkSync('usr/bin', path.join(root, 'bin'));
    fs.symlinkSync('/usr/bin/dash', path.join(root, 'usr/bin/sh'));
    fs.writeFileSync(path.join(root, 'usr/bin/dash'), Buffer.concat([elfHeader(3, 1), Buffer.alloc(100)]));
    expect(await resolveInRoot(root, '/bin/sh')).toBe(path.join(root, 'usr/bin/dash'));
    expect(await treeArch(root)).toBe('i686');

    fs.writeFileSync(path.join(root, 'usr/bin/dash'), Buffer.concat([elfHeader(183, 2), Buffer.alloc(100)]));
    expect(await elfArch(path.join(root, 'usr/bin/dash'))).toBe('aarch64');
    fs.writeFileSync(path.join(root, 'usr/bin/dash'), '#!/bin/false\n');
    expect(await treeArch(root)).toBeUndefined();

    // A link out of the tree stays in it: `..` stops at the image's root.
    fs.symlinkSync('../../../../../../usr/bin/dash', path.join(root, 'usr/bin/escape'));
    expect(await resolveInRoot(root, '/usr/bin/escape')).toBe(path.join(root, 'usr/bin/dash'));
    fs.symlinkSync('loop', path.join(root, 'loop'));
    await expect(resolveInRoot(root, '/loop')).rejects.toThrow(/too many levels of symbolic links/);
  });
});
