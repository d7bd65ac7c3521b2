/**
 * `imgflow validate`: a stored version is opened on a builder of its arch and checked against the
 * preparation rules; with `fix`, a copy is prepared again, packed in the version's formats and
 * stored, and the new version's record is returned for the caller to register in the lineage
 * (the stored version itself never changes).
 */
import { CancellationScope, proxyActivities, setCurrentDetails, workflowInfo } from '@temporalio/workflow';
import type { BuilderActivities } from '../activities/builder/index.js';
import type { OutputFormat, PrepareOptions } from '../activities/builder/recipe.js';
import type { Breach } from '../activities/builder/validate.js';
import type { StoredArtifact } from '../activities/builder/validate-version.js';
import type { HostActivities } from '../activities/host.js';
import type { Artifact, NewVersion, PhaseRow, VersionRecord } from '../common/lineage.js';
import { queues } from '../common/queues.js';
import { storeActivities } from './build/store-stream.js';

export interface ValidateInput {
  image: string;
  /** The version checked, as its lineage records it. */
  version: Pick<VersionRecord, 'id' | 'arch' | 'os' | 'recipeDigest' | 'artifacts' | 'private' | 'shared'>;
  prepare: PrepareOptions;
  fix: boolean;
  by: string;
  message: string;
  /** The NAS whose image store keeps a repaired copy. */
  store: string;
}

export interface ValidateResult {
  image: string;
  version: string;
  breaches: Breach[];
  /** With `fix`: the repaired copy, stored and ready to register as a new version. */
  fixed?: { fixed: Breach[]; remaining: Breach[]; record: NewVersion };
}

const PREFERRED: OutputFormat[] = ['raw', 'qcow2', 'squashfs'];

/** The artifact cheapest to open: raw needs no conversion, squashfs keeps no ext4 metadata. */
function pickArtifact(artifacts: Artifact[]): Artifact {
  const found = PREFERRED.map((format) => artifacts.find((a) => a.format === format)).find((a) => a !== undefined);
  if (!found) throw new Error('the version has no artifact to validate');
  return found;
}

export async function validateWorkflow(input: ValidateInput): Promise<ValidateResult> {
  const { image, version } = input;
  const id = workflowInfo().workflowId;
  // The work directory and, for a fix, the store directory of the repaired copy: unique per run.
  const build = id
    .replace(/^validate-/, '')
    .slice(-64)
    .replace(/^[^a-z0-9]+/, '');
  const ref = { build, arch: version.arch };
  // The store directory of a repaired copy; the lineage gives it its version id when it registers it.
  const copyName = `${version.id}-fix-${id.slice(-8)}`;
  const builder = proxyActivities<BuilderActivities & HostActivities>({
    taskQueue: queues.builder(version.arch),
    scheduleToStartTimeout: '5m',
    startToCloseTimeout: '2h',
    heartbeatTimeout: '2m',
    retry: { maximumAttempts: 3, nonRetryableErrorTypes: ['InputError', 'RecipeError'] },
  });
  const nas = storeActivities(input.store, 5);
  const artifact = pickArtifact(version.artifacts);
  const stored: StoredArtifact = {
    format: artifact.format,
    host: artifact.host,
    path: artifact.path,
    sha256: artifact.sha256,
  };
  const prepare: PrepareOptions = { ...input.prepare, private: version.private, shared: version.shared };

  try {
    setCurrentDetails(`**${image}:${version.id}** opening ${artifact.format}`);
    const opened = await builder.openVersion({ ...ref, artifact: stored });
    setCurrentDetails(`**${image}:${version.id}** validating`);
    const { breaches } = await builder.validate({ ...ref, prepare });
    if (!input.fix || breaches.length === 0) {
      await builder.removeBuild(ref);
      return { image, version: version.id, breaches };
    }

    setCurrentDetails(`**${image}:${version.id}** fixing ${breaches.length} breaches`);
    const facts = await builder.hostFacts();
    const fixed = await builder.fixVersion({ ...ref, prepare });
    const measured = await builder.measure(ref);
    const formats = [...new Set(version.artifacts.map((a) => a.format))];
    const packed = await builder.packOutputs({ ...ref, image, version: copyName, outputs: formats });
    const store = (name: string, path: string, sha256: string) =>
      nas.storeFile({ image, version: copyName, name, source: { host: facts.host, path }, sha256 });
    const artifacts: Artifact[] = [];
    for (const out of packed.outputs) {
      const copy = await store(`${image}-${copyName}.${out.format}`, out.path, out.sha256);
      artifacts.push({ format: out.format, host: copy.host, path: copy.path, sha256: out.sha256, bytes: out.bytes });
    }
    const packagesFile = await store('packages.json', measured.packagesFile, measured.packagesFileSha256);
    const filesManifest = await store('manifest.jsonl', measured.manifest.path, measured.manifest.sha256);
    await builder.removeBuild(ref);

    const report: PhaseRow[] = [opened, fixed, packed].map((r) => ({
      phase: r.phase,
      durationMs: r.durationMs,
      packages: r.packages,
      bytes: r.bytes,
      ...(r.note ? { note: r.note } : {}),
    }));
    const record: NewVersion = {
      createdAt: new Date().toISOString(),
      by: input.by,
      message: input.message,
      arch: version.arch,
      os: version.os,
      recipeDigest: version.recipeDigest,
      artifacts,
      packages: measured.packages,
      bytes: measured.bytes,
      manifests: {
        packages: { path: packagesFile.path, sha256: measured.packagesFileSha256 },
        files: { path: filesManifest.path, sha256: measured.manifest.sha256 },
      },
      private: measured.private ?? version.private,
      shared: measured.shared ?? version.shared,
      report,
      provenance: {
        builder: facts.host,
        source: `fix of ${image}:${version.id} (${artifact.format} ${artifact.sha256.slice(0, 12)})`,
        tools: { 'qemu-img': facts.qemuImg, kernel: facts.kernel },
        workflowId: id,
      },
      // The repaired copy kept its hashes only if the check allowed them.
      ...(prepare.allowPasswordHashes ? { allowPasswordHashes: true } : {}),
    };
    return { image, version: version.id, breaches, fixed: { fixed: fixed.fixed, remaining: fixed.remaining, record } };
  } catch (err) {
    // A cancelled or failed run leaves nothing behind on the builder.
    await CancellationScope.nonCancellable(() => builder.removeBuild(ref)).catch(() => undefined);
    throw err;
  }
}
