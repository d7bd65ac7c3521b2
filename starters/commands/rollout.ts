/**
 * `imgflow rollout <image> --tag T --channel C --waves 10%,50%,100% [--pause S | --gate test-result]`:
 * a staged rollout of a channel's packs and volumes to a tag, followed wave by wave;
 * `imgflow rollout status|cancel <image> --channel C`; and `imgflow rollback <image> --channel C
 * --rollout` (registered with the lineage's rollback) takes the whole rollout back.
 */
import type { Client } from '@temporalio/client';
import type { Command } from 'commander';
import { checkReason, checkTag, checkChannel } from '../../common/lineage.js';
import { checkInt, InputError } from '../../common/names.js';
import { DEFAULT_GATE_SECONDS, MAX_WAIT_SECONDS, parseWaves, type Between } from '../../common/rollout.js';
import type { RolloutProgress } from '../../workflows/rollout/messages.js';
import { parseImageRef } from '../image-refs.js';
import { connected, currentUser, type GlobalFlags } from '../context.js';
import { printJson } from '../output.js';

const clients = async () => ({ ...(await import('../client.js')), ...(await import('../rollout-client.js')) });

interface RolloutOptions {
  tag?: string;
  channel: string;
  waves?: string;
  pause?: string;
  gate?: string;
  gateTimeout?: string;
  force?: boolean;
  reason?: string;
  wait: boolean;
}

const ACTIONS = ['status', 'cancel'] as const;

/** What is between waves, from --pause or --gate (not both). */
function betweenOf(o: RolloutOptions): Between {
  if (o.pause !== undefined && o.gate !== undefined)
    throw new InputError('--pause/--gate', 'one of them, not both', o.gate);
  if (o.pause !== undefined)
    return { kind: 'pause', seconds: checkInt('--pause', Number(o.pause), 1, MAX_WAIT_SECONDS) };
  if (o.gate !== undefined) {
    if (o.gate !== 'test-result') throw new InputError('--gate', 'test-result', o.gate);
    const timeout = o.gateTimeout === undefined ? DEFAULT_GATE_SECONDS : Number(o.gateTimeout);
    return { kind: 'gate', timeoutSeconds: checkInt('--gate-timeout', timeout, 1, MAX_WAIT_SECONDS) };
  }
  if (o.gateTimeout !== undefined) throw new InputError('--gate-timeout', '--gate test-result with it', o.gateTimeout);
  return { kind: 'none' };
}

/**
 * Follows a rollout until it ends: on a terminal, its table redrawn on stderr at each change; then
 * the last progress on stdout (JSON with --json). A rollout that stopped short exits 1.
 */
export async function follow(
  client: Client,
  image: string,
  channel: string,
  flags: GlobalFlags,
  goal: 'done' | 'rolled-back',
): Promise<void> {
  const { waitForEnd, formatRollout, outcomeError } = await import('../rollout-client.js');
  let drawn = 0;
  const draw = (p: RolloutProgress) => {
    if (!process.stderr.isTTY) return;
    const text = formatRollout(p);
    process.stderr.write(`${drawn ? `\x1b[${drawn}F\x1b[J` : ''}${text}\n`);
    drawn = text.split('\n').length;
  };
  const p = await waitForEnd(client, image, channel, draw);
  if (drawn) process.stderr.write(`\x1b[${drawn}F\x1b[J`);
  await show(p, flags);
  const failed = outcomeError(p, goal);
  if (failed) throw failed;
}

async function show(p: RolloutProgress, flags: GlobalFlags): Promise<void> {
  if (flags.json) return printJson(p);
  const { formatRollout } = await import('../rollout-client.js');
  process.stdout.write(`${formatRollout(p)}\n`);
}

/** `imgflow rollback <image> --channel C --rollout`: every member the rollout moved goes back, newest first, and the channel. */
export async function rollbackRolloutCommand(
  image: string,
  o: { channel: string; reason?: string },
  cmd: Command,
): Promise<void> {
  const channel = checkChannel('--channel', o.channel);
  const reason = o.reason === undefined ? undefined : checkReason('--reason', o.reason);
  await connected(cmd, clients, async ({ c, client, flags }) => {
    await c.rollbackRollout(client, image, channel, { by: currentUser(), ...(reason ? { reason } : {}) });
    await follow(client, image, channel, flags, 'rolled-back');
  });
}

export function registerRollout(program: Command): void {
  program
    .command('rollout')
    .description(
      "move the packs and volumes of an image's channel to a tag in waves, with a pause or a test-result gate between them, then the channel; `rollout status|cancel <image> --channel C` shows or stops one",
    )
    .argument('<image-or-action>', 'the image; or status or cancel, then the image')
    .argument('[image]', 'the image, after status or cancel')
    .requiredOption('--channel <channel>', 'the channel whose packs and volumes move (test, prod, ...)')
    .option('--tag <tag>', 'the tag to move them to')
    .option('--waves <list>', 'cumulative percentages of the members moved by the end of each wave', '100%')
    .option('--pause <seconds>', 'a durable pause between waves')
    .option('--gate <kind>', 'test-result: wait for a passed test result of the tag recorded after each wave')
    .option('--gate-timeout <seconds>', `how long a gate waits (default ${DEFAULT_GATE_SECONDS})`)
    .option('--force', 'promote a gated channel at the end without a passed test result')
    .option('--reason <text>', 'why (required with --force)')
    .option('--no-wait', 'start it, print its progress and return')
    .action(async (first: string, second: string | undefined, o: RolloutOptions, cmd: Command) => {
      const action = second !== undefined ? first : undefined;
      if (action !== undefined && !(ACTIONS as readonly string[]).includes(action))
        throw new InputError('rollout', `an image, or ${ACTIONS.join(' or ')} and an image`, action);
      const { image } = parseImageRef(second ?? first);
      const channel = checkChannel('--channel', o.channel);
      if (action === 'status')
        return connected(cmd, clients, async ({ c, client, flags }) =>
          show(await c.rolloutProgress(client, image, channel), flags),
        );
      if (action === 'cancel')
        return connected(cmd, clients, async ({ c, client, flags }) => {
          const p = await c.cancelRollout(client, image, channel);
          await show(p, flags);
        });
      if (o.tag === undefined) throw new InputError('--tag', 'the tag to roll out');
      const ask = {
        by: currentUser(),
        image,
        channel,
        tag: checkTag('--tag', o.tag),
        waves: parseWaves('--waves', o.waves),
        between: betweenOf(o),
        ...(o.force ? { force: true, reason: checkReason('--reason', o.reason) } : {}),
        ...(!o.force && o.reason !== undefined ? { reason: checkReason('--reason', o.reason) } : {}),
      };
      await connected(cmd, clients, async ({ c, client, flags }) => {
        await c.startRollout(client, await c.planRequest(client, ask));
        if (!o.wait) return show(await c.rolloutProgress(client, image, channel), flags);
        await follow(client, image, channel, flags, 'done');
      });
    });
}
