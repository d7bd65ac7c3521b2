/** The drivers' pure parts: output parsers, names, snapshot choice. */
import { describe, expect, it } from 'vitest';
import { parseSessions, withPort } from '../../activities/drivers/attach/iscsi-kernel.js';
import { freeTid, parseTgtShow } from '../../activities/drivers/export/tgt.js';
import {
  checkIqn,
  iscsiUrl,
  nbdUrl,
  parseIscsiUrl,
  parseNbdUrl,
  snapshotName,
  targetIqn,
  volumeOfTarget,
} from '../../activities/drivers/naming.js';
import { newestCommon, viaSsh } from '../../activities/drivers/storage/replication.js';
import { snapshotsToPrune } from '../../activities/drivers/storage/snapshots.js';
import { checkDataset } from '../../activities/drivers/storage/zfs.js';

/** Two sessions as open-iscsi prints them: the second with its disk on LUN 0 and LUN 1. */
const SESSION_P3 = `iSCSI Transport Class version 2.0-870
version 2.1.8
Target: iqn.2026-01.org.imgflow:nas1.vm-7 (non-flash)
	Current Portal: 10.20.0.5:3260,1
	Persistent Portal: 10.20.0.5:3260,1
		**********
		Interface:
		**********
		Iface Name: default
		Iface Transport: tcp
		Iface Initiatorname: iqn.2026-01.org.imgflow:cn042
		Iface IPaddress: 10.20.1.42
		Iface HWaddress: default
		Iface Netdev: default
		SID: 3
		iSCSI Connection State: LOGGED IN
		iSCSI Session State: LOGGED_IN
		Internal iscsid Session State: NO CHANGE
		*********
		Timeouts:
		*********
		Recovery Timeout: 120
		Target Reset Timeout: 30
		LUN reset Timeout: 30
		Abort Timeout: 15
		*****
		CHAP:
		*****
		username: <empty>
		password: ********
		username_in: <empty>
		password_in: ********
		************************
		Negotiated iSCSI params:
		************************
		HeaderDigest: None
		DataDigest: None
		MaxRecvDataSegmentLength: 262144
		MaxXmitDataSegmentLength: 262144
		FirstBurstLength: 65536
		MaxBurstLength: 262144
		ImmediateData: Yes
		InitialR2T: Yes
		MaxOutstandingR2T: 1
		************************
		Attached SCSI devices:
		************************
		Host Number: 7	State: running
		scsi7 Channel 00 Id 0 Lun: 0
		scsi7 Channel 00 Id 0 Lun: 1
			Attached scsi disk sdc		State: running
Target: iqn.2026-01.org.imgflow:nas2.vm-9 (non-flash)
	Current Portal: [fd00::5]:3260,1
	Persistent Portal: [fd00::5]:3260,1
		**********
		Interface:
		**********
		Iface Name: default
		Iface Transport: tcp
		Iface Initiatorname: iqn.2026-01.org.imgflow:cn042
		SID: 4
		iSCSI Connection State: TRANSPORT WAIT
		iSCSI Session State: FAILED
		Internal iscsid Session State: REOPEN
		************************
		Attached SCSI devices:
		************************
		Host Number: 8	State: running
		scsi8 Channel 00 Id 0 Lun: 0
			Attached scsi disk sdd		State: transport-offline
`;

const TGT_SHOW = `Target 1: iqn.2026-01.org.imgflow:nas1.vm-7
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
        I_T nexus: 2
            Initiator: iqn.2026-01.org.imgflow:cn042 alias: cn042
            Connection: 0
                IP Address: 10.20.1.42
    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     00010000
            SCSI SN: beaf10
            Size: 0 MB, Block size: 1
            Backing store type: null
            Backing store path: None
            Backing store flags: 
        LUN: 1
            Type: disk
            SCSI ID: IET     00010001
            SCSI SN: beaf11
            Size: 10737 MB, Block size: 512
            Backing store type: rdwr
            Backing store path: /tank/imgflow/volumes/vm-7/disk.raw
            Backing store flags: 
    Account information:
    ACL information:
        iqn.2026-01.org.imgflow:cn042
Target 3: iqn.2001-04.com.example:other
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            Backing store path: None
    Account information:
    ACL information:
        ALL
`;

describe('iscsiadm -m session -P 3', () => {
  it('finds each target, its portal, state and the disk of each LUN', () => {
    const [first, second] = parseSessions(SESSION_P3);
    expect(first).toEqual({
      iqn: 'iqn.2026-01.org.imgflow:nas1.vm-7',
      portal: '10.20.0.5:3260',
      sid: 3,
      loggedIn: true,
      disks: new Map([[1, 'sdc']]),
    });
    expect(second).toEqual({
      iqn: 'iqn.2026-01.org.imgflow:nas2.vm-9',
      portal: '[fd00::5]:3260',
      sid: 4,
      loggedIn: false,
      disks: new Map([[0, 'sdd']]),
    });
  });

  it('reads nothing from no output', () => {
    expect(parseSessions('')).toEqual([]);
  });

  it('adds the default port where a portal has none', () => {
    expect(withPort('10.20.0.5')).toBe('10.20.0.5:3260');
    expect(withPort('nas1:3261')).toBe('nas1:3261');
    expect(withPort('[fd00::5]')).toBe('[fd00::5]:3260');
  });
});

describe('tgtadm --op show --mode target', () => {
  it('reads targets, backing paths, ACLs and sessions', () => {
    const [ours, other] = parseTgtShow(TGT_SHOW);
    expect(ours).toEqual({
      tid: 1,
      iqn: 'iqn.2026-01.org.imgflow:nas1.vm-7',
      luns: new Map([[1, '/tank/imgflow/volumes/vm-7/disk.raw']]),
      acls: ['iqn.2026-01.org.imgflow:cn042'],
      sessions: 1,
    });
    expect(other).toMatchObject({ tid: 3, acls: ['ALL'], sessions: 0, luns: new Map() });
  });

  it('picks the lowest free target id', () => {
    expect(freeTid(parseTgtShow(TGT_SHOW))).toBe(2);
    expect(freeTid([])).toBe(1);
  });
});

describe('names', () => {
  it('builds target names from the NAS and volume, and reads the volume back', () => {
    const iqn = targetIqn('iqn.2026-01.org.imgflow', 'nas1', 'vm-7');
    expect(iqn).toBe('iqn.2026-01.org.imgflow:nas1.vm-7');
    expect(volumeOfTarget('iqn.2026-01.org.imgflow', 'nas1', iqn)).toBe('vm-7');
    expect(volumeOfTarget('iqn.2026-01.org.imgflow', 'nas2', iqn)).toBeUndefined();
    expect(volumeOfTarget('iqn.2026-01.org.imgflow', 'nas1', 'iqn.2026-01.org.imgflow:nas1.../x')).toBeUndefined();
  });

  it('refuses volume, host and initiator names that are not plain', () => {
    expect(() => targetIqn('iqn.2026-01.org.imgflow', 'nas1', 'vm_7')).toThrow(/without "_"/);
    expect(() => targetIqn('iqn.2026-01.org.imgflow', 'nas1', '../etc')).toThrow(/volume/);
    expect(() => targetIqn('iqn.2026-01.org.imgflow', 'NAS 1', 'vm-7')).toThrow(/nas/);
    for (const bad of ['ALL', 'iqn.2026-01.org.x:a b', 'iqn.2026-01.org.x:$(id)', '-I', 'iqn.2026-01.Org.x:y']) {
      expect(() => checkIqn('initiator', bad)).toThrow(/initiator/);
    }
    expect(checkIqn('initiator', 'eui.02004567a425678d')).toBe('eui.02004567a425678d');
  });

  it('formats and parses iscsi:// and nbd:// URLs', () => {
    const url = iscsiUrl('10.20.0.5:3260', 'iqn.2026-01.org.imgflow:nas1.vm-7', 1);
    expect(url).toBe('iscsi://10.20.0.5:3260/iqn.2026-01.org.imgflow:nas1.vm-7/1');
    expect(parseIscsiUrl(url)).toEqual({ portal: '10.20.0.5:3260', iqn: 'iqn.2026-01.org.imgflow:nas1.vm-7', lun: 1 });
    expect(() => parseIscsiUrl('iscsi://user%pw@host/iqn.2026-01.org.x:y/1')).toThrow(/url/);
    expect(parseNbdUrl(nbdUrl('127.0.0.1', 10809, 'vm-7'))).toEqual({
      address: '127.0.0.1',
      port: 10809,
      exportName: 'vm-7',
    });
    expect(() => parseNbdUrl('nbd://127.0.0.1:10809/..')).toThrow(/export/);
  });

  it('checks dataset names', () => {
    expect(checkDataset('root', 'tank/imgflow')).toBe('tank/imgflow');
    for (const bad of ['/tank', 'tank//x', 'tank/../x', 'tank/x y', '-tank'])
      expect(() => checkDataset('root', bad)).toThrow(/root/);
  });
});

describe('snapshots', () => {
  it('names snapshots by time so that they sort by name', () => {
    expect(snapshotName(new Date('2026-11-21T05:40:00.123Z'))).toBe('imgflow-20261121t054000123z');
    expect(snapshotName(new Date('2026-01-01T00:00:00Z')) < snapshotName(new Date('2026-01-01T00:00:01Z'))).toBe(true);
  });

  it('prunes only imgflow snapshots beyond the newest three, never the base snapshot', () => {
    const names = [
      'hourly-1',
      'imgflow-base',
      'imgflow-20260104t0z',
      'imgflow-20260101t0z',
      'imgflow-20260103t0z',
      'imgflow-20260102t0z',
      'manual',
    ];
    expect(snapshotsToPrune(names)).toEqual(['imgflow-20260101t0z']);
    expect(snapshotsToPrune(names, 1)).toEqual(['imgflow-20260101t0z', 'imgflow-20260102t0z', 'imgflow-20260103t0z']);
    expect(snapshotsToPrune(['imgflow-a', 'manual'])).toEqual([]);
    expect(() => snapshotsToPrune(names, 0)).toThrow(/keep/);
  });

  it('finds the newest snapshot two copies share', () => {
    expect(newestCommon(['imgflow-1', 'imgflow-2', 'imgflow-3'], ['imgflow-1', 'imgflow-2'])).toBe('imgflow-2');
    expect(newestCommon(['imgflow-3'], ['imgflow-1'])).toBeUndefined();
  });
});

describe('remote commands', () => {
  it('wraps argv in ssh and refuses words a remote shell would interpret', () => {
    const remote = viaSsh('cn042');
    expect(remote(['zfs', 'send', '-i', 'tank/v@imgflow-1', 'tank/v@imgflow-2'])).toEqual([
      'ssh',
      '-o',
      'BatchMode=yes',
      '--',
      'cn042',
      'zfs',
      'send',
      '-i',
      'tank/v@imgflow-1',
      'tank/v@imgflow-2',
    ]);
    expect(() => remote(['zfs', 'send', 'tank/v@x;reboot'])).toThrow(/remote argv/);
    expect(() => viaSsh('cn042 reboot')(['true'])).toThrow(/remote argv/);
  });
});
