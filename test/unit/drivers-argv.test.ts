/**
 * Commands that need a production kernel (zvols, LIO through targetcli, the kernel iSCSI
 * initiator), checked by the argv the drivers issue to a recording `run` that plays the tool.
 * Expected argv follow the tools' documented syntax: zfs(8) create -V/clone/snapshot/set,
 * targetcli(8) `<path> create|delete ...` and `saveconfig`, iscsiadm(8) discovery/node/session.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createIscsiKernelAttach } from '../../activities/drivers/attach/iscsi-kernel.js';
import { createLioExport } from '../../activities/drivers/export/lio.js';
import { createTgtExport } from '../../activities/drivers/export/tgt.js';
import { createZfsStorage } from '../../activities/drivers/storage/zfs.js';
import { CommandError, type CommandOptions, type CommandResult, type Run } from '../../activities/runner.js';
import { tempDir } from '../support/dirs.js';

type Reply = string | { exitCode: number; stdout?: string; stderr?: string };

/** A `run` that records argv and answers through `reply`, honouring okExitCodes as the runner does. */
function recordingRun(reply: (argv: readonly string[]) => Reply) {
  const calls: string[][] = [];
  const run: Run = async (argv: readonly string[], options: CommandOptions = {}): Promise<CommandResult> => {
    calls.push([...argv]);
    const answer = reply(argv);
    const {
      exitCode,
      stdout = '',
      stderr = '',
    } = typeof answer === 'string' ? { exitCode: 0, stdout: answer } : answer;
    if (exitCode !== 0 && !options.okExitCodes?.includes(exitCode))
      throw new CommandError(argv, exitCode, stderr, `exit code ${exitCode}`);
    return { argv, exitCode, stdout, stderr, durationMs: 0 };
  };
  return { run, calls };
}

const GiB = 1024 ** 3;

describe('zfs zvol layout', () => {
  /** Just enough of zfs: datasets with properties, zvol device nodes appearing under `devices`. */
  function fakeZfs(devices: string) {
    const datasets = new Map<string, Record<string, string>>();
    const addZvol = (name: string, volsize: number) => {
      datasets.set(name, { type: 'volume', volsize: String(volsize), origin: '-' });
      fs.mkdirSync(path.dirname(path.join(devices, name)), { recursive: true });
      fs.writeFileSync(path.join(devices, name), '');
    };
    return recordingRun((argv) => {
      const [tool, verb] = argv;
      const last = argv[argv.length - 1]!;
      if (tool === 'qemu-img' && verb === 'info') return JSON.stringify({ 'virtual-size': 2.5 * GiB, format: 'qcow2' });
      if (tool === 'qemu-img') return '';
      if (verb === 'get') {
        const props = datasets.get(last);
        if (!props) return { exitCode: 1, stderr: `cannot open '${last}': dataset does not exist` };
        return argv[6]!
          .split(',')
          .map((p) => `${p}\t${props[p] ?? '-'}`)
          .join('\n');
      }
      if (verb === 'create') addZvol(last, Number(/^(\d+)G$/.exec(argv[argv.indexOf('-V') + 1]!)![1]) * GiB);
      if (verb === 'snapshot') datasets.set(last, { type: 'snapshot' });
      if (verb === 'clone') {
        addZvol(last, Number(datasets.get(argv[argv.length - 2]!.split('@')[0]!)!.volsize));
        datasets.get(last)!.origin = argv[argv.length - 2]!;
      }
      if (verb === 'set' && argv[2]!.startsWith('volsize='))
        datasets.get(last)!.volsize = argv[2]!.slice('volsize='.length);
      if (verb === 'destroy') datasets.delete(last);
      return '';
    });
  }

  const changes = (calls: string[][]) => calls.filter((argv) => !(argv[0] === 'zfs' && argv[1] === 'get'));

  it('imports a base into a zvol and clones it, then does nothing the second time', async () => {
    const devices = tempDir('imgflow-zvol-');
    const { run, calls } = fakeZfs(devices);
    const storage = createZfsStorage({
      run,
      root: 'tank/imgflow',
      layout: 'zvol',
      zvolDevices: devices,
      deviceTimeoutMs: 1000,
    });
    const base = { image: 'rocky', version: '9.4' };

    const imported = await storage.importBase({ ...base, source: '/srv/images/rocky-9.4.qcow2' });
    expect(imported).toEqual({
      ...base,
      devicePath: `${devices}/tank/imgflow/bases/rocky/9.4`,
      origin: 'tank/imgflow/bases/rocky/9.4@imgflow-base',
      sizeBytes: 3 * GiB,
    });
    const volume = await storage.clone({ volume: 'vm-7', base, sizeBytes: 10 * GiB + 1 });
    expect(volume).toMatchObject({
      devicePath: `${devices}/tank/imgflow/volumes/vm-7`,
      format: 'raw',
      origin: 'tank/imgflow/bases/rocky/9.4@imgflow-base',
    });
    expect(changes(calls)).toEqual([
      ['qemu-img', 'info', '--output=json', '--', '/srv/images/rocky-9.4.qcow2'],
      [
        'zfs',
        'create',
        '-p',
        '-V',
        '3G',
        '-o',
        'volblocksize=128K',
        '-o',
        'primarycache=metadata',
        '-o',
        'org.imgflow:base=rocky/9.4',
        'tank/imgflow/bases/rocky/9.4',
      ],
      [
        'qemu-img',
        'convert',
        '-n',
        '-O',
        'raw',
        '--',
        '/srv/images/rocky-9.4.qcow2',
        `${devices}/tank/imgflow/bases/rocky/9.4`,
      ],
      ['zfs', 'snapshot', 'tank/imgflow/bases/rocky/9.4@imgflow-base'],
      [
        'zfs',
        'clone',
        '-p',
        '-o',
        'org.imgflow:volume=vm-7',
        '-o',
        'primarycache=metadata',
        'tank/imgflow/bases/rocky/9.4@imgflow-base',
        'tank/imgflow/volumes/vm-7',
      ],
      // Rounded up to a whole 128K volblocksize.
      ['zfs', 'set', `volsize=${10 * GiB + 128 * 1024}`, 'tank/imgflow/volumes/vm-7'],
    ]);

    calls.length = 0;
    await storage.importBase({ ...base, source: '/srv/images/rocky-9.4.qcow2' });
    await storage.clone({ volume: 'vm-7', base, sizeBytes: 10 * GiB + 1 });
    expect(changes(calls)).toEqual([]);
  });

  it('redoes a half-imported base: a dataset without its base snapshot is destroyed first', async () => {
    const devices = tempDir('imgflow-zvol-');
    const { run, calls } = fakeZfs(devices);
    const storage = createZfsStorage({
      run,
      root: 'tank/imgflow',
      layout: 'zvol',
      zvolDevices: devices,
      deviceTimeoutMs: 1000,
    });
    await run(['zfs', 'create', '-V', '3G', 'tank/imgflow/bases/rocky/9.4']);
    calls.length = 0;
    await storage.importBase({ image: 'rocky', version: '9.4', source: '/srv/images/rocky-9.4.qcow2' });
    expect(changes(calls)[0]).toEqual(['zfs', 'destroy', '-r', 'tank/imgflow/bases/rocky/9.4']);
    expect(changes(calls).map((argv) => argv.slice(0, 2).join(' '))).toEqual([
      'zfs destroy',
      'qemu-img info',
      'zfs create',
      'qemu-img convert',
      'zfs snapshot',
    ]);
  });

  it('streams snapshots with zfs send, incrementally from a shared snapshot', () => {
    const storage = createZfsStorage({ run: recordingRun(() => '').run, root: 'tank/imgflow' });
    expect(storage.sendArgv('vm-7', { to: 'imgflow-2' })).toEqual([
      'zfs',
      'send',
      'tank/imgflow/volumes/vm-7@imgflow-2',
    ]);
    expect(storage.sendArgv('vm-7', { from: 'imgflow-1', to: 'imgflow-2' })).toEqual([
      'zfs',
      'send',
      '-i',
      'tank/imgflow/volumes/vm-7@imgflow-1',
      'tank/imgflow/volumes/vm-7@imgflow-2',
    ]);
    expect(() => storage.sendArgv('vm-7', { to: 'manual' })).toThrow(/imgflow-/);
  });
});

describe('LIO export through targetcli', () => {
  const IQN = 'iqn.2026-01.org.imgflow:nas1.vm-7';
  const NODE = 'iqn.2026-01.org.imgflow:cn042';

  /** targetcli's effect on configfs, played on a directory tree. */
  function fakeTargetcli(configfs: string) {
    const mkdir = (...parts: string[]) => fs.mkdirSync(path.join(configfs, ...parts), { recursive: true });
    const rm = (...parts: string[]) => fs.rmSync(path.join(configfs, ...parts), { recursive: true, force: true });
    return recordingRun((argv) => {
      const [, where, verb, ...args] = argv;
      const arg = (key: string) => args.find((a) => a.startsWith(`${key}=`))?.slice(key.length + 1);
      const backstore = /^\/backstores\/(block|fileio)$/.exec(where ?? '');
      const hba = backstore && (backstore[1] === 'block' ? 'iblock_0' : 'fileio_1');
      if (hba && verb === 'create') {
        mkdir('core', hba, arg('name')!);
        fs.writeFileSync(
          path.join(configfs, 'core', hba, arg('name')!, 'udev_path'),
          `${arg('dev') ?? arg('file_or_dev')}\n`,
        );
      }
      if (hba && verb === 'delete') rm('core', hba, args[0]!);
      if (where === '/iscsi' && verb === 'create') mkdir('iscsi', args[0]!, 'tpgt_1', 'acls');
      if (where === '/iscsi' && verb === 'delete') rm('iscsi', args[0]!);
      if (where?.endsWith('/tpg1/luns') && verb === 'create')
        mkdir('iscsi', where.split('/')[2]!, 'tpgt_1', 'lun', 'lun_0');
      if (where?.endsWith('/tpg1/acls') && verb === 'create')
        mkdir('iscsi', where.split('/')[2]!, 'tpgt_1', 'acls', args[0]!);
      if (where?.endsWith('/tpg1/acls') && verb === 'delete')
        rm('iscsi', where.split('/')[2]!, 'tpgt_1', 'acls', args[0]!);
      return '';
    });
  }

  it('creates backstore, target, LUN and one ACL, saves, and reports the export', async () => {
    const configfs = tempDir('imgflow-configfs-');
    const { run, calls } = fakeTargetcli(configfs);
    const lio = createLioExport({ run, nas: 'nas1', portal: '10.20.0.5', configfs });
    const exported = await lio.export({
      volume: 'vm-7',
      devicePath: '/dev/zvol/tank/imgflow/volumes/vm-7',
      initiator: NODE,
    });
    expect(calls).toEqual([
      ['targetcli', '/backstores/block', 'create', 'name=imgflow-vm-7', 'dev=/dev/zvol/tank/imgflow/volumes/vm-7'],
      ['targetcli', '/iscsi', 'create', IQN],
      ['targetcli', `/iscsi/${IQN}/tpg1/luns`, 'create', '/backstores/block/imgflow-vm-7'],
      ['targetcli', `/iscsi/${IQN}/tpg1/acls`, 'create', NODE],
      ['targetcli', 'saveconfig'],
    ]);
    expect(exported).toEqual({
      kind: 'lio',
      volume: 'vm-7',
      target: IQN,
      url: `iscsi://10.20.0.5/${IQN}/0`,
      devicePath: '/dev/zvol/tank/imgflow/volumes/vm-7',
      initiators: [NODE],
    });
    expect(await lio.list()).toEqual([exported]);

    calls.length = 0;
    expect(
      await lio.export({ volume: 'vm-7', devicePath: '/dev/zvol/tank/imgflow/volumes/vm-7', initiator: NODE }),
    ).toEqual(exported);
    expect(calls).toEqual([['targetcli', 'saveconfig']]);
  });

  it('uses a fileio backstore for a disk file, and moves the ACL to a new initiator', async () => {
    const configfs = tempDir('imgflow-configfs-');
    const { run, calls } = fakeTargetcli(configfs);
    const lio = createLioExport({ run, nas: 'nas1', portal: '10.20.0.5', configfs, persist: false });
    await lio.export({ volume: 'vm-7', devicePath: '/tank/imgflow/volumes/vm-7/disk.raw', initiator: NODE });
    expect(calls[0]).toEqual([
      'targetcli',
      '/backstores/fileio',
      'create',
      'name=imgflow-vm-7',
      'file_or_dev=/tank/imgflow/volumes/vm-7/disk.raw',
    ]);
    calls.length = 0;
    await lio.export({
      volume: 'vm-7',
      devicePath: '/tank/imgflow/volumes/vm-7/disk.raw',
      initiator: 'iqn.2026-01.org.imgflow:cn043',
    });
    expect(calls).toEqual([
      ['targetcli', `/iscsi/${IQN}/tpg1/acls`, 'create', 'iqn.2026-01.org.imgflow:cn043'],
      ['targetcli', `/iscsi/${IQN}/tpg1/acls`, 'delete', NODE],
    ]);
  });

  it('unexport deletes the target, then the backstore; the second time issues nothing', async () => {
    const configfs = tempDir('imgflow-configfs-');
    const { run, calls } = fakeTargetcli(configfs);
    const lio = createLioExport({ run, nas: 'nas1', portal: '10.20.0.5', configfs });
    await lio.export({ volume: 'vm-7', devicePath: '/dev/zvol/tank/imgflow/volumes/vm-7', initiator: NODE });
    calls.length = 0;
    await lio.unexport('vm-7');
    expect(calls).toEqual([
      ['targetcli', '/iscsi', 'delete', IQN],
      ['targetcli', '/backstores/block', 'delete', 'imgflow-vm-7'],
      ['targetcli', 'saveconfig'],
    ]);
    expect(fs.readdirSync(path.join(configfs, 'iscsi'))).toEqual([]);
    calls.length = 0;
    await lio.unexport('vm-7');
    expect(calls).toEqual([]);
    expect(await lio.find('vm-7')).toBeUndefined();
  });

  it('refuses an initiator that is not one IQN', async () => {
    const { run, calls } = fakeTargetcli(tempDir('imgflow-configfs-'));
    const lio = createLioExport({ run, nas: 'nas1', portal: '10.20.0.5', configfs: '/nonexistent' });
    await expect(
      lio.export({ volume: 'vm-7', devicePath: '/dev/zvol/x', initiator: 'iqn.2026-01.org.imgflow:a b' }),
    ).rejects.toThrow(/initiator/);
    expect(calls).toEqual([]);
  });
});

describe('kernel iSCSI attach through iscsiadm', () => {
  const IQN = 'iqn.2026-01.org.imgflow:nas1.vm-7';
  const URL = `iscsi://10.20.0.5/${IQN}/1`;
  const session = `Target: ${IQN} (non-flash)
	Current Portal: 10.20.0.5:3260,1
	Persistent Portal: 10.20.0.5:3260,1
		SID: 5
		iSCSI Connection State: LOGGED IN
		iSCSI Session State: LOGGED_IN
		Internal iscsid Session State: NO CHANGE
		************************
		Attached SCSI devices:
		************************
		Host Number: 9	State: running
		scsi9 Channel 00 Id 0 Lun: 0
		scsi9 Channel 00 Id 0 Lun: 1
			Attached scsi disk sde		State: running
`;

  /** iscsiadm with one target: no session until login, and the disk only on the second look after it. */
  function fakeIscsiadm() {
    let loggedIn = false;
    let looksAfterLogin = 0;
    return recordingRun((argv) => {
      if (argv[0] === 'blockdev') return `${10 * GiB}\n`;
      if (argv.includes('--login')) loggedIn = true;
      if (argv.includes('--logout')) loggedIn = false;
      if (argv[2] === 'session') {
        if (!loggedIn) return { exitCode: 21, stderr: 'iscsiadm: No active sessions.' };
        return ++looksAfterLogin === 1 ? session.replace(/\t+Attached scsi disk.*\n/, '') : session;
      }
      return '';
    });
  }

  it('discovers, logs in, waits for the disk and reads its size', async () => {
    const { run, calls } = fakeIscsiadm();
    const kernel = createIscsiKernelAttach({ run, pollMs: 1 });
    expect(await kernel.attach({ volume: 'vm-7', url: URL })).toEqual({
      kind: 'iscsi-kernel',
      volume: 'vm-7',
      device: '/dev/sde',
      sizeBytes: 10 * GiB,
    });
    expect(calls).toEqual([
      ['iscsiadm', '-m', 'session', '-P', '3'],
      ['iscsiadm', '-m', 'discovery', '-t', 'sendtargets', '-p', '10.20.0.5:3260'],
      ['iscsiadm', '-m', 'node', '-T', IQN, '-p', '10.20.0.5:3260', '--login'],
      ['iscsiadm', '-m', 'session', '-P', '3'],
      ['iscsiadm', '-m', 'session', '-P', '3'],
      ['blockdev', '--getsize64', '/dev/sde'],
    ]);

    calls.length = 0;
    await kernel.attach({ volume: 'vm-7', url: URL });
    expect(calls.filter((argv) => argv.includes('--login'))).toEqual([]);
    expect(await kernel.isAttached({ volume: 'vm-7', url: URL })).toBe(true);
  });

  it('logs out and deletes the node record; detaching again only deletes the (absent) record', async () => {
    const { run, calls } = fakeIscsiadm();
    const kernel = createIscsiKernelAttach({ run, pollMs: 1 });
    await kernel.attach({ volume: 'vm-7', url: URL });
    calls.length = 0;
    await kernel.detach({ volume: 'vm-7', url: URL });
    expect(calls).toEqual([
      ['iscsiadm', '-m', 'session', '-P', '3'],
      ['iscsiadm', '-m', 'node', '-T', IQN, '-p', '10.20.0.5:3260', '--logout'],
      ['iscsiadm', '-m', 'node', '-T', IQN, '-p', '10.20.0.5:3260', '-o', 'delete'],
    ]);
    calls.length = 0;
    await kernel.detach({ volume: 'vm-7', url: URL });
    expect(calls.map((argv) => argv.at(-1))).toEqual(['3', 'delete']);
    expect(await kernel.isAttached({ volume: 'vm-7', url: URL })).toBe(false);
  });

  it('gives up when the disk never appears', async () => {
    const { run } = recordingRun((argv) =>
      argv[2] === 'session' ? session.replace(/\t+Attached scsi disk.*\n/, '') : '',
    );
    const kernel = createIscsiKernelAttach({ run, pollMs: 1, deviceTimeoutMs: 20 });
    await expect(kernel.attach({ volume: 'vm-7', url: URL })).rejects.toThrow(/no disk for LUN 1/);
  });
});

describe('tgt target ids', () => {
  it('reads the target listing once for a fresh export and answers with what it made', async () => {
    const { run, calls } = recordingRun(() => '');
    const tgt = createTgtExport({ run, nas: 'nas1', portal: '127.0.0.1' });
    const exported = await tgt.export({
      volume: 'vm-7',
      devicePath: '/tank/v/disk.raw',
      initiator: 'iqn.2026-01.org.imgflow:cn042',
    });
    expect(calls.map((argv) => argv[4])).toEqual(['show', 'new', 'new', 'bind']);
    expect(exported).toEqual({
      kind: 'tgt',
      volume: 'vm-7',
      target: 'iqn.2026-01.org.imgflow:nas1.vm-7',
      url: 'iscsi://127.0.0.1/iqn.2026-01.org.imgflow:nas1.vm-7/1',
      devicePath: '/tank/v/disk.raw',
      initiators: ['iqn.2026-01.org.imgflow:cn042'],
    });
  });

  it("chooses its exports' target ids one at a time, so exports at once do not clash", async () => {
    const targets = new Map<string, string>();
    const { run, calls } = recordingRun((argv) => {
      const option = (name: string) => argv[argv.indexOf(name) + 1]!;
      if (argv.includes('show')) return [...targets].map(([tid, iqn]) => `Target ${tid}: ${iqn}\n`).join('');
      if (argv.includes('new') && argv.includes('target')) {
        if (targets.has(option('--tid'))) return { exitCode: 22, stderr: 'tgtadm: this target already exists' };
        targets.set(option('--tid'), option('-T'));
      }
      return '';
    });
    const tgt = createTgtExport({ run, nas: 'nas1', portal: '127.0.0.1' });
    const volumes = Array.from({ length: 8 }, (_, i) => `vm-${i}`);
    const exported = await Promise.all(
      volumes.map((volume) =>
        tgt.export({ volume, devicePath: `/tank/${volume}/disk.raw`, initiator: 'iqn.2026-01.org.imgflow:cn042' }),
      ),
    );
    expect(exported.map((e) => e.target)).toEqual(volumes.map((v) => `iqn.2026-01.org.imgflow:nas1.${v}`));
    expect(calls.filter((argv) => argv.includes('new') && argv.includes('target'))).toHaveLength(8);
    expect(new Set(targets.keys()).size).toBe(8);
  });

  it('takes the next free id when a concurrent export took the one it chose', async () => {
    const targets = new Map<string, string>();
    const { run, calls } = recordingRun((argv) => {
      const option = (name: string) => argv[argv.indexOf(name) + 1]!;
      if (argv.includes('show')) return [...targets].map(([tid, iqn]) => `Target ${tid}: ${iqn}\n`).join('');
      if (argv.includes('new') && argv.includes('target')) {
        // Another export takes id 1 just before this one asks for it.
        if (!targets.has('1')) {
          targets.set('1', 'iqn.2026-01.org.imgflow:nas1.vm-other');
          return { exitCode: 22, stderr: 'tgtadm: this target already exists' };
        }
        targets.set(option('--tid'), option('-T'));
      }
      return '';
    });
    const tgt = createTgtExport({ run, nas: 'nas1', portal: '127.0.0.1' });
    await tgt.export({ volume: 'vm-7', devicePath: '/tank/v/disk.raw', initiator: 'iqn.2026-01.org.imgflow:cn042' });
    expect(calls.filter((argv) => argv.includes('show'))).toHaveLength(2);
    expect(calls.filter((argv) => argv.includes('new') && argv.includes('target'))).toEqual([
      [
        'tgtadm',
        '--lld',
        'iscsi',
        '--op',
        'new',
        '--mode',
        'target',
        '--tid',
        '1',
        '-T',
        'iqn.2026-01.org.imgflow:nas1.vm-7',
      ],
      [
        'tgtadm',
        '--lld',
        'iscsi',
        '--op',
        'new',
        '--mode',
        'target',
        '--tid',
        '2',
        '-T',
        'iqn.2026-01.org.imgflow:nas1.vm-7',
      ],
    ]);
  });
});
