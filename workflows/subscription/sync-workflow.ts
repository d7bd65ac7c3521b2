/**
 * One sync of one subscription, run by the entity as a child workflow: it fetches and verifies the
 * list on `control`, compares it with the registry on `cloud.<site>`, downloads only what changed
 * and applies it image by image (or stages it, in a dry run).
 */
import { ApplicationFailure, patched, setCurrentDetails } from '@temporalio/workflow';
import type { ListDiff, ListOwner, TakenName } from '../../activities/cloud/imagelist.js';
import type { RegistryImage } from '../../activities/cloud/registry/types.js';
import { checkListIdentifier, type NewImagePolicy, type SubscriptionConfig } from '../../common/subscription.js';
import { addImage, expireImage, swapImage, tryDelete, updateMetadata } from './images.js';
import type { ImageOutcome, ParkedImage, PlanReport, StagedImage, SyncInput, SyncResult } from './messages.js';
import { message } from './notes.js';
import { discardAll, stageAll, stagedCopyOf, stagedImagesOf, stagedRecord, type StagingResult } from './staging.js';
import { cloudProxies, type Proxies } from './sync-activities.js';

function planReport(diff: ListDiff, policy: NewImagePolicy, adoptOffered: boolean): PlanReport {
  const admitted = policy === 'accept' || (policy === 'subscribe' && adoptOffered);
  return {
    add: admitted ? diff.add.map((i) => i.identifier) : [],
    update: diff.update.map((c) => c.image.identifier),
    metadata: diff.metadata.map((c) => c.image.identifier),
    expire: diff.expire.map((i) => ({ identifier: i.template.IMGFLOW_IMAGE ?? i.name, from: i.name })),
    unchanged: diff.unchanged,
    offered: policy === 'subscribe' && !adoptOffered ? diff.add.map((i) => i.identifier) : [],
    refused: policy === 'refuse' ? diff.add.map((i) => i.identifier) : [],
    taken: takenNames(diff).map((t) => t.image.identifier),
  };
}

/** Plans made before names were checked have none. */
function takenNames(diff: ListDiff): TakenName[] {
  return diff.taken ?? [];
}

/** A listed image whose name another image holds: reported, never registered beside it. */
function takenOutcome({ image, holderId, holderList, holderSubscription }: TakenName, owner: ListOwner): ImageOutcome {
  const holder = holderSubscription
    ? `image ${holderId} of subscription ${holderSubscription} (list ${holderList ?? '?'}), which subscription ${owner.subscription} never changes`
    : holderList
      ? `image ${holderId} of list ${holderList}`
      : `image ${holderId}, which no list brought`;
  return {
    identifier: image.identifier,
    action: 'add',
    ok: false,
    title: image.title,
    imageVersion: image.version,
    note: `not added: the name ${image.identifier} is taken by ${holder}`,
  };
}

async function fetchVerified(act: Proxies, input: SyncInput) {
  const sub = input.subscription;
  setCurrentDetails(`**verifying** the list at ${sub.url}`);
  return act.control.fetchImageList({
    subscription: sub.name,
    url: sub.url,
    ...(sub.identifier !== undefined ? { expectedIdentifier: sub.identifier } : {}),
    ...(input.lastAppliedVersion !== undefined ? { lastAppliedVersion: input.lastAppliedVersion } : {}),
    endorser: sub.endorser,
    ...(sub.caDir !== undefined ? { caDir: sub.caDir } : {}),
    insecure: sub.insecure === true,
    ...(sub.credentialsFile !== undefined ? { credentialsFile: sub.credentialsFile } : {}),
    ...(sub.oci ? { oci: sub.oci } : {}),
    // An expired list is fetched only to expire what it brought; the sync applies nothing else of it.
    allowExpired: true,
  });
}

/** The subscription as the owner of the images it registers (its endorser only when the list was verified). */
function ownerOf(sub: SubscriptionConfig, identifier: string, verified: boolean): ListOwner {
  return { identifier, subscription: sub.name, ...(verified ? { endorserDn: sub.endorser.dn } : {}) };
}

const emptyReport = (): PlanReport => ({
  add: [],
  update: [],
  metadata: [],
  expire: [],
  unchanged: [],
  offered: [],
  refused: [],
});

/** Removes every staged image of a list: on unsubscribe, or when a list was refused. */
async function discardStagedRun(act: Proxies, input: SyncInput): Promise<SyncResult> {
  let listIdentifier: string;
  try {
    listIdentifier = checkListIdentifier('stagedList', input.stagedList);
  } catch (error) {
    throw ApplicationFailure.nonRetryable((error as Error).message, 'InputError');
  }
  setCurrentDetails(`**discarding** the staged images of list ${listIdentifier}`);
  const result: StagingResult = { outcomes: [], staged: [], parked: [] };
  const owner = ownerOf(input.subscription, listIdentifier, input.subscription.insecure !== true);
  await discardAll(act, stagedImagesOf(await act.registry.listImagesOf({ listIdentifier, owner })), new Date(), result);
  return {
    listIdentifier,
    listVersion: '',
    verified: false,
    applied: false,
    report: emptyReport(),
    outcomes: result.outcomes,
    parked: [...input.parked, ...result.parked],
    staged: [],
  };
}

/** One sync of one subscription: verify, reconcile, then apply (or stage, in a dry run). */
export async function subscriptionSyncWorkflow(input: SyncInput): Promise<SyncResult> {
  const act = cloudProxies(input);
  const sub = input.subscription;
  if (input.mode === 'discard-staged') return discardStagedRun(act, input);
  let verified;
  try {
    verified = await fetchVerified(act, input);
  } catch (error) {
    throw ApplicationFailure.nonRetryable(`list not applied: ${message(error)}`, 'ListRefused');
  }
  const { list } = verified;
  if (input.expectVersion !== undefined && list.version !== input.expectVersion) {
    throw ApplicationFailure.nonRetryable(
      `list not applied: image list check "staged-version" failed: the list is now version ${list.version}, ${input.expectVersion} was staged; sync to stage it again`,
      'ListRefused',
    );
  }
  const when = new Date(); // workflow time: replays give the same names
  const expired =
    Date.parse(list.expires) <= when.getTime()
      ? `image list check "expires" failed: the list expired at ${list.expires}`
      : undefined;
  const owner = ownerOf(sub, list.identifier, verified.verified);
  const planned = await act.registry.planListUpdate({ list, owner });
  const diff: ListDiff = expired
    ? { add: [], update: [], metadata: [], expire: planned.expire, unchanged: [], taken: [] }
    : planned;
  const report = planReport(diff, sub.newImages, input.adoptOffered === true);
  const result: SyncResult = {
    listIdentifier: list.identifier,
    listVersion: list.version,
    verified: verified.verified,
    applied: false,
    report,
    outcomes: [],
    parked: input.parked,
    ...(expired ? { expired } : {}),
  };
  if (input.mode === 'dry-run') {
    if (!patched('stage-images')) return result;
    const staging = await stageAll(act, owner, diff, report, sub.format, when);
    const failed = staging.outcomes.filter((o) => !o.ok).length;
    setCurrentDetails(
      `**staged** list ${list.identifier} version ${list.version}: ${staging.staged.length} images staged${failed ? `, ${failed} failed` : ''}`,
    );
    return {
      ...result,
      outcomes: [...takenNames(diff).map((taken) => takenOutcome(taken, owner)), ...staging.outcomes],
      staged: staging.staged,
      parked: [...input.parked, ...staging.parked],
    };
  }

  // Adopting: the images staged for this list's bytes are swapped in instead of registered anew.
  const staged = input.useStaged
    ? stagedImagesOf(await act.registry.listImagesOf({ listIdentifier: list.identifier, owner }))
    : [];
  const outcomes: ImageOutcome[] = takenNames(diff).map((taken) => takenOutcome(taken, owner));
  for (const image of diff.add) {
    if (report.add.includes(image.identifier))
      outcomes.push(await addImage(act, owner, image, sub.format, stagedCopyOf(staged, image)));
    else
      outcomes.push({
        identifier: image.identifier,
        action: sub.newImages === 'refuse' ? 'refuse' : 'offer',
        ok: true,
        title: image.title,
        imageVersion: image.version,
      });
  }
  for (const change of diff.update)
    outcomes.push(await swapImage(act, owner, change, 'update', when, sub.format, stagedCopyOf(staged, change.image)));
  const inPlace = patched('metadata-in-place');
  for (const change of diff.metadata)
    outcomes.push(
      inPlace
        ? await updateMetadata(act, owner, change)
        : await swapImage(act, owner, change, 'metadata', when, sub.format),
    );
  const parked: ParkedImage[] = [];
  for (const old of diff.expire) {
    const expired = await expireImage(act, old, when);
    outcomes.push(expired.outcome);
    if (expired.parked) parked.push(expired.parked);
  }
  for (const image of input.parked) {
    if (await tryDelete(act, image))
      outcomes.push({
        identifier: image.identifier,
        action: 'delete',
        ok: true,
        registryId: image.id,
        registryName: image.name,
      });
    else parked.push(image);
  }
  const left: StagedImage[] = [];
  if (input.useStaged) {
    // Staged images a failed swap put back stay for the next adopt; any other is no longer wanted.
    const retry = new Set(outcomes.filter((o) => !o.ok).map((o) => o.identifier));
    const leftovers = stagedImagesOf(await act.registry.listImagesOf({ listIdentifier: list.identifier, owner }));
    const keptFor = (image: RegistryImage) =>
      list.images.find((listed) => retry.has(listed.identifier) && stagedCopyOf([image], listed));
    await discardAll(
      act,
      leftovers.filter((image) => !keptFor(image)),
      when,
      { outcomes, staged: [], parked },
    );
    for (const image of leftovers) {
      const listed = keptFor(image);
      if (listed) left.push(stagedRecord(listed, image.id));
    }
  }
  setCurrentDetails(
    `**done** list ${list.identifier} version ${list.version}: ${outcomes.filter((o) => !o.ok).length} failed of ${outcomes.length} changes`,
  );
  return { ...result, applied: true, outcomes, parked, ...(input.useStaged ? { staged: left } : {}) };
}
