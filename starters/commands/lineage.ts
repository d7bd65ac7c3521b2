/**
 * `imgflow describe|tag|tags|promote|gate|rollback|channels|test-result|history|revoke|gc|remove|pack|clone|diff`:
 * changes to an image's lineage, each a validated update (a bad request is refused before anything is
 * recorded); what it holds, in brief or a page at a time; and what changed between two of its versions.
 */
import type { Client } from '@temporalio/client';
import type { Command } from 'commander';
import type { VersionDiff } from '../../activities/nas/diff.js';
import type { VersionRecord } from '../../common/lineage.js';
import { checkInt, InputError } from '../../common/names.js';
import { checkPageExists, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, pageFooter, pageOptions } from '../../common/pages.js';
import type { GcResult, LineageSummary } from '../../workflows/lineage/messages.js';
import type { RevocationReport } from '../revocation-client.js';
import { connected, currentUser, say } from '../context.js';
import { parseImageRef } from '../image-refs.js';
import { formatPairs, formatTable, humanBytes, printJson } from '../output.js';

/** What the actions need, loaded when one runs (never for --help): the lineage's client and the checks of tags, channels and texts. */
const clients = async () => ({
  ...(await import('../client.js')),
  ...(await import('../lineage-client.js')),
  ...(await import('../revocation-client.js')),
  ...(await import('../../common/lineage.js')),
  ...(await import('../../common/limits.js')),
  ...(await import('../../common/names.js')),
  checkChannel: (await import('../../common/lineage.js')).checkChannel,
});
type Clients = Awaited<ReturnType<typeof clients>>;

/** A command on one image: checks what was asked before anything connects, then runs with a client. */
type Action<O> = (image: string, opts: O, c: Clients) => (client: Client) => Promise<unknown>;

/** A page of a list: JSON prints its items; a table prints them, and the footer on stderr when there are more pages. */
class Paged<T> {
  constructor(
    readonly items: T[],
    readonly footer: string | undefined,
  ) {}
}
const paged = <T>(items: T[], footer: string | undefined) => new Paged(items, footer);

/** Connects, runs the action against one image and prints what it returns (a table or JSON). */
function onImage<O>(action: Action<O>, show: (result: never) => string) {
  return async (ref: string, opts: O, cmd: Command) => {
    const { image } = parseImageRef(ref);
    const c = await clients();
    const run = action(image, opts, c);
    await connected(
      cmd,
      async () => c,
      async ({ client, flags }) => {
        const result = await run(client);
        const items = result instanceof Paged ? result.items : result;
        if (flags.json) printJson(items);
        else process.stdout.write(`${show(items as never)}\n`);
        if (result instanceof Paged && result.footer && !flags.json) say(result.footer);
      },
    );
  };
}

/** `imgflow describe`: the counts and the current state as pairs, then the newest versions and tags. */
function showSummary(s: LineageSummary): string {
  const { counts } = s;
  const channels = Object.entries(s.channels)
    .map(([name, ch]) => `${name}=${ch.current ? `${ch.current.tag} (${ch.current.version})` : '-'}`)
    .join(', ');
  const packs = Object.entries(s.packs)
    .map(([name, p]) => `${name}=${p.tag} (${p.version}, ${p.kind ?? 'netboot'} on ${p.host})`)
    .join(', ');
  return [
    formatPairs([
      ['image', s.image],
      [
        'versions',
        `${counts.versions} (${counts.stored} stored, ${counts.removed} removed, ${counts.revoked} revoked)`,
      ],
      ['tags', `${counts.tags} (${counts.tests} tested, ${counts.passed} passed)`],
      ['channels', channels || 'none'],
      ['gated', s.gated.join(', ') || 'none'],
      ['packs', packs || 'none'],
      ['volumes', counts.volumes],
      ['history', `${s.historyEntries} entries`],
      ['building', s.builds.map((b) => `${b.id} (${b.by})`).join(', ') || 'nothing'],
    ]),
    '',
    formatTable(
      s.latest.map((v) => ({
        version: v.id,
        created: v.createdAt,
        by: v.by,
        state: v.removed ? 'removed' : v.revoked ? 'revoked' : 'ok',
        message: v.message,
      })),
      ['version', 'created', 'by', 'state', 'message'],
    ),
    '',
    formatTable(
      s.latestTags.map((t) => ({ tag: t.name, version: t.version, at: t.at, by: t.by })),
      ['tag', 'version', 'at', 'by'],
    ),
  ].join('\n');
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

const showGc = (r: GcResult) =>
  `${formatTable([...r.removed.map((v) => ({ version: v, action: r.dryRun ? 'would remove' : 'removed', why: '' })), ...r.kept.map((k) => ({ version: k.version, action: 'keep', why: k.why.join(', ') }))], ['version', 'action', 'why'])}${r.dryRun ? '' : `\n${r.files} files deleted`}`;

/** A revocation for people: one line on the version, then a row for each thing it touches. */
export function showRevocation(r: RevocationReport): string {
  const subject = `${r.image}:${r.version}`;
  const head = r.alreadyRevoked
    ? `${subject} was revoked already by ${r.revoked!.by} at ${r.revoked!.at}: ${r.revoked!.reason}; the revocation changes nothing${r.clones.some((c) => c.mark !== 'already-marked') ? ' but the marks on copies' : ''}`
    : r.dryRun
      ? `${subject} would be revoked (dry run, nothing changed): ${r.reason}`
      : `${subject} revoked by ${r.revoked!.by} at ${r.revoked!.at}: ${r.revoked!.reason}`;
  const would = (done: string, planned: string) => (r.dryRun ? planned : done);
  const channel = (c: RevocationReport['channels'][number]) =>
    c.action === 'rollback'
      ? `${c.tag} -> ${c.to!.tag} (${c.to!.version}): ${would('rolled back', 'would roll back')}`
      : c.action === 'none-usable'
        ? `${c.tag}: no usable earlier entry, left as it is`
        : `${c.tag}: left as it is${r.alreadyRevoked ? '' : ' (--keep-channels)'}`;
  const mark = (c: RevocationReport['clones'][number]) =>
    `${c.mark === 'would-mark' ? 'would be marked' : c.mark === 'marked' ? 'marked' : `marked already (copy of ${c.markedFor!.image}:${c.markedFor!.version})`}${c.through.length ? `, through ${c.through.join(', ')}` : ''}`;
  const rows = [
    ...r.channels.map((c) => ({ what: 'channel', name: c.channel, detail: channel(c) })),
    ...r.tags.map((t) => ({ what: 'tag', name: t, detail: '' })),
    ...r.packs.map((p) => ({ what: 'pack', name: p.name, detail: `${p.kind} at ${p.host}:${p.path}` })),
    ...r.volumes.map((v) => ({
      what: 'volume',
      name: v.volume,
      detail: [v.compute && `on ${v.compute}`, v.nas && `from ${v.nas}`].filter(Boolean).join(' '),
    })),
    ...r.clones.map((c) => ({ what: 'clone', name: `${c.image}:${c.version}`, detail: mark(c) })),
    ...(r.unchecked ?? []).map((image) => ({
      what: 'unchecked',
      name: image,
      detail: 'its lineage did not answer: copies there are not marked',
    })),
    ...r.pushes.map((p) => ({
      what: 'push',
      name: p.reference ?? p.workflowId,
      detail: p.digest ? `${p.digest} (${p.status.toLowerCase()})` : p.status.toLowerCase(),
    })),
  ];
  return [
    head,
    ...(rows.length
      ? [formatTable(rows, ['what', 'name', 'detail'])]
      : ['it touches no channel, tag, pack, volume, clone or push']),
  ].join('\n');
}

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
      onImage<{ version?: string; name?: string }>((image, o, c) => {
        const input = {
          by: currentUser(),
          ...(o.version !== undefined ? { version: c.checkName('--version', o.version) } : {}),
          ...(o.name !== undefined ? { name: c.checkTag('--name', o.name) } : {}),
        };
        return (client) => c.tagVersion(client, image, input);
      }, pairs),
    );

  program
    .command('describe')
    .description(
      'an image in brief: how many versions, tags and history entries, its channels, gates, packs and builds, its newest versions and tags',
    )
    .argument('<image>', 'the image')
    .action(onImage((image, _o, c) => (client) => c.describeLineage(client, image), showSummary));

  program
    .command('tags')
    .description("list an image's tags a page at a time, oldest first on each page (page 1: the newest)")
    .argument('<image>', 'the image')
    .option('--limit <n>', `tags a page (1-${MAX_PAGE_LIMIT}, default ${DEFAULT_PAGE_LIMIT})`)
    .option('--page <n>', 'which page: 1 the newest (default), 2 the ones before, ...')
    .action(
      onImage<{ limit?: string; page?: string }>(
        (image, o, c) => {
          const request = pageOptions(o);
          return async (client) => {
            const page = await c.lineageTags(client, image, request);
            checkPageExists(page, 'tags');
            return paged(
              page.tags.map(({ name, test: _test, ...t }) => ({ tag: name, ...t })),
              pageFooter(page, 'tags'),
            );
          };
        },
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
      onImage<{ tag: string; to: string; force?: boolean; reason?: string }>((image, o, c) => {
        const reason = o.force
          ? c.checkReason('--reason', o.reason)
          : c.checkOptionalText('--reason', o.reason, 'reason');
        const input = {
          by: currentUser(),
          tag: c.checkTag('--tag', o.tag),
          channel: c.checkChannel('--to', o.to),
          ...(o.force ? { force: true } : {}),
          ...(reason ? { reason } : {}),
        };
        return (client) => c.promoteTag(client, image, input);
      }, pairs),
    );

  program
    .command('gate')
    .description('set the channels whose promotions need a passed test result (prod when an image starts)')
    .argument('<image>', 'the image')
    .option('--channels <list>', 'comma-separated channel names, e.g. staging,prod')
    .option('--none', 'no channel is gated')
    .action(
      onImage<{ channels?: string; none?: boolean }>(
        (image, o, c) => {
          if ((o.channels === undefined) === !o.none)
            throw new InputError('--channels/--none', 'exactly one of them', o.channels);
          const channels = o.none
            ? []
            : o.channels!.split(',').map((name) => c.checkChannel('--channels', name.trim()));
          const input = { by: currentUser(), channels };
          return (client) => c.setGate(client, image, input);
        },
        (gated: string[]) => `gated: ${gated.join(', ') || 'none'}`,
      ),
    );

  const rollbackChannel = onImage<{ channel: string; reason?: string }>((image, o, c) => {
    const input = {
      by: currentUser(),
      channel: c.checkChannel('--channel', o.channel),
      ...(o.reason !== undefined ? { reason: c.checkReason('--reason', o.reason) } : {}),
    };
    return (client) => c.rollbackChannel(client, image, input);
  }, pairs);
  program
    .command('rollback')
    .description("move a channel back to its previous entry; with --rollout, take back the channel's whole rollout")
    .argument('<image>', 'the image')
    .requiredOption('--channel <channel>', 'the channel')
    .option('--reason <text>', 'why')
    .option('--rollout', "take back every pack and volume the channel's rollout moved, newest first, and the channel")
    .action(async (ref: string, o: { channel: string; reason?: string; rollout?: boolean }, cmd: Command) => {
      if (!o.rollout) return rollbackChannel(ref, o, cmd);
      const { rollbackRolloutCommand } = await import('./rollout.js');
      return rollbackRolloutCommand(parseImageRef(ref).image, o, cmd);
    });

  program
    .command('channels')
    .description("show an image's channels: current version and how many entries their history has")
    .argument('<image>', 'the image')
    .action(
      onImage(
        (image, _o, c) => async (client) => {
          const { channels, gated } = await c.describeLineage(client, image);
          // Gated channels nothing was promoted to yet are listed too: they are part of the policy.
          const names = [...new Set([...Object.keys(channels), ...gated])];
          return names.map((name) => ({
            channel: name,
            gated: gated.includes(name) ? 'yes' : 'no',
            ...channels[name]?.current,
            entries: channels[name]?.entries ?? 0,
          }));
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
      onImage<{ tag: string; passed?: boolean; failed?: boolean; note?: string }>((image, o, c) => {
        if (Boolean(o.passed) === Boolean(o.failed))
          throw new InputError('--passed/--failed', 'exactly one of them', undefined);
        const input = {
          by: currentUser(),
          tag: c.checkTag('--tag', o.tag),
          passed: Boolean(o.passed),
          ...(o.note !== undefined ? { note: c.checkText('--note', o.note, 'note') } : {}),
        };
        return (client) => c.recordTestResult(client, image, input);
      }, pairs),
    );

  program
    .command('history')
    .description(
      "an image's history a page at a time, oldest first on each page (page 1: the newest): who changed what, when and why (archived entries included)",
    )
    .argument('<image>', 'the image')
    .option('--limit <n>', `entries a page (1-${MAX_PAGE_LIMIT}, default ${DEFAULT_PAGE_LIMIT})`)
    .option('--page <n>', 'which page: 1 the newest (default), 2 the ones before, ...')
    .option('--last <n>', 'the newest N entries, however many (instead of a page)')
    .action(
      onImage<{ last?: string; limit?: string; page?: string }>(
        (image, o, c) => {
          const last = o.last === undefined ? undefined : checkInt('--last', o.last, 1, Number.MAX_SAFE_INTEGER);
          if (last !== undefined && (o.limit !== undefined || o.page !== undefined))
            throw new InputError('--last/--limit/--page', '--last alone, or a page with --limit and --page', undefined);
          const request = pageOptions(o);
          return async (client) => {
            if (last !== undefined) return c.lineageHistory(client, image, last);
            const page = await c.lineageHistoryPage(client, image, request);
            checkPageExists(page, 'history entries');
            return paged(page.entries, pageFooter(page, 'entries'));
          };
        },
        table(['seq', 'at', 'by', 'op', 'detail']),
      ),
    );

  program
    .command('revoke')
    .description(
      'revoke a version (it can no longer be tagged, promoted or cloned) and follow it: roll back each channel it is current on to its previous usable entry and mark its copies in other images; prints what it touches',
    )
    .argument('<image>', 'the image')
    .requiredOption('--version <v>', 'the version')
    .requiredOption('--reason <text>', 'why')
    .option('--dry-run', 'only show what the revocation would touch and do; change nothing')
    .option('--keep-channels', 'leave the channels the version is current on where they are')
    .action(
      onImage<{ version: string; reason: string; dryRun?: boolean; keepChannels?: boolean }>((image, o, c) => {
        const request = {
          by: currentUser(),
          version: c.checkName('--version', o.version),
          reason: c.checkReason('--reason', o.reason),
          ...(o.dryRun ? { dryRun: true } : {}),
          ...(o.keepChannels ? { keepChannels: true } : {}),
        };
        return (client) => c.revokeAcrossLineages(client, image, request);
      }, showRevocation),
    );

  program
    .command('diff')
    .description('what changed between two versions (or tags): packages, files and size')
    .argument('<image>', 'the image')
    .argument('<from>', 'a version or tag')
    .argument('<to>', 'a version or tag')
    .action(async (ref: string, a: string, b: string, _o: unknown, cmd: Command) =>
      onImage((image, _o, c) => (client) => c.diffVersions(client, image, a, b), showDiff)(ref, {}, cmd),
    );

  program
    .command('gc')
    .description(
      'remove versions retention does not keep: the newest N and every version a tag, channel, pack or volume refers to',
    )
    .argument('<image>', 'the image')
    .option('--keep <n>', 'how many of the newest versions to keep')
    .option('--dry-run', 'only say what would be removed')
    .action(
      onImage<{ keep?: string; dryRun?: boolean }>((image, o, c) => {
        const input = {
          by: currentUser(),
          ...(o.keep !== undefined ? { keep: checkInt('--keep', o.keep, 1, 10_000) } : {}),
          ...(o.dryRun ? { dryRun: true } : {}),
        };
        return (client) => c.collectGarbage(client, image, input);
      }, showGc),
    );

  program
    .command('remove')
    .description(
      'delete a version (or, with no version, every version) from the store, unless something still refers to it',
    )
    .argument('<image>', '<image>[:<version or tag>]')
    .action(async (ref: string, _o: unknown, cmd: Command) => {
      const which = parseImageRef(ref).ref;
      await onImage((image, _o, c) => (client) => c.removeVersions(client, image, currentUser(), which), pairs)(
        ref,
        {},
        cmd,
      );
    });

  program
    .command('pack')
    .description(
      'publish a tagged version under a name (default: the image), the previous one moved aside: a netboot boot directory (root.squashfs, kernel, initrd) or a read-only VM base that volumes are cloned from',
    )
    .argument('<image>', 'the image')
    .requiredOption('--tag <tag>', 'the tag to pack')
    .option('--as <name>', 'the name to publish under (a test name tries a tag before production)')
    .option('--kind <kind>', 'netboot or vm (default: netboot for a version with a squashfs artifact, else vm)')
    .option('--max-root-bytes <n>', 'refuse a root image larger than this')
    .action(
      onImage<{ tag: string; as?: string; kind?: string; maxRootBytes?: string }>((image, o, c) => {
        const input = {
          by: currentUser(),
          tag: c.checkTag('--tag', o.tag),
          ...(o.as !== undefined ? { as: c.checkName('--as', o.as) } : {}),
          ...(o.kind !== undefined ? { kind: c.checkPackKind('--kind', o.kind) } : {}),
          ...(o.maxRootBytes !== undefined
            ? { maxRootBytes: checkInt('--max-root-bytes', o.maxRootBytes, 1, Number.MAX_SAFE_INTEGER) }
            : {}),
        };
        return (client) => c.packTag(client, image, input);
      }, pairs),
    );

  program
    .command('clone')
    .description('start a new image whose first version is a copy of a version of this one (default: the newest)')
    .argument('<image>', 'the image to clone from')
    .argument('<new-image>', 'the new image')
    .option('--version <v>', 'the version or tag to clone')
    .action(async (ref: string, target: string, o: { version?: string }, cmd: Command) =>
      onImage(
        (image, _o, c) => {
          const newImage = c.checkImageName('new-image', target);
          const originTag = c.checkTag('new-image', `cloned-to-${newImage}`);
          return (client) => c.cloneImage(client, image, newImage, originTag, currentUser(), o.version);
        },
        (r: VersionRecord) =>
          pairs({ image: target, version: r.id, origin: `${r.origin?.image}:${r.origin?.version}` }),
      )(ref, {}, cmd),
    );
}
