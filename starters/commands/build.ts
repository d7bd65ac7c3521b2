/** `imgflow build`, `report` and `versions`: builds become versions of an image's lineage. */
import type { Command } from 'commander';
import { checkTargets, parseTarget, REQUEST_TARGETS_MAX } from '../../common/events.js';
import type { VersionRecord } from '../../common/lineage.js';
import { checkHost, checkInt } from '../../common/names.js';
import { checkPageExists, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, pageFooter, pageOptions } from '../../common/pages.js';
import { configFrom, connected, currentUser, say, type GlobalFlags } from '../context.js';
import { parseImageRef } from '../image-refs.js';
import { formatTable, humanBytes, printJson } from '../output.js';

/** What the actions need, loaded when one runs (never for --help). */
const clients = async () => ({
  ...(await import('../client.js')),
  ...(await import('../build-client.js')),
  ...(await import('../lineage-client.js')),
});

function printVersion(v: VersionRecord, format: (v: VersionRecord) => string, json: boolean | undefined): void {
  if (json) printJson(v);
  else process.stdout.write(`${format(v)}\n`);
}

export function registerBuild(program: Command): void {
  program
    .command('build')
    .description('build an image from a recipe into a new version of its lineage, and print the build report')
    .argument('<recipe>', 'the recipe file (YAML)')
    .option('-m, --message <text>', 'why this build', 'build')
    .option('--store <nas>', 'the NAS whose image store keeps the version (default: this host)')
    .option('--builder-wait <seconds>', 'fail when no builder of the arch takes the build within this long', '300')
    .option('--no-wait', 'print the build id and return')
    .option(
      '--notify <target>',
      `also tell this webhook URL or e-mail address when the build starts and ends (up to ${REQUEST_TARGETS_MAX})`,
      (value: string, all: string[]) => [...all, value],
      [],
    )
    .action(
      async (
        file: string,
        opts: { message: string; store?: string; builderWait: string; wait: boolean; notify: string[] },
        cmd: Command,
      ) => {
        const flags = cmd.optsWithGlobals<GlobalFlags>();
        const config = configFrom(flags);
        const notify = checkTargets(
          '--notify',
          opts.notify.map((t) => parseTarget('--notify', t)),
        );
        const [{ machineMirror, readRecipe, recipeDigest }, { checkText }, c] = await Promise.all([
          import('../../activities/builder/recipe.js'),
          import('../../common/limits.js'),
          clients(),
        ]);
        const mirror = machineMirror();
        const recipe = readRecipe(file, mirror ? { defaultMirror: mirror } : {});
        const request = {
          recipe,
          recipeDigest: recipeDigest(recipe),
          by: currentUser(),
          message: checkText('--message', opts.message, 'message'),
          store: checkHost('--store', opts.store ?? config.host),
          builderWaitSeconds: checkInt('--builder-wait', opts.builderWait, 1, 86_400),
          ...(notify.length ? { notify } : {}),
        };
        await c.withClient(config, async ({ client }) => {
          const ticket = await c.requestBuild(client, config.namespace, request);
          if (!opts.wait) {
            if (flags.json) printJson(ticket);
            else process.stdout.write(`${ticket.buildId}\n`);
            return;
          }
          printVersion(
            await c.waitForBuild(client, recipe.image, ticket.buildId, ticket.ahead, config.connectTimeoutMs),
            c.formatVersion,
            flags.json,
          );
        });
      },
    );

  program
    .command('report')
    .description('print the build report of a version (default: the newest)')
    .argument('<image>', '<image>[:<version or tag>]')
    .action(async (ref: string, _opts: unknown, cmd: Command) => {
      const { image, ref: which } = parseImageRef(ref);
      await connected(cmd, clients, async ({ c, client, flags }) =>
        printVersion(await c.fullVersion(client, image, which), c.formatVersion, flags.json),
      );
    });

  program
    .command('versions')
    .description("list an image's versions a page at a time, oldest first on each page (page 1: the newest)")
    .argument('<image>', 'the image')
    .option('--limit <n>', `versions a page (1-${MAX_PAGE_LIMIT}, default ${DEFAULT_PAGE_LIMIT})`)
    .option('--page <n>', 'which page: 1 the newest (default), 2 the ones before, ...')
    .action(async (ref: string, opts: { limit?: string; page?: string }, cmd: Command) => {
      const { image } = parseImageRef(ref);
      const request = pageOptions(opts);
      await connected(cmd, clients, async ({ c: { lineageVersions }, client, flags }) => {
        const page = await lineageVersions(client, image, request);
        checkPageExists(page, 'versions');
        if (flags.json) return printJson(page.versions);
        const rows = page.versions.map((v) => ({
          version: v.id,
          created: v.createdAt,
          by: v.by,
          packages: v.packages,
          size: humanBytes(v.bytes),
          // A removed version's stub no longer lists its (deleted) files.
          outputs: 'artifacts' in v ? v.artifacts.map((a) => a.format).join(',') : '',
          tags: (page.tags[v.id] ?? []).join(','),
          state: [
            v.removed ? 'removed' : v.revoked ? `revoked: ${v.revoked.reason}` : 'ok',
            ...(v.ancestorRevoked
              ? [`copy of revoked ${v.ancestorRevoked.image}:${v.ancestorRevoked.version}: ${v.ancestorRevoked.reason}`]
              : []),
          ].join('; '),
          message: v.message,
        }));
        process.stdout.write(
          `${formatTable(rows, ['version', 'created', 'by', 'packages', 'size', 'outputs', 'tags', 'state', 'message'])}\n`,
        );
        const footer = pageFooter(page, 'versions');
        if (footer) say(footer);
        if (page.builds.length) say(`building: ${page.builds.map((b) => `${b.id} (${b.by})`).join(', ')}`);
      });
    });
}
