/**
 * Clone-to-compute from the command line: `map`, `unmap`, `delete-volume`, `maps`,
 * `volume-attrs`, `sync-now` and `clean`. Each volume is an entity workflow; these commands send it
 * validated updates, so bad input is refused (exit 2) before anything changes.
 */
import type { Command } from 'commander';
import { checkHost, checkInt, checkName, checkSpeed, InputError } from '../../common/names.js';
import { queues } from '../../common/queues.js';
import type { MapRequest, VolumeAttrs, VolumeView } from '../../workflows/volume/messages.js';
import { connected, currentUser, say } from '../context.js';
import { BASE_REF } from '../image-refs.js';
import { formatPairs, formatTable, printJson } from '../output.js';

const GiB = 1024 ** 3;

/** The Temporal side, loaded when a command runs (never for --help). */
const clients = async () => ({
  ...(await import('../client.js')),
  ...(await import('../volume-client.js')),
  ...(await import('../answers.js')),
});

/** A change's outcome: JSON for scripts, its message for people. */
function printChange(result: { message: string }, json: boolean | undefined): void {
  if (json) return printJson(result);
  say(result.message);
}

function printView(view: VolumeView, json: boolean | undefined): void {
  if (json) return printJson(view);
  const sync = view.sync;
  process.stdout.write(
    `${formatPairs([
      ['volume', view.volume],
      ['state', `${view.phase}${view.reason ? `: ${view.reason}` : ''}`],
      ['nas', view.nas],
      ['compute', view.computeHost],
      ['base', view.base && `${view.base.image}:${view.base.version}`],
      ['target', view.target],
      ['frequency', sync ? `${sync.frequencySeconds}s${sync.frozen ? ' (frozen)' : ''}` : 'no sync'],
      ['next sync', sync?.nextSyncAt],
      ['last sync', sync?.lastSyncAt],
      ['sync error', sync?.lastError],
      ['upload', view.speeds.upload],
      ['download', view.speeds.download],
    ])}\n`,
  );
}

export function registerVolumes(program: Command): void {
  program
    .command('map')
    .description(
      'clone a version copy-on-write on a NAS, export it to one compute host and attach it there; prints the device or URL',
    )
    .argument('<volume>', 'the volume name')
    .requiredOption('--image <ref>', BASE_REF)
    .requiredOption('--nas <nas>', 'the NAS storing the version')
    .requiredOption('--compute <host>', 'the compute host the volume is for')
    .option('--size <GB>', 'grow the clone to this many GiB')
    .option('--sync', 'keep a copy on the compute host and pull it back to the NAS periodically')
    .option('--frequency <seconds>', 'seconds between pulls in sync mode')
    .option('--wait <seconds>', 'fail when a host takes no step within this long', '60')
    .action(
      async (
        volume: string,
        opts: {
          image: string;
          nas: string;
          compute: string;
          size?: string;
          sync?: boolean;
          frequency?: string;
          wait: string;
        },
        cmd: Command,
      ) => {
        checkName('volume', volume);
        const nas = checkHost('--nas', opts.nas);
        const computeHost = checkHost('--compute', opts.compute);
        const sizeGiB = opts.size === undefined ? undefined : checkInt('--size', opts.size, 1, 65_536);
        const waitSeconds = checkInt('--wait', opts.wait, 1, 3600);
        const frequencySeconds =
          opts.frequency === undefined ? undefined : checkInt('--frequency', opts.frequency, 10, 86_400);
        if (frequencySeconds !== undefined && !opts.sync)
          throw new InputError('--frequency', 'to be given with --sync (only sync mode pulls)', opts.frequency);
        await connected(
          cmd,
          clients,
          async ({ c: { baseVersion, hasWorker, mapVolume }, client, flags, config: { namespace } }) => {
            const base = await baseVersion(client, opts.image, nas);
            if (!(await hasWorker(client, namespace, queues.nas(nas))))
              throw new InputError('--nas', `a NAS whose worker is running (nothing polls ${queues.nas(nas)})`, nas);
            if (!(await hasWorker(client, namespace, queues.compute(computeHost))))
              throw new InputError(
                '--compute',
                `a compute host whose worker is running (nothing polls ${queues.compute(computeHost)})`,
                computeHost,
              );
            const request: MapRequest = {
              by: currentUser(),
              base,
              nas,
              computeHost,
              waitSeconds,
              ...(sizeGiB ? { sizeBytes: sizeGiB * GiB } : {}),
              ...(opts.sync ? { sync: true } : {}),
              ...(frequencySeconds ? { frequencySeconds } : {}),
            };
            const result = await mapVolume(client, volume, request);
            if (flags.json) return printJson(result);
            if (!result.changed) say(`${volume} was already mapped so`);
            process.stdout.write(`${result.target}\n`);
          },
        );
      },
    );

  program
    .command('unmap')
    .description('detach a volume from its compute host and end its export; the clone is kept')
    .argument('<volume>', 'the volume name')
    .option('--wait <seconds>', 'how long the device may stay in use before the unmap fails', '60')
    .action(async (volume: string, opts: { wait: string }, cmd: Command) => {
      checkName('volume', volume);
      const waitSeconds = checkInt('--wait', opts.wait, 0, 86_400);
      await connected(cmd, clients, async ({ c: { unmapVolume }, client, flags }) =>
        printChange(await unmapVolume(client, volume, { by: currentUser(), waitSeconds }), flags.json),
      );
    });

  program
    .command('delete-volume')
    .description('destroy an unmapped volume and its snapshots (refused while mapped)')
    .argument('<volume>', 'the volume name')
    .action(async (volume: string, _opts: unknown, cmd: Command) => {
      checkName('volume', volume);
      await connected(cmd, clients, async ({ c: { deleteVolume }, client, flags }) =>
        printChange(await deleteVolume(client, volume, { by: currentUser() }), flags.json),
      );
    });

  program
    .command('maps')
    .description('the storage map: every volume, its NAS, compute host, base, target, state and syncs')
    .option('--nas <nas>', 'only volumes on this NAS')
    .option('--compute <host>', 'only volumes on this compute host')
    .action(async (opts: { nas?: string; compute?: string }, cmd: Command) => {
      await connected(cmd, clients, async ({ c: { listVolumes }, client, flags }) => {
        const views = await listVolumes(client, opts);
        if (flags.json) return printJson(views);
        const rows = views.map((v) => ({
          volume: v.volume,
          nas: v.nas,
          pool: v.storage?.root,
          compute: v.computeHost,
          base: v.base && `${v.base.image}:${v.base.version}`,
          target: v.target,
          state: `${v.phase}${v.sync?.lastError ? ` (sync failed: ${v.sync.lastError})` : ''}${v.phase !== 'mapped' && v.reason ? ` (${v.reason})` : ''}`,
          since: v.since,
          next: v.sync?.frozen ? 'frozen' : v.sync?.nextSyncAt,
          locked: v.locked ? 'yes' : 'no',
        }));
        process.stdout.write(
          `${formatTable(rows, ['volume', 'nas', 'pool', 'compute', 'base', 'target', 'state', 'since', 'next', 'locked'], ['VOLUME', 'NAS', 'POOL', 'COMPUTE', 'BASE', 'TARGET', 'STATE', 'SINCE', 'NEXT SYNC', 'LOCKED'])}\n`,
        );
      });
    });

  program
    .command('volume-attrs')
    .description("show a volume's attributes, or set its sync frequency, speeds and freeze")
    .argument('<volume>', 'the volume name')
    .option('--frequency <seconds>', 'seconds between pulls')
    .option('--upload-speed <bytes/s>', 'rate limit of sync pulls from the node back to the NAS')
    .option('--download-speed <bytes/s>', "rate limit of the node's copy from the NAS when a sync-mode map begins")
    .option('--freeze', 'skip scheduled pulls')
    .option('--thaw', 'resume scheduled pulls')
    .action(
      async (
        volume: string,
        opts: { frequency?: string; uploadSpeed?: string; downloadSpeed?: string; freeze?: boolean; thaw?: boolean },
        cmd: Command,
      ) => {
        checkName('volume', volume);
        if (opts.freeze && opts.thaw) throw new InputError('--freeze', 'either --freeze or --thaw', true);
        const attrs: VolumeAttrs = {
          by: currentUser(),
          ...(opts.frequency !== undefined
            ? { frequencySeconds: checkInt('--frequency', opts.frequency, 10, 86_400) }
            : {}),
          ...(opts.uploadSpeed !== undefined ? { uploadSpeed: checkSpeed('--upload-speed', opts.uploadSpeed) } : {}),
          ...(opts.downloadSpeed !== undefined
            ? { downloadSpeed: checkSpeed('--download-speed', opts.downloadSpeed) }
            : {}),
          ...(opts.freeze ? { frozen: true } : opts.thaw ? { frozen: false } : {}),
        };
        await connected(cmd, clients, async ({ c: { volumeAttrs }, client, flags }) =>
          printView(await volumeAttrs(client, volume, attrs), flags.json),
        );
      },
    );

  program
    .command('sync-now')
    .description("pull a sync-mode volume's writes back to its NAS now")
    .argument('<volume>', 'the volume name')
    .action(async (volume: string, _opts: unknown, cmd: Command) => {
      checkName('volume', volume);
      await connected(cmd, clients, async ({ c: { syncVolumeNow }, client, flags }) => {
        const result = await syncVolumeNow(client, volume, { by: currentUser() });
        if (flags.json) return printJson(result);
        process.stdout.write(`${result.snapshot}${result.sent ? '' : ' (already there)'} in ${result.durationMs} ms\n`);
      });
    });

  program
    .command('clean')
    .description('repair a volume whose compute host is gone: end its export and mark it unmapped (recorded)')
    .argument('<volume>', 'the volume name')
    .option('--force', 'required: the compute host is not asked to let go')
    .requiredOption('--reason <text>', 'why, for the history')
    .action(async (volume: string, opts: { force?: boolean; reason: string }, cmd: Command) => {
      checkName('volume', volume);
      if (!opts.force)
        throw new InputError(
          '--force',
          '--force: clean skips the compute host and may leave it holding the volume',
          false,
        );
      await connected(cmd, clients, async ({ c: { cleanVolume }, client, flags }) =>
        printChange(
          await cleanVolume(client, volume, { by: currentUser(), force: true, reason: opts.reason }),
          flags.json,
        ),
      );
    });
}
