/** `imgflow build`, `report` and `versions`: builds become versions of an image's lineage. */
import type { Command } from 'commander';
import type { Client } from '@temporalio/client';
import { machineMirror, readRecipe, recipeDigest } from '../../activities/builder/recipe.js';
import { formatReport } from '../../activities/builder/report.js';
import { checkText } from '../../common/limits.js';
import type { VersionRecord } from '../../common/lineage.js';
import { checkHost, checkInt, InputError } from '../../common/names.js';
import { queues } from '../../common/queues.js';
import type { BuildResult } from '../../workflows/build/messages.js';
import { requestBuildUpdate } from '../../workflows/lineage/messages.js';
import { DEFAULT_CONNECT_TIMEOUT_S } from '../../lib/config.js';
import { outcomeOf } from '../answers.js';
import { configFrom, connectClient, currentUser, say, type GlobalFlags } from '../context.js';
import { describeLineage, fullVersion, parseImageRef, updateLineage } from '../lineage-client.js';
import { hasWorker } from '../answers.js';
import { formatTable, humanBytes, printJson, watchProgress } from '../output.js';

async function until<T>(get: () => Promise<T | undefined>, timeoutMs: number): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await get().catch(() => undefined);
    if (value !== undefined || Date.now() > deadline) return value;
    await new Promise((r) => setTimeout(r, 300));
  }
}

/** A version as people read it: its build report, then where it came from and where it lives. */
export function formatVersion(v: VersionRecord): string {
  const rows = [
    ['version', `${v.id}  ${v.createdAt} by ${v.by}: ${v.message}`],
    ['source', `${v.provenance.source}${v.capturedBuilderRoot ? ' (the builder host itself: allowBuilderRoot)' : ''}`],
    ['builder', `${v.provenance.builder} (${v.provenance.workflowId})`],
    ...v.artifacts.map((a) => [a.format, `${a.path} on ${a.host} (${humanBytes(a.bytes)}, sha256 ${a.sha256})`]),
    ...(v.log ? [['log', v.log.path]] : []),
    ...(v.revoked ? [['REVOKED', `${v.revoked.at} by ${v.revoked.by}: ${v.revoked.reason}`]] : []),
  ];
  return `${formatReport(v.report)}\n\n${rows.map(([k, val]) => `${k!.padEnd(8)}  ${val}`).join('\n')}`;
}

function printVersion(v: VersionRecord, json: boolean | undefined): void {
  if (json) printJson(v);
  else process.stdout.write(`${formatVersion(v)}\n`);
}

/** Follows a requested build to its registered version, showing progress on a terminal. */
export async function waitForBuild(client: Client, image: string, buildId: string, ahead: string[], lossBoundMs = DEFAULT_CONNECT_TIMEOUT_S * 1000): Promise<VersionRecord> {
  if (ahead.length) say(`${image} is already building: waiting for ${ahead.join(', ')} to finish first`);
  const handle = client.workflow.getHandle(buildId);
  // The lineage starts the build when its turn comes; until then it does not exist.
  await until(() => handle.describe(), 24 * 3600_000);
  // A server that goes away meanwhile is waited for: what is printed is the build's own outcome.
  const result: BuildResult = await watchProgress(handle, outcomeOf<BuildResult>(handle, lossBoundMs, `build ${buildId}`), `build ${image}`);
  const record = await until(() => fullVersion(client, image, result.version), 30_000);
  if (!record) throw new Error(`build ${buildId} finished but ${image} did not register ${result.version}`);
  return record;
}

export function registerBuild(program: Command): void {
  program
    .command('build')
    .description("build an image from a recipe into a new version of its lineage, and print the build report")
    .argument('<recipe>', 'the recipe file (YAML)')
    .option('-m, --message <text>', 'why this build', 'build')
    .option('--store <nas>', "the NAS whose image store keeps the version (default: this host)")
    .option('--builder-wait <seconds>', 'fail when no builder of the arch takes the build within this long', '300')
    .option('--no-wait', 'print the build id and return')
    .action(async (file: string, opts: { message: string; store?: string; builderWait: string; wait: boolean }, cmd: Command) => {
      const flags = cmd.optsWithGlobals<GlobalFlags>();
      const config = configFrom(flags);
      const mirror = machineMirror();
      const recipe = readRecipe(file, mirror ? { defaultMirror: mirror } : {});
      const request = {
        recipe,
        recipeDigest: recipeDigest(recipe),
        by: currentUser(),
        message: checkText('--message', opts.message, 'message'),
        store: checkHost('--store', opts.store ?? config.host),
        builderWaitSeconds: checkInt('--builder-wait', opts.builderWait, 1, 86_400),
      };
      const { client, connection } = await connectClient(config);
      try {
        // A store no worker serves would hold the image's build slot through the whole build and then fail.
        if (!(await hasWorker(client, config.namespace, queues.nas(request.store)))) {
          throw new InputError('--store', `a NAS whose worker is running (nothing polls ${queues.nas(request.store)})`, request.store);
        }
        const ticket = await updateLineage(client, recipe.image, requestBuildUpdate, request);
        if (!opts.wait) {
          if (flags.json) printJson(ticket);
          else process.stdout.write(`${ticket.buildId}\n`);
          return;
        }
        printVersion(await waitForBuild(client, recipe.image, ticket.buildId, ticket.ahead, config.connectTimeoutMs), flags.json);
      } finally {
        await connection.close();
      }
    });

  program
    .command('report')
    .description('print the build report of a version (default: the newest)')
    .argument('<image>', '<image>[:<version or tag>]')
    .action(async (ref: string, _opts: unknown, cmd: Command) => {
      const flags = cmd.optsWithGlobals<GlobalFlags>();
      const { image, ref: which } = parseImageRef(ref);
      const { client, connection } = await connectClient(configFrom(flags));
      try {
        printVersion(await fullVersion(client, image, which), flags.json);
      } finally {
        await connection.close();
      }
    });

  program
    .command('versions')
    .description("list an image's versions")
    .argument('<image>', 'the image')
    .action(async (image: string, _opts: unknown, cmd: Command) => {
      const flags = cmd.optsWithGlobals<GlobalFlags>();
      const { client, connection } = await connectClient(configFrom(flags));
      try {
        const view = await describeLineage(client, parseImageRef(image).image);
        if (flags.json) return printJson(view.versions);
        const tagsOf = (id: string) => Object.entries(view.tags).filter(([, t]) => t.version === id).map(([name]) => name).join(',');
        const rows = view.versions.map((v) => ({
          version: v.id,
          created: v.createdAt,
          by: v.by,
          packages: v.packages,
          size: humanBytes(v.bytes),
          // A removed version's stub no longer lists its (deleted) files.
          outputs: 'artifacts' in v ? v.artifacts.map((a) => a.format).join(',') : '',
          tags: tagsOf(v.id),
          state: v.removed ? 'removed' : v.revoked ? `revoked: ${v.revoked.reason}` : 'ok',
          message: v.message,
        }));
        process.stdout.write(`${formatTable(rows, ['version', 'created', 'by', 'packages', 'size', 'outputs', 'tags', 'state', 'message'])}\n`);
        if (view.builds.length) say(`building: ${view.builds.map((b) => `${b.id} (${b.by})`).join(', ')}`);
      } finally {
        await connection.close();
      }
    });
}
