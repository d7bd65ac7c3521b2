/**
 * Staged rollouts through the real CLI, on real VM packs and real volumes (qcow2 clones, local
 * attach), with real workers: a rollout in two waves with a pause moves the channel's packs
 * (re-packed, the previous directory moved aside) and stages its volumes' next map (the mapped
 * disk untouched; the next map sets the old clone aside and clones the tag), then promotes the
 * channel; the whole rollout rolled back; a gate whose test result fails stops the rollout after
 * its first wave; a cancelled rollout stops where it is; each rolled back, newest move first.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRolloutActivities } from '../../activities/control/rollout.js';
import { createRunner } from '../../activities/runner.js';
import type { Client } from '@temporalio/client';
import { CONTROL_QUEUE, WORKFLOW_QUEUE } from '../../common/queues.js';
import { SA } from '../../common/search-attributes.js';
import { describeLineage, packTag, promoteTag, recordTestResult, tagVersion } from '../../starters/lineage-client.js';
import { rolloutProgress } from '../../starters/rollout-client.js';
import { baseVersion, mapVolume, volumeAttrs } from '../../starters/volume-client.js';
import type { RolloutProgress } from '../../workflows/rollout/messages.js';
import { imgflowAt } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { saveHistory } from '../support/histories.js';
import { memoryLogger } from '../support/logger.js';
import { testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';
import { storeVersion } from '../support/versions.js';
import { localVolumeHosts } from '../support/volume-hosts.js';
import { until } from '../support/wait.js';

describe('rollout', () => {
  requireTools('qemu-img', 'qemu-io');
  const dir = tempDir('imgflow-rollout-');
  const home = path.join(dir, 'home');
  const nasHost = uniqueQueue('nas');
  const nodeHost = uniqueQueue('node');
  const image = `ro${nasHost.slice(-6)}`;
  const run = createRunner(memoryLogger().logger);
  const activities = { ...localVolumeHosts({ home, nasHost, nodeHost, run, packs: true }) };
  const cli = imgflowAt(home);
  const ok = async (...args: string[]) => {
    const r = await cli(...args);
    expect([r.status, r.stderr], args.join(' ')).toEqual([0, '']);
    return r.stdout;
  };
  const json = async <T>(...args: string[]) => JSON.parse(await ok(...args, '--json')) as T;
  const volumes = [`${image}-v1`, `${image}-v2`, `${image}-v3`];
  const packs = [`${image}-a`, `${image}-b`];
  const map = (volume: string, ref: string) =>
    ok('map', volume, '--image', `${image}${ref}`, '--nas', nasHost, '--compute', nodeHost);
  let client: Client;
  const channel = async () => {
    const c = (await describeLineage(client, image)).channels.test?.current;
    return `${c?.tag} ${c?.version} ${c?.action}`;
  };
  const packTags = async () =>
    Object.fromEntries(Object.entries((await describeLineage(client, image)).packs).map(([n, p]) => [n, p.tag]));
  const volume = async (name: string) => {
    const v = await volumeAttrs(client, name, { by: 'alice' });
    return `${v.phase} ${v.base?.version}${v.next ? ` next ${v.next.version}` : ''}`;
  };
  let last = Date.now();
  /** How long each part took, for the report. */
  const lap = (what: string) => {
    process.stderr.write(`rollout test: ${what} in ${((Date.now() - last) / 1000).toFixed(1)} s\n`);
    last = Date.now();
  };
  const states = (p: RolloutProgress) =>
    p.waves.map(
      (w) => `${w.state}: ${w.members.map((m) => `${m.member.name.slice(image.length + 1)} ${m.state}`).join(', ')}`,
    );
  const status = () => rolloutProgress(client, image, 'test');
  const rollout = () => client.workflow.getHandle(`rollout-${image}@test`);

  // The workers run for the whole scenario; each part has its own time bound (the machine may be busy).
  let release: () => void = () => undefined;
  let workers: Promise<unknown> = Promise.resolve();
  let connection: { close(): Promise<void> } | undefined;
  beforeAll(async () => {
    const test = await testClient();
    client = test.client;
    connection = test.connection;
    const control = { [CONTROL_QUEUE]: createRolloutActivities() };
    await new Promise<void>((ready) => {
      workers = withWorkers(
        { workflowQueue: WORKFLOW_QUEUE, activities: { ...activities, ...control } },
        () => new Promise<void>((done) => ((release = done), ready())),
      );
    });
  }, 120_000);
  afterAll(async () => {
    release();
    await workers;
    await connection?.close();
  }, 120_000);

  it('refuses bad input in one line, and moves packs and volumes in two waves with a pause', async () => {
    for (const n of [1, 2, 3]) await storeVersion(client, run, { home, nas: nasHost, image, n });
    for (const [version, name] of [
      ['v1', 'gold'],
      ['v2', 'next'],
      ['v3', 'rc'],
    ] as const)
      await tagVersion(client, image, { by: 'alice', version, name });
    await promoteTag(client, image, { by: 'alice', tag: 'gold', channel: 'test' });
    for (const as of packs) await packTag(client, image, { by: 'alice', tag: 'gold', as, kind: 'vm' });
    // The third is chosen by tag, not by the channel: not the rollout's to move.
    for (const [name, ref] of [
      [volumes[0]!, '@test'],
      [volumes[1]!, '@test'],
      [volumes[2]!, ':gold'],
    ] as const)
      await mapVolume(client, name, {
        by: 'alice',
        base: await baseVersion(client, `${image}${ref}`, nasHost),
        nas: nasHost,
        computeHost: nodeHost,
      });
    await until('visibility to list the 3 volumes', async () => {
      const q = `${SA.kind.name} = 'volume' AND ${SA.image.name} = '${image}' AND ExecutionStatus = 'Running'`;
      return (await client.workflow.count(q)).count === 3;
    });
    lap('set-up');

    // Bad input: one line naming the field, nothing started.
    for (const [args, line] of [
      [['--waves', '50%,10%,100%'], /^imgflow: --waves: expected increasing percentages/],
      [['--pause', '5', '--gate', 'test-result'], /^imgflow: --pause\/--gate: expected one of them, not both/],
    ] as const) {
      const bad = await cli('rollout', image, '--tag', 'next', '--channel', 'test', ...args);
      expect([bad.status, bad.stderr.trim().split('\n').length, bad.stderr], args.join(' ')).toEqual([
        2,
        1,
        expect.stringMatching(line),
      ]);
    }
    const same = await cli('rollout', image, '--tag', 'gold', '--channel', 'test');
    expect([same.status, same.stderr]).toEqual([
      2,
      expect.stringMatching(/^imgflow: --tag: expected a tag of another version than test's/),
    ]);

    // 1. Two waves with a pause: packs first, then the volumes; then the channel.
    const started = Date.now();
    const done = await json<RolloutProgress>(
      'rollout',
      image,
      '--tag',
      'next',
      '--channel',
      'test',
      '--waves',
      '50%,100%',
      '--pause',
      '3',
    );
    const took = Date.now() - started;
    expect(done).toMatchObject({ phase: 'done', promoted: true, version: 'v2', channelBefore: { tag: 'gold' } });
    expect(states(done)).toEqual(['done: a moved, b moved', 'done: v1 moved, v2 moved']);
    expect(done.waves[0]!.detail).toBe('paused 3 s');
    expect(took).toBeGreaterThanOrEqual(3000);
    expect(await channel()).toBe('next v2 promote');
    expect(await packTags()).toEqual({ [packs[0]!]: 'next', [packs[1]!]: 'next' });
    // The previous boot directory of each pack is kept beside it.
    const vmDir = path.dirname(done.waves[0]!.members[0]!.detail!.split(',')[0]!.split(':')[1]!);
    expect(fs.readdirSync(vmDir).filter((n) => n.startsWith(`${packs[0]}.moved.aside.on.`))).toHaveLength(1);
    // Mapped disks are untouched: the next map of each clones v2; the tag's volume is not a member.
    expect(await volume(volumes[0]!)).toBe('mapped v1 next v2');
    expect(await volume(volumes[1]!)).toBe('mapped v1 next v2');
    expect(await volume(volumes[2]!)).toBe('mapped v1');
    const text = await ok('rollout', 'status', image, '--channel', 'test');
    expect(text.split('\n')[0]).toBe(`${image}@test -> next (v2): done; between waves: a pause of 3 s`);
    expect(text).toMatch(
      new RegExp(`1\\s+pack\\s+${packs[0]}\\s+${nasHost}\\s+gold \\(v1\\)\\s+next \\(v2\\)\\s+moved`),
    );
    expect(text).toMatch(/channel test: promoted to next/);

    // The next map of a moved volume: the old clone set aside (kept), a new clone of v2.
    expect((await cli('unmap', volumes[0]!)).status).toBe(0);
    await map(volumes[0]!, '@test');
    expect(await volume(volumes[0]!)).toBe('mapped v2');
    const aside = path.join(home, 'nas', nasHost, 'volumes', 'aside');
    expect(fs.readdirSync(aside)).toEqual([
      expect.stringMatching(new RegExp(`^${volumes[0]}\\.v1\\.[0-9-]+\\.qcow2$`)),
    ]);

    await saveHistory('rolloutWorkflow-waves', rollout());
    await saveHistory('volumeWorkflow-staged', client.workflow.getHandle(`volume-${volumes[0]}`));
    lap('a rollout in two waves with a pause, and a volume mapped again');
  }, 300_000);

  it('rolls back the whole rollout, newest move first', async () => {
    // 2. The whole rollout rolled back: the channel first, then each member, newest first.
    const back = await json<RolloutProgress>(
      'rollback',
      image,
      '--channel',
      'test',
      '--rollout',
      '--reason',
      'slow boot',
    );
    expect(back).toMatchObject({
      phase: 'rolled-back',
      rollback: { reason: 'slow boot', channel: 'test back to gold (v1)' },
    });
    expect(states(back)).toEqual(['done: a returned, b returned', 'done: v1 returned, v2 returned']);
    expect(await channel()).toBe('gold v1 rollback');
    expect(await packTags()).toEqual({ [packs[0]!]: 'gold', [packs[1]!]: 'gold' });
    // Staged only: no longer staged. Remapped already: its next map clones v1 again.
    expect(await volume(volumes[1]!)).toBe('mapped v1');
    expect(await volume(volumes[0]!)).toBe('mapped v2 next v1');
    const again = await cli('rollback', image, '--channel', 'test', '--rollout');
    expect([again.status, again.stderr]).toEqual([
      2,
      expect.stringMatching(/^imgflow: --rollout: expected a rollout not rolled back yet/),
    ]);

    await saveHistory('rolloutWorkflow-rollback', rollout());
    lap('its rollback');
  }, 300_000);

  it('stops at a gate whose test result fails', async () => {
    // 3. A gate whose test result fails: the rollout stops after the first wave; the channel stays.
    const gated = cli(
      'rollout',
      image,
      '--tag',
      'rc',
      '--channel',
      'test',
      '--waves',
      '50%,100%',
      '--gate',
      'test-result',
    );
    await until(
      'the first wave to wait at the gate',
      async () => (await status().catch(() => undefined))?.waves[0]?.state === 'waiting',
    );
    const second = await cli('rollout', image, '--tag', 'rc', '--channel', 'test');
    expect([second.status, second.stderr]).toEqual([
      2,
      expect.stringMatching(/^imgflow: --channel: expected a channel with no rollout running/),
    ]);
    await recordTestResult(client, image, { by: 'alice', tag: 'rc', passed: false, note: 'nodes do not boot' });
    const stopped = await gated;
    expect([stopped.status, stopped.stderr]).toEqual([
      1,
      expect.stringMatching(
        /^imgflow: rollout of .*@test to rc failed: gate after wave 1: the test result of rc is failed \(by alice: nodes do not boot\)\n$/,
      ),
    ]);
    const failed = await status();
    expect(states(failed)).toEqual(['failed: a moved, b moved', 'pending: v1 pending, v2 pending']);
    expect(await channel()).toBe('gold v1 rollback');
    expect(await packTags()).toEqual({ [packs[0]!]: 'rc', [packs[1]!]: 'rc' });
    await saveHistory('rolloutWorkflow-gate-failed', rollout());
    const undone = await json<RolloutProgress>('rollback', image, '--channel', 'test', '--rollout');
    expect(states(undone)).toEqual(['failed: a returned, b returned', 'pending: v1 pending, v2 pending']);
    expect(await packTags()).toEqual({ [packs[0]!]: 'gold', [packs[1]!]: 'gold' });

    lap('a gate that fails, and its rollback');
  }, 300_000);

  it('stops where it is when cancelled', async () => {
    // 4. A cancelled rollout stops where it is, in its pause; then it is rolled back.
    const paused = cli('rollout', image, '--tag', 'rc', '--channel', 'test', '--waves', '50%,100%', '--pause', '600');
    await until(
      'the first wave to pause',
      async () => (await status().catch(() => undefined))?.waves[0]?.state === 'waiting',
    );
    const cancelled = await json<RolloutProgress>('rollout', 'cancel', image, '--channel', 'test');
    expect(cancelled.phase).toBe('cancelled');
    expect(states(cancelled)).toEqual(['cancelled: a moved, b moved', 'pending: v1 pending, v2 pending']);
    expect((await paused).status).toBe(1);
    const described = await rollout().describe();
    expect(described.status.name).toBe('CANCELLED');
    await saveHistory('rolloutWorkflow-cancelled', rollout());
    const restored = await json<RolloutProgress>('rollback', image, '--channel', 'test', '--rollout');
    expect(restored.phase).toBe('rolled-back');
    expect(await packTags()).toEqual({ [packs[0]!]: 'gold', [packs[1]!]: 'gold' });
    expect(await volume(volumes[1]!)).toBe('mapped v1');

    lap('a cancel, and its rollback');
  }, 300_000);

  it('stops a running rollout to roll it back', async () => {
    // 5. A running rollout rolled back: it stops in its pause and takes its moves back.
    const running = cli('rollout', image, '--tag', 'rc', '--channel', 'test', '--waves', '50%,100%', '--pause', '600');
    await until(
      'the first wave to pause',
      async () => (await status().catch(() => undefined))?.waves[0]?.state === 'waiting',
    );
    const stop = await json<RolloutProgress>('rollback', image, '--channel', 'test', '--rollout');
    expect(stop.phase).toBe('rolled-back');
    expect(states(stop)).toEqual(['done: a returned, b returned', 'pending: v1 pending, v2 pending']);
    const ended = await running;
    expect([ended.status, ended.stderr]).toEqual([
      1,
      expect.stringMatching(/^imgflow: rollout of .*@test to rc rolled-back\n$/),
    ]);
    expect(await packTags()).toEqual({ [packs[0]!]: 'gold', [packs[1]!]: 'gold' });
    lap('a running rollout rolled back');

    // The Web UI finds the image's rollouts.
    await until('visibility to find the rollout', async () => {
      const q = `${SA.kind.name} = 'rollout' AND ${SA.image.name} = '${image}'`;
      return (await client.workflow.count(q)).count >= 1;
    });
  }, 300_000);
});
