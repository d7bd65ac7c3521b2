/**
 * Workers killed outright (SIGKILL) in the middle of their work, with nobody retrying it: the next
 * worker of the role on the host removes what they left, before it takes work. A NAS worker
 * killed while it imports a base leaves a partial file of the base's full size; a builder killed
 * while it unpacks a root leaves a `.root.partial.<pid>` tree; a builder killed while a hook runs
 * leaves the hook running (in its own namespaces, so nothing is mounted on the host), and a mount
 * left in a build tree the way builds without namespaces left their /proc is unmounted.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { createBuilderActivities } from '../../activities/builder/index.js';
import { mountsUnder } from '../../activities/builder/rootfs.js';
import { createNasActivities } from '../../activities/nas/index.js';
import { createRunner } from '../../activities/runner.js';
import { queues } from '../../common/queues.js';
import { loadConfig } from '../../lib/config.js';
import { findOnPath } from '../../lib/which.js';
import { demoWorkflow } from '../../workflows/demo.js';
import { logLines, spawnWorker, imgflowAt } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { tinyImageTarball } from '../support/images.js';
import { memoryLogger } from '../support/logger.js';
import { alive, killGroup, processesRootedIn } from '../support/processes.js';
import { testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';
import { until } from '../support/wait.js';

/** A shim for `tool` that does the real work, logs its pid, then hangs: the kill lands after the bytes are written. */
function hangingShim(dir: string, tool: string): { dir: string; calls: string } {
  const calls = path.join(dir, `${tool}-calls`);
  fs.writeFileSync(path.join(dir, tool), `#!/bin/sh\n${findOnPath(tool)} "$@"\necho $$ >> ${calls}\nexec sleep 600\n`, {
    mode: 0o755,
  });
  return { dir, calls };
}

/** Partial files and trees (`.<name>.partial.<pid>`) anywhere under `dir`, image roots excluded. */
function partialsUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .filter((p) => /(^|\/)\.[^/]+\.partial\.\d+/.test(p) && !/\.partial\.\d+[^/]*\//.test(p))
    .sort();
}

const pidOf = (calls: string) => Number(fs.readFileSync(calls, 'utf8').trim().split('\n')[0]);

describe('the next worker removes what a killed worker left', () => {
  requireTools('qemu-img', 'qemu-io', 'rsync', 'tar', 'unshare', 'mount', 'umount');
  const dir = tempDir();
  const children: ChildProcess[] = [];
  // Registered after tempDir, so it runs first: no worker, command or mount outlives the test.
  afterAll(async () => {
    children.forEach((c) => killGroup(c.pid));
    for (const mount of await mountsUnder(dir)) await run(['umount', '-l', mount]);
  });
  const run = createRunner(memoryLogger().logger);

  function worker(home: string, role: string, host: string, shims?: string) {
    const child = spawnWorker({ home, role, host, env: shims ? { PATH: `${shims}:${process.env.PATH}` } : {} });
    child.stdout!.resume();
    children.push(child);
    return { child, logs: logLines(child) };
  }
  const said = (logs: () => Record<string, unknown>[], msg: string) => logs().filter((l) => l.msg === msg);

  it('a NAS worker killed while importing a base: its full-size partial is removed by the next NAS worker', async () => {
    const home = path.join(dir, 'nas-home');
    const nasHost = uniqueQueue('nas');
    const config = loadConfig({ home, host: nasHost }, {});
    const nasDir = path.join(home, 'nas', nasHost);
    const rsync = hangingShim(fs.mkdtempSync(path.join(dir, 'shims-')), 'rsync');
    const { client, connection } = await testClient();

    const workflowQueue = uniqueQueue('wf');
    await withWorkers(
      { workflowQueue, activities: { [queues.builder('x86_64')]: createBuilderActivities({ run, config }) } },
      async () => {
        const first = worker(home, 'nas', nasHost, rsync.dir);
        const handle = await client.workflow.start(demoWorkflow, {
          taskQueue: workflowQueue,
          workflowId: uniqueQueue('import'),
          args: [{ image: 'left-base', volume: 'vm-1', arch: 'x86_64', nas: nasHost, sizeMiB: 16 }],
        });
        await until('the base to be copied into its partial file', () => fs.existsSync(rsync.calls));
        process.kill(first.child.pid!, 'SIGKILL');
        await handle.terminate('nobody retries the import');
      },
    );
    await connection.close();

    const [partial] = partialsUnder(nasDir);
    expect(partialsUnder(nasDir)).toEqual([
      expect.stringMatching(/^store\/left-base\/[^/]+\/\.left-base-[^/]+\.qcow2\.partial\.\d+$/),
    ]);
    const version = partial!.split('/')[2]!;
    const base = path.join(home, 'builder', 'x86_64', 'left-base', `${version}.qcow2`);
    expect(fs.statSync(path.join(nasDir, partial!)).size).toBe(fs.statSync(base).size);
    // A partial whose writer lives (this test process) is never taken for a dead one's.
    const live = path.join(nasDir, 'store', 'left-base', version, `.other.qcow2.partial.${process.pid}`);
    fs.writeFileSync(live, 'in progress\n');

    const next = worker(home, 'nas', nasHost);
    await until(
      'the next NAS worker to remove the partial',
      () => said(next.logs, 'removed a partial file left by a worker that died').length > 0,
    );
    expect(said(next.logs, 'removed a partial file left by a worker that died').map((l) => l.path)).toEqual([
      path.join(nasDir, partial!),
    ]);
    expect(partialsUnder(nasDir)).toEqual([`store/left-base/${version}/.other.qcow2.partial.${process.pid}`]);
    expect(alive(pidOf(rsync.calls))).toBe(false);
  });

  it('builders killed mid-unpack and mid-hook: the next builder removes the partial root, ends the hook and unmounts what was left', async () => {
    const home = path.join(dir, 'builder-home');
    const host = uniqueQueue('nas');
    const config = loadConfig({ home, host }, {});
    const builds = path.join(home, 'builder', 'x86_64', 'builds');
    const tar = hangingShim(fs.mkdtempSync(path.join(dir, 'shims-')), 'tar');
    const tarball = await tinyImageTarball(run, dir);
    const { client, connection } = await testClient();
    const cli = imgflowAt(home);

    function recipe(image: string): string {
      const file = path.join(dir, `${image}.yaml`);
      const hooks = `hooks:\n  image:\n    - name: sleeper\n      run: [/usr/bin/sleep, '600']\n`;
      fs.writeFileSync(
        file,
        `image: ${image}\narch: x86_64\nos: debian-12\nsource:\n  tarball:\n    path: ${tarball.file}\n    sha256: ${tarball.sha256}\n${hooks}outputs: [qcow2]\n`,
      );
      return file;
    }
    async function startBuild(image: string): Promise<string> {
      const ticket = await cli('--json', 'build', recipe(image), '--store', host, '--no-wait');
      expect(ticket.status, ticket.stderr).toBe(0);
      return (JSON.parse(ticket.stdout) as { buildId: string }).buildId;
    }
    const workOf = (buildId: string) => path.join(builds, buildId.replace(/^build-/, ''));

    await withWorkers(
      { workflowQueue: 'imgflow', activities: { [`nas.${host}`]: createNasActivities({ run, config }) } },
      async () => {
        // Killed while it unpacks: the whole tree is in `.root.partial.<pid>`, not yet renamed.
        const first = worker(home, 'builder', host, tar.dir);
        const unpacking = await startBuild(uniqueQueue('unpacked'));
        await until('the root to be unpacked into its partial tree', () => fs.existsSync(tar.calls));
        process.kill(first.child.pid!, 'SIGKILL');
        await client.workflow.getHandle(unpacking).terminate('nobody retries the unpack');
        const [partialRoot] = partialsUnder(builds);
        expect(partialsUnder(builds)).toEqual([expect.stringMatching(/^[^/]+\/\.root\.partial\.\d+$/)]);
        expect(fs.existsSync(path.join(builds, partialRoot!, 'bin', 'sh'))).toBe(true);

        const second = worker(home, 'builder', host);
        await until(
          'the next builder to remove the partial root',
          () => said(second.logs, 'removed a partial file left by a worker that died').length > 0,
        );
        expect(partialsUnder(builds)).toEqual([]);
        expect(alive(pidOf(tar.calls))).toBe(false);

        // Killed while a hook runs: the hook goes on, isolated; the host sees no mount of it.
        const hooked = await startBuild(uniqueQueue('hooked'));
        const root = path.join(workOf(hooked), 'root');
        const hook = await until('the hook to run in the image', () => processesRootedIn(root).at(0), 120_000);
        process.kill(second.child.pid!, 'SIGKILL');
        await client.workflow.getHandle(hooked).terminate('nobody retries the hook');
        expect(await mountsUnder(home)).toEqual([]);
        expect(alive(hook)).toBe(true);
        // The /proc a build without namespaces left mounted in its tree.
        await run(['mount', '-t', 'proc', 'proc', path.join(root, 'proc')]);
        expect(await mountsUnder(home)).toEqual([path.join(root, 'proc')]);

        const third = worker(home, 'builder', host);
        await until(
          'the next builder to unmount it',
          () => said(third.logs, 'unmounted what a worker that died left mounted').length > 0,
        );
        expect(await mountsUnder(home)).toEqual([]);
        await until("the dead builder's hook to be ended", () => processesRootedIn(root).length === 0);
        expect(
          said(third.logs, 'ended a command left running by a worker that died').map((l) =>
            (l.argv as string[]).at(-1),
          ),
        ).toEqual(['600']);
      },
    );
    await connection.close();
  });
});
