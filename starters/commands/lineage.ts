/**
 * `imgflow tag|tags|promote|gate|rollback|channels|test-result|history|revoke|gc|remove|pack|clone|diff`: changes
 * to an image's lineage, each a validated update (a bad request is refused before anything is
 * recorded), and what changed between two of its versions.
 */
import type { Client } from '@temporalio/client';
import type { Command } from 'commander';
import type { VersionDiff } from '../../activities/nas/diff.js';
import { checkPackKind, checkReason, checkTag, type VersionRecord } from '../../common/lineage.js';
import { checkOptionalText, checkText } from '../../common/limits.js';
import { checkImageName, checkInt, checkName, InputError } from '../../common/names.js';
import { WORKFLOW_QUEUE } from '../../common/queues.js';
import { diffWorkflow } from '../../workflows/diff.js';
import { checkChannel } from '../../common/lineage.js';
import { gateUpdate, gcUpdate, packUpdate, promoteUpdate, registerVersionUpdate, removeUpdate, revokeUpdate, rollbackUpdate, tagUpdate, testResultUpdate, type GcResult } from '../../workflows/lineage/messages.js';
import type { NewVersion } from '../../common/lineage.js';
import { configFrom, connectClient, currentUser, type GlobalFlags } from '../context.js';
import { describeLineage, fullVersion, lineageHandle, lineageHistory, parseImageRef, resolveVersion, storedVersion, updateLineage, volumesOf } from '../lineage-client.js';
import { formatPairs, formatTable, humanBytes, printJson } from '../output.js';

/** A command on one image: checks what was asked before anything connects, then runs with a client. */
type Action<O> = (image: string, opts: O) => (client: Client) => Promise<unknown>;

/** Connects, runs the action against one image and prints what it returns (a table or JSON). */
function onImage<O>(action: Action<O>, show: (result: never) => string) {
  return async (ref: string, opts: O, cmd: Command) => {
    const flags = cmd.optsWithGlobals<GlobalFlags>();
    const { image } = parseImageRef(ref);
    const run = action(image, opts);
    const { client, connection } = await connectClient(configFrom(flags));
    try {
      const result = await run(client);
      if (flags.json) printJson(result);
      else process.stdout.write(`${show(result as never)}\n`);
    } finally {
      await connection.close();
    }
  };
}

/** A version whose manifests are still stored: they went with a removed version's files. */
async function withManifests(client: Client, image: string, ref: string): Promise<VersionRecord> {
  const v = await storedVersion(client, image, ref);
  if (v.removed) throw new InputError('version', `a stored version (${v.id} was removed by ${v.removed.by}: ${v.removed.reason})`, v.id);
  // Only removed versions become stubs.
  return v as VersionRecord;
}

async function diff(client: Client, image: string, a: string, b: string): Promise<VersionDiff> {
  const [from, to] = [await withManifests(client, image, a), await withManifests(client, image, b)];
  const host = from.artifacts[0]!.host;
  if (to.artifacts[0]!.host !== host) throw new InputError('version', `versions stored on one NAS (${from.id} is on ${host}, ${to.id} on ${to.artifacts[0]!.host})`, to.id);
  const side = (v: VersionRecord) => ({ id: v.id, bytes: v.bytes, manifests: v.manifests });
  return client.workflow.execute(diffWorkflow, {
    taskQueue: WORKFLOW_QUEUE,
    workflowId: `diff-${image}-${from.id}-${to.id}-${Date.now().toString(36)}`,
    args: [{ image, host, from: side(from), to: side(to) }],
    staticSummary: `Diff of ${image} ${from.id} -> ${to.id}`,
  });
}

function showDiff(d: VersionDiff): string {
  const rows = [
    ...d.packages.added.map((p) => ({ change: '+', kind: 'package', name: p.name, from: '', to: p.version })),
    ...d.packages.removed.map((p) => ({ change: '-', kind: 'package', name: p.name, from: p.version, to: '' })),
    ...d.packages.changed.map((p) => ({ change: '~', kind: 'package', name: p.name, from: p.from, to: p.to })),
    ...d.files.added.map((f) => ({ change: '+', kind: 'file', name: f, from: '', to: '' })),
    ...d.files.removed.map((f) => ({ change: '-', kind: 'file', name: f, from: '', to: '' })),
    ...d.files.changed.map((f) => ({ change: '~', kind: 'file', name: f, from: '', to: '' })),
  ];
  const c = d.files.counts;
  const sign = d.bytes.delta < 0 ? '-' : '+';
  return [
    ...(rows.length ? [formatTable(rows, ['change', 'kind', 'name', 'from', 'to']), ''] : []),
    `${d.from} -> ${d.to}: packages +${d.packages.added.length} -${d.packages.removed.length} ~${d.packages.changed.length}, files +${c.added} -${c.removed} ~${c.changed}`,
    `size ${humanBytes(d.bytes.from)} -> ${humanBytes(d.bytes.to)} (${sign}${humanBytes(Math.abs(d.bytes.delta))})`,
  ].join('\n');
}

/** A copy of a version's record as the first version of a new image, noting where it came from. */
function cloneRecord(v: VersionRecord, image: string, by: string): NewVersion {
  const copyable = ({ id: _id, revoked: _r, removed: _m, ...rest }: VersionRecord) => rest;
  return { ...copyable(v), by, message: `clone of ${image}:${v.id}`, origin: { image, version: v.id }, provenance: { ...v.provenance, source: `clone of ${image}:${v.id} (${v.provenance.source})` } };
}

const showGc = (r: GcResult) =>
  `${formatTable([...r.removed.map((v) => ({ version: v, action: r.dryRun ? 'would remove' : 'removed', why: '' })), ...r.kept.map((k) => ({ version: k.version, action: 'keep', why: k.why.join(', ') }))], ['version', 'action', 'why'])}${r.dryRun ? '' : `\n${r.files} files deleted`}`;

export function registerLineage(program: Command): void {
  const pairs = (r: object) => formatPairs(Object.entries(r));
  const table = (columns: string[]) => (rows: Record<string, unknown>[]) => formatTable(rows, columns);

  program
    .command('tag')
    .description('name a version (default: the newest) with an immutable tag (default: <date>-RELEASE-by-<user>)')
    .argument('<image>', 'the image')
    .option('--version <v>', 'the version to tag')
    .option('--name <tag>', 'the tag name')
    .action(
      onImage<{ version?: string; name?: string }>(
        (image, o) => {
          const input = { by: currentUser(), ...(o.version !== undefined ? { version: checkName('--version', o.version) } : {}), ...(o.name !== undefined ? { name: checkTag('--name', o.name) } : {}) };
          return (client) => lineageHandle(client, image).executeUpdate(tagUpdate, { args: [input] });
        },
        pairs,
      ),
    );

  program
    .command('tags')
    .description("list an image's tags")
    .argument('<image>', 'the image')
    .action(
      onImage(
        (image) => async (client) => Object.entries((await describeLineage(client, image)).tags).map(([name, t]) => ({ tag: name, ...t })),
        table(['tag', 'version', 'at', 'by']),
      ),
    );

  program
    .command('promote')
    .description('point a channel at a tagged version (gated channels need a passed test result, or --force --reason)')
    .argument('<image>', 'the image')
    .requiredOption('--tag <tag>', 'the tag to promote')
    .requiredOption('--to <channel>', 'the channel (test, prod, ...)')
    .option('--force', 'promote without a passed test result')
    .option('--reason <text>', 'why (required with --force)')
    .action(
      onImage<{ tag: string; to: string; force?: boolean; reason?: string }>((image, o) => {
        const reason = o.force ? checkReason('--reason', o.reason) : checkOptionalText('--reason', o.reason, 'reason');
        const input = { by: currentUser(), tag: checkTag('--tag', o.tag), channel: checkChannel('--to', o.to), ...(o.force ? { force: true } : {}), ...(reason ? { reason } : {}) };
        return (client) => lineageHandle(client, image).executeUpdate(promoteUpdate, { args: [input] });
      }, pairs),
    );

  program
    .command('gate')
    .description('set the channels whose promotions need a passed test result (prod when an image starts)')
    .argument('<image>', 'the image')
    .option('--channels <list>', 'comma-separated channel names, e.g. staging,prod')
    .option('--none', 'no channel is gated')
    .action(
      onImage<{ channels?: string; none?: boolean }>((image, o) => {
        if ((o.channels === undefined) === !o.none) throw new InputError('--channels/--none', 'exactly one of them', o.channels);
        const channels = o.none ? [] : o.channels!.split(',').map((c) => checkChannel('--channels', c.trim()));
        const input = { by: currentUser(), channels };
        return (client) => lineageHandle(client, image).executeUpdate(gateUpdate, { args: [input] });
      }, (gated: string[]) => `gated: ${gated.join(', ') || 'none'}`),
    );

  program
    .command('rollback')
    .description('move a channel back to its previous entry')
    .argument('<image>', 'the image')
    .requiredOption('--channel <channel>', 'the channel')
    .option('--reason <text>', 'why')
    .action(
      onImage<{ channel: string; reason?: string }>(
        (image, o) => {
          const input = { by: currentUser(), channel: checkChannel('--channel', o.channel), ...(o.reason !== undefined ? { reason: checkReason('--reason', o.reason) } : {}) };
          return (client) => lineageHandle(client, image).executeUpdate(rollbackUpdate, { args: [input] });
        },
        pairs,
      ),
    );

  program
    .command('channels')
    .description("show an image's channels: current version and how many entries their history has")
    .argument('<image>', 'the image')
    .action(
      onImage(
        (image) => async (client) => {
          const { channels, gated } = await describeLineage(client, image);
          // Gated channels nothing was promoted to yet are listed too: they are part of the policy.
          const names = [...new Set([...Object.keys(channels), ...gated])];
          return names.map((name) => ({ channel: name, gated: gated.includes(name) ? 'yes' : 'no', ...channels[name]?.current, entries: channels[name]?.entries ?? 0 }));
        },
        table(['channel', 'gated', 'tag', 'version', 'action', 'at', 'by', 'reason', 'entries']),
      ),
    );

  program
    .command('test-result')
    .description('record whether a tag passed its test (other systems can send the testResult signal instead)')
    .argument('<image>', 'the image')
    .requiredOption('--tag <tag>', 'the tag that was tested')
    .option('--passed', 'the test passed')
    .option('--failed', 'the test failed')
    .option('--note <text>', 'what was tested')
    .action(
      onImage<{ tag: string; passed?: boolean; failed?: boolean; note?: string }>((image, o) => {
        if (Boolean(o.passed) === Boolean(o.failed)) throw new InputError('--passed/--failed', 'exactly one of them', undefined);
        const input = { by: currentUser(), tag: checkTag('--tag', o.tag), passed: Boolean(o.passed), ...(o.note !== undefined ? { note: checkText('--note', o.note, 'note') } : {}) };
        return (client) => lineageHandle(client, image).executeUpdate(testResultUpdate, { args: [input] });
      }, pairs),
    );

  program
    .command('history')
    .description("an image's history, oldest first: who changed what, when and why (archived entries included)")
    .argument('<image>', 'the image')
    .option('--last <n>', 'only the newest N entries')
    .action(
      onImage<{ last?: string }>((image, o) => {
        const last = o.last === undefined ? undefined : checkInt('--last', o.last, 1, Number.MAX_SAFE_INTEGER);
        return (client) => lineageHistory(client, image, last);
      }, table(['seq', 'at', 'by', 'op', 'detail'])),
    );

  program
    .command('revoke')
    .description('revoke a version: it can no longer be tagged, promoted or cloned, and says why')
    .argument('<image>', 'the image')
    .requiredOption('--version <v>', 'the version')
    .requiredOption('--reason <text>', 'why')
    .action(
      onImage<{ version: string; reason: string }>(
        (image, o) => {
          const input = { by: currentUser(), version: checkName('--version', o.version), reason: checkReason('--reason', o.reason) };
          return (client) => lineageHandle(client, image).executeUpdate(revokeUpdate, { args: [input] });
        },
        ({ id, revoked }: { id: string; revoked: object }) => pairs({ version: id, ...revoked }),
      ),
    );

  program
    .command('diff')
    .description('what changed between two versions (or tags): packages, files and size')
    .argument('<image>', 'the image')
    .argument('<from>', 'a version or tag')
    .argument('<to>', 'a version or tag')
    .action(async (ref: string, a: string, b: string, _o: unknown, cmd: Command) => onImage((image) => (client) => diff(client, image, a, b), showDiff)(ref, {}, cmd));

  program
    .command('gc')
    .description('remove versions retention does not keep: the newest N and every version a tag, channel, pack or volume refers to')
    .argument('<image>', 'the image')
    .option('--keep <n>', 'how many of the newest versions to keep')
    .option('--dry-run', 'only say what would be removed')
    .action(
      onImage<{ keep?: string; dryRun?: boolean }>((image, o) => {
        const input = { by: currentUser(), ...(o.keep !== undefined ? { keep: checkInt('--keep', o.keep, 1, 10_000) } : {}), ...(o.dryRun ? { dryRun: true } : {}) };
        return async (client) => lineageHandle(client, image).executeUpdate(gcUpdate, { args: [{ ...input, volumes: await volumesOf(client, image) }] });
      }, showGc),
    );

  program
    .command('remove')
    .description('delete a version (or, with no version, every version) from the store, unless something still refers to it')
    .argument('<image>', '<image>[:<version or tag>]')
    .action(async (ref: string, _o: unknown, cmd: Command) => {
      const which = parseImageRef(ref).ref;
      await onImage((image) => async (client) => {
        const version = which ? resolveVersion(await describeLineage(client, image), image, which) : undefined;
        return lineageHandle(client, image).executeUpdate(removeUpdate, { args: [{ by: currentUser(), ...(version ? { version } : {}), volumes: await volumesOf(client, image) }] });
      }, pairs)(ref, {}, cmd);
    });

  program
    .command('pack')
    .description('publish a tagged version under a name (default: the image), the previous one moved aside: a netboot boot directory (root.squashfs, kernel, initrd) or a read-only VM base that volumes are cloned from')
    .argument('<image>', 'the image')
    .requiredOption('--tag <tag>', 'the tag to pack')
    .option('--as <name>', 'the name to publish under (a test name tries a tag before production)')
    .option('--kind <kind>', 'netboot or vm (default: netboot for a version with a squashfs artifact, else vm)')
    .option('--max-root-bytes <n>', 'refuse a root image larger than this')
    .action(
      onImage<{ tag: string; as?: string; kind?: string; maxRootBytes?: string }>(
        (image, o) => {
          const input = {
            by: currentUser(),
            tag: checkTag('--tag', o.tag),
            ...(o.as !== undefined ? { as: checkName('--as', o.as) } : {}),
            ...(o.kind !== undefined ? { kind: checkPackKind('--kind', o.kind) } : {}),
            ...(o.maxRootBytes !== undefined ? { maxRootBytes: checkInt('--max-root-bytes', o.maxRootBytes, 1, Number.MAX_SAFE_INTEGER) } : {}),
          };
          return (client) => lineageHandle(client, image).executeUpdate(packUpdate, { args: [input] });
        },
        pairs,
      ),
    );

  program
    .command('clone')
    .description('start a new image whose first version is a copy of a version of this one (default: the newest)')
    .argument('<image>', 'the image to clone from')
    .argument('<new-image>', 'the new image')
    .option('--version <v>', 'the version or tag to clone')
    .action(async (ref: string, target: string, o: { version?: string }, cmd: Command) =>
      onImage((image) => {
        const newImage = checkImageName('new-image', target);
        const originTag = checkTag('new-image', `cloned-to-${newImage}`);
        return async (client) => {
          // A refused clone leaves nothing behind: the origin is tagged only once the new image is known to be new.
          const existing = await describeLineage(client, newImage).catch(() => undefined);
          if (existing?.versions.length) throw new InputError('new-image', `an image that does not exist yet (${newImage} has ${existing.versions.length} versions)`, newImage);
          const v = await fullVersion(client, image, o.version);
          if (v.revoked) throw new InputError('version', `a version that is not revoked (${v.id} was revoked by ${v.revoked.by}: ${v.revoked.reason}) to clone`, v.id);
          if (v.removed) throw new InputError('version', `a version whose files are still stored (${v.id} was removed by ${v.removed.by}: ${v.removed.reason}) to clone`, v.id);
          const by = currentUser();
          // The clone shares the version's stored files: a tag on the origin keeps retention off them.
          await lineageHandle(client, image).executeUpdate(tagUpdate, { args: [{ by, version: v.id, name: originTag }] });
          return updateLineage(client, newImage, registerVersionUpdate, cloneRecord(v, image, by));
        };
      }, (r: VersionRecord) => pairs({ image: target, version: r.id, origin: `${r.origin?.image}:${r.origin?.version}` }))(ref, {}, cmd),
    );
}
