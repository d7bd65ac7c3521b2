/**
 * One build of an image: its phases on a builder of the recipe's architecture, each a report row
 * measured after it, then the outputs and manifests stored on the NAS with their digests checked.
 * It returns the version record for the lineage to register; the lineage runs one build at a
 * time per image.
 */
import {
  ApplicationFailure,
  CancellationScope,
  patched,
  proxyActivities,
  setCurrentDetails,
  workflowInfo,
} from '@temporalio/workflow';
import type { BuilderActivities } from '../../activities/builder/index.js';
import type { Recipe } from '../../activities/builder/recipe.js';
import type { HostActivities } from '../../activities/host.js';
import type { Artifact, PhaseRow } from '../../common/lineage.js';
import { queues } from '../../common/queues.js';
import { noWorkerTook } from '../support/failures.js';
import type { BuildInput, BuildResult } from './messages.js';
import { storeActivities, streamToStore } from './store-stream.js';

interface PhaseOutcome {
  phase: string;
  durationMs: number;
  packages: number;
  bytes: number;
  note?: string;
}

const row = (r: PhaseOutcome): PhaseRow => ({
  phase: r.phase,
  durationMs: r.durationMs,
  packages: r.packages,
  bytes: r.bytes,
  ...(r.note ? { note: r.note } : {}),
});

function describeSource(recipe: Recipe): string {
  const s = recipe.source;
  if (s.kind === 'debootstrap') return `debootstrap ${s.suite} (${s.variant}) from ${s.mirror}`;
  if (s.kind === 'capture') return `capture of ${s.host ? `${s.user ? `${s.user}@` : ''}${s.host}:` : ''}${s.path}`;
  return `tarball ${s.url ?? s.path} (sha256 ${s.sha256.slice(0, 12)})`;
}

export async function buildWorkflow(input: BuildInput): Promise<BuildResult> {
  const { recipe, version } = input;
  const build = workflowInfo()
    .workflowId.replace(/^build-/, '')
    .slice(0, 64);
  const ref = { build, arch: recipe.arch };
  const options = {
    taskQueue: queues.builder(recipe.arch),
    scheduleToStartTimeout: `${input.builderWaitSeconds ?? 300}s`,
    startToCloseTimeout: '2h',
    heartbeatTimeout: '2m',
    retry: { maximumAttempts: 3, nonRetryableErrorTypes: ['InputError', 'RecipeError'] },
  };
  const builder = proxyActivities<BuilderActivities & HostActivities>(options);
  const nas = storeActivities(input.store, 5);
  // One attempt each: a transfer that fails is started again, whole, with a new token.
  const transfers = storeActivities(input.store, 1);
  const report: PhaseRow[] = [];
  const step = (what: string) =>
    setCurrentDetails(
      `**${recipe.image}:${version}** ${what}\n\n${report.map((r) => `- ${r.phase}: ${Math.round(r.durationMs / 1000)}s, ${r.packages} packages`).join('\n')}`,
    );

  try {
    step('waiting for a builder');
    const facts = await builder.hostFacts();
    const s = recipe.source;
    step(`${s.kind} on ${facts.host}`);
    let capturedBuilderRoot = false;
    if (s.kind === 'debootstrap') report.push(row(await builder.bootstrap({ ...ref, source: s })));
    else if (s.kind === 'capture') {
      const captured = await builder.capture({ ...ref, source: s });
      capturedBuilderRoot = captured.builderRoot === true;
      report.push(row(captured));
    } else report.push(row(await builder.unpackTarball({ ...ref, source: s })));

    if (recipe.packages.length) {
      step('installing packages');
      report.push(row(await builder.installPackages({ ...ref, packages: recipe.packages })));
    }
    for (const hook of recipe.hooks) {
      step(`hook ${hook.layer}/${hook.name}`);
      report.push(row(await builder.runHook({ ...ref, hook })));
    }
    step('preparing');
    report.push(row(await builder.prepare({ ...ref, prepare: recipe.prepare })));
    const measured = await builder.measure(ref);
    step('packing');
    const packed = await builder.packOutputs({ ...ref, image: recipe.image, version, outputs: recipe.outputs });
    report.push(row(packed));

    step(`storing on ${input.store}`);
    const store = async (name: string, path: string, sha256: string) => {
      const file = { image: recipe.image, version, name, sha256 };
      // A NAS on another host takes the file as a stream the builder sends it (builds before this replay without).
      if (facts.host !== input.store && patched('store-over-network')) {
        const streamed = await streamToStore(builder, transfers, { ...file, arch: recipe.arch, path });
        if (streamed) return streamed;
      }
      return nas.storeFile({ ...file, source: { host: facts.host, path } });
    };
    const artifacts: Artifact[] = [];
    for (const out of packed.outputs) {
      const stored = await store(`${recipe.image}-${version}.${out.format}`, out.path, out.sha256);
      artifacts.push({
        format: out.format,
        host: stored.host,
        path: stored.path,
        sha256: out.sha256,
        bytes: out.bytes,
      });
    }
    const packagesFile = await store('packages.json', measured.packagesFile, measured.packagesFileSha256);
    const filesManifest = await store('manifest.jsonl', measured.manifest.path, measured.manifest.sha256);
    // Builds recorded before logs were kept replay without this step.
    const log = patched('build-log') ? await builder.buildLog(ref) : undefined;
    const storedLog = log ? await store('build.log', log.path, log.sha256) : undefined;
    await builder.removeBuild(ref);

    return {
      version,
      record: {
        createdAt: new Date().toISOString(),
        by: input.by,
        message: input.message,
        arch: recipe.arch,
        os: recipe.os,
        recipeDigest: input.recipeDigest,
        artifacts,
        packages: measured.packages,
        bytes: measured.bytes,
        manifests: {
          packages: { path: packagesFile.path, sha256: measured.packagesFileSha256 },
          files: { path: filesManifest.path, sha256: measured.manifest.sha256 },
        },
        private: measured.private ?? [],
        shared: measured.shared ?? false,
        report,
        provenance: {
          builder: facts.host,
          source: describeSource(recipe),
          tools: { 'qemu-img': facts.qemuImg, kernel: facts.kernel },
          workflowId: workflowInfo().workflowId,
          ...(facts.build ? { build: facts.build } : {}),
        },
        ...(log && storedLog ? { log: { path: storedLog.path, sha256: log.sha256 } } : {}),
        ...(recipe.prepare.allowPasswordHashes ? { allowPasswordHashes: true } : {}),
        ...(capturedBuilderRoot ? { capturedBuilderRoot: true } : {}),
      },
    };
  } catch (err) {
    // A builder that never took the task: no builder of the arch is running.
    if (noWorkerTook(err)) {
      throw ApplicationFailure.nonRetryable(
        `no builder for ${recipe.arch} is running (nothing took the build from builder.${recipe.arch})`,
        'NoBuilder',
      );
    }
    // A cancelled or failed build leaves nothing behind on the builder.
    await CancellationScope.nonCancellable(() => builder.removeBuild(ref)).catch(() => undefined);
    throw err;
  }
}
