/** A staged sync: images registered as `<id>+STAGED` for the site to try before `adopt`, and their removal. */
import { setCurrentDetails } from '@temporalio/workflow';
import type { ListDiff, ListedImage, ListOwner } from '../../activities/cloud/imagelist.js';
import type { RegistryImage } from '../../activities/cloud/registry/types.js';
import { parkedName, stagedName, type SubscriptionConfig } from '../../common/subscription.js';
import { park, prepareDisk, READY_TIMEOUT_MS, removeRegistered, tryDelete, undoAll } from './images.js';
import type { ImageOutcome, ParkedImage, PlanReport, StagedImage } from './messages.js';
import { message, notes } from './notes.js';
import type { Proxies } from './sync-activities.js';

/** Images under their `<id>+STAGED` name. */
export function stagedImagesOf(images: RegistryImage[]): RegistryImage[] {
  return images.filter(
    (image) => image.template.IMGFLOW_IMAGE !== undefined && image.name === stagedName(image.template.IMGFLOW_IMAGE),
  );
}

export function stagedCopyOf(staged: RegistryImage[], image: ListedImage): RegistryImage | undefined {
  return staged.find(
    (s) =>
      s.template.IMGFLOW_IMAGE === image.identifier &&
      s.template.IMGFLOW_SHA512 === image.sha512 &&
      s.state !== 'ERROR',
  );
}

export function stagedRecord(image: ListedImage, id: number): StagedImage {
  return {
    identifier: image.identifier,
    imageVersion: image.version,
    sha512: image.sha512,
    registryId: id,
    registryName: stagedName(image.identifier),
  };
}

/** Stages one new or changed image: verified, registered as `<id>+STAGED`, ready, private to the admin; or nothing. */
async function stageImage(
  act: Proxies,
  owner: ListOwner,
  image: ListedImage,
  format: SubscriptionConfig['format'],
): Promise<{ outcome: ImageOutcome; staged?: StagedImage }> {
  const name = stagedName(image.identifier);
  const outcome = {
    identifier: image.identifier,
    action: 'stage' as const,
    title: image.title,
    imageVersion: image.version,
  };
  try {
    const { disk, note } = await prepareDisk(act, image, format);
    setCurrentDetails(`**staging** ${image.identifier} ${image.version} as ${name}`);
    const id = await act.registry.registerImage({ list: owner, image, path: disk, name });
    await act.ready.waitImageReady({ id, timeoutMs: READY_TIMEOUT_MS });
    await act.registry.lockImage({ id });
    return {
      outcome: { ...outcome, ok: true, registryId: id, registryName: name, ...notes(note) },
      staged: stagedRecord(image, id),
    };
  } catch (error) {
    const undone = await undoAll([
      { what: 'remove the staged image', run: () => removeRegistered(act, owner, image, name) },
    ]);
    return { outcome: { ...outcome, ok: false, note: undone ?? message(error) } };
  }
}

/** Removes a staged image; one a VM still uses is parked under its own `_EXPIRED_` name and deleted once unused. */
async function discardStaged(
  act: Proxies,
  image: RegistryImage,
  when: Date,
): Promise<{ outcome: ImageOutcome; parked?: ParkedImage }> {
  const identifier = image.template.IMGFLOW_IMAGE ?? image.name;
  const outcome = {
    identifier,
    action: 'unstage' as const,
    registryId: image.id,
    imageVersion: image.template.IMGFLOW_VERSION,
  };
  if (await tryDelete(act, { id: image.id, name: image.name, identifier }))
    return { outcome: { ...outcome, ok: true, registryName: image.name, note: 'deleted' } };
  try {
    const name = await park(act, image.id, parkedName(image.name, when));
    await act.registry.lockImage({ id: image.id });
    return {
      outcome: { ...outcome, ok: true, registryName: name, note: `in use: parked as ${name}, deleted once unused` },
      parked: { id: image.id, name, identifier },
    };
  } catch (error) {
    return { outcome: { ...outcome, ok: false, registryName: image.name, note: message(error) } };
  }
}

export interface StagingResult {
  outcomes: ImageOutcome[];
  staged: StagedImage[];
  parked: ParkedImage[];
}

/** Discards staged images, collecting what they leave parked. */
export async function discardAll(
  act: Proxies,
  images: RegistryImage[],
  when: Date,
  into: StagingResult,
): Promise<void> {
  for (const image of images) {
    const discarded = await discardStaged(act, image, when);
    into.outcomes.push(discarded.outcome);
    if (discarded.parked) into.parked.push(discarded.parked);
  }
}

/**
 * A staged sync: every new (admitted) or changed image lands as `<id>+STAGED` for the site to try.
 * What an older list staged and this one no longer wants goes first, so a newer list replaces it;
 * an image already staged with the same bytes is kept as it is.
 */
export async function stageAll(
  act: Proxies,
  owner: ListOwner,
  diff: ListDiff,
  report: PlanReport,
  format: SubscriptionConfig['format'],
  when: Date,
): Promise<StagingResult> {
  const wanted = [
    ...diff.add.filter((image) => report.add.includes(image.identifier)),
    ...diff.update.map((change) => change.image),
  ];
  const existing = stagedImagesOf(await act.registry.listImagesOf({ listIdentifier: owner.identifier, owner }));
  const result: StagingResult = { outcomes: [], staged: [], parked: [] };
  await discardAll(
    act,
    existing.filter((image) => !wanted.some((w) => stagedCopyOf([image], w))),
    when,
    result,
  );
  for (const image of wanted) {
    const kept = stagedCopyOf(existing, image);
    if (kept) {
      result.outcomes.push({
        identifier: image.identifier,
        action: 'stage',
        ok: true,
        title: image.title,
        imageVersion: image.version,
        registryId: kept.id,
        registryName: kept.name,
        note: 'already staged',
      });
      result.staged.push(stagedRecord(image, kept.id));
      continue;
    }
    const staged = await stageImage(act, owner, image, format);
    result.outcomes.push(staged.outcome);
    if (staged.staged) result.staged.push(staged.staged);
  }
  return result;
}
