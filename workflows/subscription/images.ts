/**
 * What a sync does to one image in the registry: add, swap (update), metadata in place, expire,
 * and the undo of each as a saga: every step done is undone in reverse when a later one fails, so
 * the old image is back under its name with its access and no half-registered successor is left.
 */
import { ApplicationFailure, setCurrentDetails } from '@temporalio/workflow';
import type { ImageSnapshot } from '../../activities/cloud/index.js';
import type { ImageChange, ListedImage, ListOwner } from '../../activities/cloud/imagelist.js';
import type { RegistryImage } from '../../activities/cloud/registry/types.js';
import { parkedName, stagedName, type SubscriptionConfig } from '../../common/subscription.js';
import { compensate, type UndoStep } from '../support/compensate.js';
import type { ImageOutcome, ParkedImage } from './messages.js';
import { message, notes } from './notes.js';
import type { Proxies } from './sync-activities.js';

/** Renames an image to its parked name, or that name with a counter when another image holds it; returns the name given. */
export async function park(act: Proxies, id: number, name: string): Promise<string> {
  // Syncs recorded before renames answered with the name had no collisions to report.
  return (await act.registry.renameImage({ id, name, free: true })) ?? name;
}

/**
 * Downloads (or finds in the cache) and converts one listed image; returns the disk to register,
 * and a note when the list declared another format than the file has.
 */
export async function prepareDisk(
  act: Proxies,
  image: ListedImage,
  format: SubscriptionConfig['format'],
): Promise<{ disk: string; note?: string }> {
  setCurrentDetails(`**downloading** ${image.identifier} ${image.version}`);
  const downloaded = await act.download.downloadImage({ image });
  setCurrentDetails(`**converting** ${image.identifier} ${image.version}`);
  const converted = await act.convert.convertForRegistry({
    sha512: downloaded.sha512,
    path: downloaded.path,
    ...(image.format ? { declared: image.format } : {}),
  });
  // The worker's registry decides the format; a subscription that expects another one is misconfigured.
  if (converted.format !== format)
    throw ApplicationFailure.nonRetryable(
      `format: the registry takes ${converted.format}, the subscription asks for ${format}`,
      'InputError',
    );
  return { disk: converted.path, ...(converted.formatNote ? { note: converted.formatNote } : {}) };
}

/** Removes whatever registration was made (or half made) for this entry, under `name` when staged. */
export async function removeRegistered(
  act: Proxies,
  owner: ListOwner,
  image: ListedImage,
  name?: string,
): Promise<void> {
  const id = await act.undo.findRegisteredImage({ list: owner, image, ...(name !== undefined ? { name } : {}) });
  if (id !== null) await act.undo.deleteImage({ id });
}

/** Puts a staged image that an adoption had taken back under its staged name, private to the admin. */
async function restage(act: Proxies, id: number, identifier: string): Promise<void> {
  await act.undo.renameImage({ id, name: stagedName(identifier) });
  await act.undo.lockImage({ id });
  await act.undo.setImageEnabled({ id, enabled: true });
}

export const READY_TIMEOUT_MS = 15 * 60_000;

/**
 * Undoes a swap's steps; the first undo that fails stops the rest (the old image cannot take its
 * name back while the new one still holds it) and is reported as needing a person.
 */
export async function undoAll(undo: UndoStep[]): Promise<string | undefined> {
  const [failed] = await compensate(undo, { stopAtFirstFailure: true });
  return failed ? `undo failed, needs a person: ${message(failed.error)}` : undefined;
}

/**
 * A first-ever image: registered (or its staged copy renamed), ready, and private to the admin
 * until the site opens it.
 */
export async function addImage(
  act: Proxies,
  owner: ListOwner,
  image: ListedImage,
  format: SubscriptionConfig['format'],
  staged?: RegistryImage,
): Promise<ImageOutcome> {
  const outcome = {
    identifier: image.identifier,
    action: 'add' as const,
    title: image.title,
    imageVersion: image.version,
  };
  const undo: UndoStep[] = [
    staged
      ? { what: 'restage', run: () => restage(act, staged.id, image.identifier) }
      : { what: 'remove the registration', run: () => removeRegistered(act, owner, image) },
  ];
  try {
    let id: number;
    let formatNote: string | undefined;
    if (staged) {
      setCurrentDetails(`**adopting** ${image.identifier}: staged image ${staged.id}`);
      await act.registry.renameImage({ id: staged.id, name: image.identifier });
      id = staged.id;
    } else {
      const { disk, note } = await prepareDisk(act, image, format);
      formatNote = note;
      setCurrentDetails(`**registering** ${image.identifier}`);
      id = await act.registry.registerImage({ list: owner, image, path: disk });
    }
    await act.ready.waitImageReady({ id, timeoutMs: READY_TIMEOUT_MS });
    await act.registry.lockImage({ id });
    return {
      ...outcome,
      ok: true,
      registryId: id,
      registryName: image.identifier,
      ...notes(staged && `adopted staged image ${staged.id}`, formatNote),
    };
  } catch (error) {
    const undone = await undoAll(undo);
    return { ...outcome, ok: false, note: undone ?? message(error) };
  }
}

/**
 * The swap: remember the old image's access, lock, disable, park it under its `_EXPIRED_` name,
 * register the new one under the identifier (or rename its staged copy to it), wait until ready,
 * give it the old access. Each step adds its undo before it runs, since a step may take effect and
 * still report failure. Nothing is touched before the new disk is verified.
 */
export async function swapImage(
  act: Proxies,
  owner: ListOwner,
  change: ImageChange,
  action: 'update' | 'metadata',
  when: Date,
  format: SubscriptionConfig['format'],
  staged?: RegistryImage,
): Promise<ImageOutcome> {
  const { image, current: old } = change;
  const outcome = { identifier: image.identifier, action, title: image.title, imageVersion: image.version };
  let disk: string | undefined;
  let formatNote: string | undefined;
  try {
    if (!staged) ({ disk, note: formatNote } = await prepareDisk(act, image, format));
  } catch (error) {
    return { ...outcome, ok: false, registryId: old.id, registryName: old.name, note: message(error) };
  }
  let snapshot: ImageSnapshot;
  try {
    snapshot = await act.registry.snapshotImage({ id: old.id });
  } catch (error) {
    return { ...outcome, ok: false, registryId: old.id, registryName: old.name, note: message(error) };
  }
  const undo: UndoStep[] = [
    { what: 'restore the old image', run: () => act.undo.applySnapshot({ id: old.id, snapshot, name: snapshot.name }) },
  ];
  let parked = parkedName(image.identifier, when);
  try {
    setCurrentDetails(`**swapping** ${image.identifier}: parking image ${old.id} as ${parked}`);
    await act.registry.lockImage({ id: old.id });
    await act.registry.setImageEnabled({ id: old.id, enabled: false });
    parked = await park(act, old.id, parked);
    let id: number;
    if (staged) {
      undo.push({ what: 'restage', run: () => restage(act, staged.id, image.identifier) });
      setCurrentDetails(`**swapping** ${image.identifier}: adopting staged image ${staged.id}`);
      await act.registry.renameImage({ id: staged.id, name: image.identifier });
      id = staged.id;
    } else {
      undo.push({ what: 'remove the registration', run: () => removeRegistered(act, owner, image) });
      setCurrentDetails(`**swapping** ${image.identifier}: registering ${image.version}`);
      id = await act.registry.registerImage({ list: owner, image, path: disk! });
    }
    await act.ready.waitImageReady({ id, timeoutMs: READY_TIMEOUT_MS });
    await act.registry.applySnapshot({ id, snapshot });
    return {
      ...outcome,
      ok: true,
      registryId: id,
      registryName: image.identifier,
      ...notes(
        `replaced image ${old.id}, parked as ${parked}`,
        staged && `adopted staged image ${staged.id}`,
        formatNote,
      ),
    };
  } catch (error) {
    setCurrentDetails(`**undoing** the swap of ${image.identifier}: ${message(error)}`);
    const undone = await undoAll(undo);
    return {
      ...outcome,
      ok: false,
      registryId: old.id,
      registryName: old.name,
      note: undone ?? `${message(error)}; image ${old.id} restored`,
    };
  }
}

/**
 * Only the list's metadata changed: it is attached to the registered image in place. No download,
 * no rename, no new image; owner, group, permissions and state stay as the site set them.
 */
export async function updateMetadata(act: Proxies, owner: ListOwner, change: ImageChange): Promise<ImageOutcome> {
  const { image, current } = change;
  const outcome = {
    identifier: image.identifier,
    action: 'metadata' as const,
    title: image.title,
    imageVersion: image.version,
    registryId: current.id,
    registryName: current.name,
  };
  try {
    setCurrentDetails(`**updating metadata** of ${image.identifier}: ${change.changed.join(', ')}`);
    await act.registry.updateImageMetadata({ id: current.id, list: owner, image });
    return { ...outcome, ok: true, note: `metadata updated in place: ${change.changed.join(', ')}` };
  } catch (error) {
    return { ...outcome, ok: false, note: message(error) };
  }
}

/** Tries once to delete a parked image; one still in use stays parked for the next sync. */
export async function tryDelete(act: Proxies, image: ParkedImage): Promise<boolean> {
  try {
    await act.once.deleteImage({ id: image.id });
    return true;
  } catch {
    return false;
  }
}

/** Expire: park under the `_EXPIRED_` name, lock, disable (an image in use cannot be), then delete once unused. */
export async function expireImage(
  act: Proxies,
  old: RegistryImage,
  when: Date,
): Promise<{ outcome: ImageOutcome; parked?: ParkedImage }> {
  const identifier = old.template.IMGFLOW_IMAGE ?? old.name;
  try {
    const name = await park(act, old.id, parkedName(identifier, when));
    await act.registry.lockImage({ id: old.id });
    const disabled = await act.once.setImageEnabled({ id: old.id, enabled: false }).then(
      () => true,
      () => false,
    );
    const parked = { id: old.id, name, identifier };
    if (await tryDelete(act, parked))
      return {
        outcome: { identifier, action: 'expire', ok: true, registryId: old.id, registryName: name, note: 'deleted' },
      };
    const note = `parked as ${name}${disabled ? '' : ', left enabled (in use)'}; deleted once unused`;
    return {
      outcome: { identifier, action: 'expire', ok: true, registryId: old.id, registryName: name, note },
      parked,
    };
  } catch (error) {
    return {
      outcome: {
        identifier,
        action: 'expire',
        ok: false,
        registryId: old.id,
        registryName: old.name,
        note: message(error),
      },
    };
  }
}
