/**
 * Real debootstrap builds through `imgflow build` against a builder worker process, and the
 * faults a build must survive: the builder SIGKILLed during package installation (a new builder
 * finishes the build without redoing earlier phases), a cancel mid-build (nothing left behind)
 * and an unreachable mirror (bounded retries, then a clear failure). One home for the file, so
 * later builds start from the bootstrap the first one cached.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { WorkflowHandle } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { mountsUnder } from '../../activities/builder/rootfs.js';
import { createNasActivities } from '../../activities/nas/index.js';
import { createRunner } from '../../activities/runner.js';
import type { VersionRecord } from '../../common/lineage.js';
import { loadConfig } from '../../lib/config.js';
import { historyQuery, lineageWorkflowId } from '../../workflows/lineage/messages.js';
import { imgflowAsync, spawnImgflow } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { alive, killGroup, processesRootedIn } from '../support/processes.js';
import { NAMESPACE, testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';
import { until } from '../support/wait.js';

const BUILD_TIMEOUT = 12 * 60_000;
/** The server's state of a pending activity a worker has taken. */
const PENDING_ACTIVITY_STARTED = temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_STARTED;

/** Attempts of each activity type that ran to its end, from the workflow's history. */
async function attemptsByType(handle: WorkflowHandle): Promise<Record<string, number[]>> {
  const events = (await handle.fetchHistory()).events ?? [];
  const typeOf = new Map(
    events
      .filter((e) => e.activityTaskScheduledEventAttributes)
      .map((e) => [String(e.eventId), e.activityTaskScheduledEventAttributes!.activityType!.name!]),
  );
  const attempts: Record<string, number[]> = {};
  for (const e of events) {
    const started = e.activityTaskStartedEventAttributes;
    if (started) (attempts[typeOf.get(String(started.scheduledEventId))!] ??= []).push(started.attempt ?? 0);
  }
  return attempts;
}

describe('debootstrap builds through the CLI, and their faults', () => {
  requireTools('debootstrap', 'unshare', 'tar', 'du', 'mount', 'umount', 'mkfs.ext4', 'qemu-img', 'debugfs', 'rsync');
  const dir = tempDir('imgflow-faults-');
  const home = path.join(dir, 'home');
  const host = uniqueQueue('nas');
  const config = loadConfig({ home, host }, {});
  const run = createRunner(memoryLogger().logger);
  const builds = path.join(home, 'builder', 'x86_64', 'builds');
  const children: ChildProcess[] = [];
  // Registered after tempDir, so it runs first: no builder, command or mount outlives the file.
  afterAll(async () => {
    children.forEach((c) => killGroup(c.pid));
    for (const mount of await mountsUnder(dir)) await run(['umount', '-l', mount]);
  });

  const globals = ['--address', inject('temporalAddress'), '--namespace', NAMESPACE, '--home', home];
  const cli = (...args: string[]) => imgflowAsync([...globals, ...args], { IMGFLOW_USER: 'alice' }, BUILD_TIMEOUT);
  const withOrchestration = <T>(fn: () => Promise<T>) =>
    withWorkers(
      { workflowQueue: 'imgflow', activities: { [`nas.${host}`]: createNasActivities({ run, config }) } },
      fn,
    );

  /** A real builder worker process, named like the store's host so artifacts are copied locally. */
  function startBuilder(): ChildProcess {
    const child = spawnImgflow([...globals, 'worker', '--role', 'builder', '--host', host, '--metrics', ''], {
      IMGFLOW_LOG_PRETTY: '0',
    });
    // Drained so a chatty worker never blocks on a full pipe.
    child.stdout!.resume();
    child.stderr!.resume();
    children.push(child);
    return child;
  }

  function recipe(image: string, mirror?: string): string {
    const file = path.join(dir, `${image}.yaml`);
    const source = `  debootstrap:\n    suite: bookworm\n    variant: minbase\n${mirror ? `    mirror: ${mirror}\n` : ''}`;
    fs.writeFileSync(
      file,
      `image: ${image}\narch: x86_64\nos: debian-12\nsource:\n${source}packages: [less]\noutputs: [qcow2]\n`,
    );
    return file;
  }

  /** Starts a build without waiting and returns its workflow once the lineage has started it. */
  async function startBuild(image: string): Promise<WorkflowHandle> {
    const ticket = await cli('--json', 'build', recipe(image), '--store', host, '--no-wait');
    expect(ticket.status, ticket.stderr).toBe(0);
    const { buildId } = JSON.parse(ticket.stdout) as { buildId: string };
    const { client } = await testClient();
    const handle = client.workflow.getHandle(buildId);
    await until(`${buildId} to start`, () => handle.describe());
    return handle;
  }

  /** Resolves once a builder has taken the activity (its attempt is running). */
  async function activityRunning(handle: WorkflowHandle, type: string): Promise<void> {
    await until(
      `${type} to start`,
      async () => {
        const pending = (await handle.describe()).raw.pendingActivities ?? [];
        return pending.some((a) => a.activityType?.name === type && a.state === PENDING_ACTIVITY_STARTED);
      },
      10 * 60_000,
    );
  }

  /** What a debugfs request prints about the ext4 inside a stored qcow2. */
  async function debugfsInArtifact(qcow2: string, request: string): Promise<string> {
    const raw = path.join(dir, 'check.raw');
    await run(['qemu-img', 'convert', '-O', 'raw', qcow2, raw]);
    try {
      return (await run(['debugfs', '-R', request, raw])).stdout;
    } finally {
      fs.rmSync(raw, { force: true });
    }
  }

  async function installedInArtifact(qcow2: string): Promise<number> {
    const status = await debugfsInArtifact(qcow2, 'cat /var/lib/dpkg/status');
    return status.split('\n').filter((line) => line === 'Status: install ok installed').length;
  }

  it(
    "builds a real minbase image whose report's package counts match its dpkg database",
    async () => {
      startBuilder();
      await withOrchestration(async () => {
        const image = uniqueQueue('minbase');
        const built = await cli('--json', 'build', recipe(image), '-m', 'minbase with less', '--store', host);
        expect(built.status, built.stderr).toBe(0);
        const version = JSON.parse(built.stdout) as VersionRecord;
        const stored = await installedInArtifact(version.artifacts[0]!.path);
        const measured = JSON.parse(fs.readFileSync(version.manifests.packages.path, 'utf8')) as { name: string }[];
        expect(stored).toBeGreaterThan(50);
        expect(measured).toHaveLength(stored);
        expect(measured.map((p) => p.name)).toContain('less');
        expect(version.packages).toBe(stored);

        const rows = Object.fromEntries(version.report.map((r) => [r.phase, r]));
        expect(version.report.map((r) => r.phase)).toEqual(['bootstrap', 'packages', 'prepare', 'pack']);
        expect(rows.packages!.packages).toBe(stored);
        expect(rows.pack!.packages).toBe(stored);
        expect(rows.bootstrap!.packages).toBeLessThan(stored);

        const report = await cli('report', `${image}:v1`);
        expect(report.status).toBe(0);
        expect(report.stdout).toMatch(
          new RegExp(`^packages\\s+\\S+\\s+\\+${stored - rows.bootstrap!.packages}\\s+.*\\s${stored}\\s`, 'm'),
        );
        expect(report.stdout).toMatch(new RegExp(`^TOTAL\\s+\\S+\\s+\\+${stored}\\s+\\S+ \\S+\\s+${stored}\\s`, 'm'));
        expect(fs.readdirSync(builds)).toEqual([]);
      });
    },
    BUILD_TIMEOUT,
  );

  it(
    'a builder killed during package installation: a new builder finishes without redoing the bootstrap',
    async () => {
      const first = children.at(-1)!;
      await withOrchestration(async () => {
        const image = uniqueQueue('killed');
        const handle = await startBuild(image);
        await activityRunning(handle, 'installPackages');
        const work = path.join(builds, handle.workflowId.replace(/^build-/, ''));
        // Kill it while apt runs in the image (isolated there: the host sees no mount of it).
        await until('apt to run in the image', () => processesRootedIn(path.join(work, 'root')).length > 0, 60_000);
        expect(await mountsUnder(work)).toEqual([]);
        await new Promise((r) => setTimeout(r, 1000));
        process.kill(first.pid!, 'SIGKILL');
        await until('the killed builder to be gone', () => !alive(first.pid!));

        startBuilder();
        await handle.result();
        const attempts = await attemptsByType(handle);
        expect(attempts.bootstrap).toEqual([1]);
        expect(attempts.installPackages).toEqual([2]);
        expect(attempts.packOutputs).toEqual([1]);

        const { client } = await testClient();
        const { entries: history } = await client.workflow.getHandle(lineageWorkflowId(image)).query(historyQuery, {});
        expect(history.filter((e) => e.op === 'register').map((e) => e.detail.split(' ')[0])).toEqual(['v1']);
        const version = JSON.parse((await cli('--json', 'report', `${image}:v1`)).stdout) as VersionRecord;
        expect(version.packages).toBe(await installedInArtifact(version.artifacts[0]!.path));
        // The files apt needed only while it ran are gone, even though an attempt died with them in place.
        const sbin = await debugfsInArtifact(version.artifacts[0]!.path, 'ls /usr/sbin');
        expect(sbin).toContain('chroot');
        expect(/policy-rc\.d|imgflow-/.test(sbin), 'policy-rc.d or a temporary file left in /usr/sbin').toBe(false);
        expect(
          /imgflow-/.test(await debugfsInArtifact(version.artifacts[0]!.path, 'ls /etc')),
          'a temporary file left in /etc',
        ).toBe(false);
        expect(fs.readdirSync(builds)).toEqual([]);
        expect(await mountsUnder(home)).toEqual([]);
      });
    },
    BUILD_TIMEOUT,
  );

  it(
    'a build cancelled mid-build leaves no work directory, mount or stored file behind',
    async () => {
      await withOrchestration(async () => {
        const image = uniqueQueue('cancelled');
        const handle = await startBuild(image);
        await activityRunning(handle, 'installPackages');
        await handle.cancel();
        await expect(handle.result()).rejects.toThrow();
        // The builder learns of the cancel at its next heartbeat and ends apt; then the build is removed.
        await until('the work directory to be removed', () => fs.readdirSync(builds).length === 0, 120_000);
        await new Promise((r) => setTimeout(r, 3000));
        expect(fs.readdirSync(builds)).toEqual([]);
        expect(await mountsUnder(home)).toEqual([]);
        expect(fs.existsSync(path.join(home, 'nas', host, 'store', image))).toBe(false);
        const { client } = await testClient();
        const { entries: history } = await client.workflow.getHandle(lineageWorkflowId(image)).query(historyQuery, {});
        expect(history.map((e) => e.op)).toEqual(['build-requested', 'build-started', 'build-failed']);
      });
    },
    BUILD_TIMEOUT,
  );

  it(
    'an unreachable mirror fails the build in bounded time, after retries, with a clear message',
    async () => {
      await withOrchestration(async () => {
        const image = uniqueQueue('nomirror');
        const started = Date.now();
        const result = await cli('build', recipe(image, 'http://127.0.0.1:9/debian'), '--store', host);
        const seconds = (Date.now() - started) / 1000;
        expect(result.status).toBe(1);
        const lines = result.stderr.trim().split('\n');
        expect(lines).toHaveLength(1);
        expect(lines[0]).toMatch(
          /^imgflow: .*debootstrap .*Failed getting release file http:\/\/127\.0\.0\.1:9\/debian/,
        );
        expect(seconds).toBeLessThan(120);

        const { client } = await testClient();
        const { entries: history } = await client.workflow.getHandle(lineageWorkflowId(image)).query(historyQuery, {});
        const failed = history.find((e) => e.op === 'build-failed')!;
        expect(failed.detail).toMatch(/^build-nomirror-[0-9a-f]+-1: /);
        const attempts = await attemptsByType(client.workflow.getHandle(failed.detail.split(':')[0]!));
        expect(attempts.bootstrap).toEqual([3]);
        expect(fs.existsSync(path.join(home, 'nas', host, 'store', image))).toBe(false);
        expect(fs.readdirSync(builds)).toEqual([]);
        console.log(`unreachable mirror: failed after ${seconds.toFixed(1)} s: ${lines[0]}`);
      });
    },
    BUILD_TIMEOUT,
  );
});
