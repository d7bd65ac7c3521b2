/**
 * The client side of image-list subscriptions, shared by the CLI, the demo and the benches: a
 * subscription's settings checked from what was typed (a password file is checked to exist and is
 * never read into a payload), its entity workflow and schedule started and stopped, syncs and
 * adoptions waited for, and what they did as people read it.
 */
import fs from 'node:fs';
import path from 'node:path';
import {
  ScheduleNotFoundError,
  ScheduleOverlapPolicy,
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
  type Client,
} from '@temporalio/client';
import { checkHost, checkName, InputError } from '../common/names.js';
import { isOciUrl } from '../common/oci.js';
import { WORKFLOW_QUEUE } from '../common/queues.js';
import { sendUpdate } from './answers.js';
import { SA } from '../common/search-attributes.js';
import {
  adoptUpdate,
  appliancesQuery,
  describeQuery,
  subscriptionScheduleId,
  subscriptionWorkflowId,
  syncRequestSignal,
  syncUpdate,
  unsubscribeUpdate,
  type Appliance,
  type SubscriptionConfig,
  type SubscriptionView,
  type SyncOutcome,
} from '../workflows/subscription/messages.js';
import {
  checkAbsolutePath,
  checkDn,
  checkEvery,
  checkListUrl,
  checkListIdentifier,
  checkSubscriptionConfig,
  DISK_FORMATS,
  NEW_IMAGE_POLICIES,
  REGISTRY_KINDS,
} from '../common/subscription.js';
import { subscriptionTickWorkflow } from '../workflows/subscription/tick-workflow.js';
import { subscriptionWorkflow } from '../workflows/subscription/workflow.js';
import { currentUser } from './context.js';
import { ociSubscriptionFromOptions } from './oci-subscription.js';
import { formatPairs, formatTable, watchProgress } from './output.js';

export interface SubscribeOptions {
  endorserDn?: string;
  endorserCa?: string;
  caDir?: string;
  every: string;
  newImages: string;
  registry: string;
  username?: string;
  passwordFile?: string;
  credentialsFile?: string;
  format: string;
  stage?: boolean;
  identifier?: string;
  name?: string;
  site?: string;
  insecure?: boolean;
  /** oci:// sources: the public key, the arch picked from an index, the registry's CA. */
  key?: string;
  arch?: string;
  caFile?: string;
}

export function oneOf<T extends string>(field: string, allowed: readonly T[], value: unknown): T {
  if (!allowed.includes(value as T)) throw new InputError(field, `one of ${allowed.join(', ')}`, value);
  return value as T;
}

/** A name from the URL when neither --name nor --identifier gives one: host and file, lower-cased. */
function nameFromUrl(url: string): string {
  const { hostname, pathname } = new URL(url);
  const file = path.posix.basename(pathname).replace(/\.[^.]*$/, '');
  const slug = `${hostname}-${file}`
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/\.{2,}/g, '.')
    .replace(/^[^a-z0-9]+/, '');
  return slug.slice(0, 64).replace(/[^a-z0-9]+$/, '');
}

/** A secret's file must exist and be readable by this user alone; its content stays where it is. */
function checkSecretFile(field: string, file: string): string {
  const absolute = checkAbsolutePath(field, path.resolve(file));
  let stat: fs.Stats;
  try {
    stat = fs.statSync(absolute);
    fs.accessSync(absolute, fs.constants.R_OK);
  } catch {
    throw new InputError(field, 'a readable file', file);
  }
  if (!stat.isFile()) throw new InputError(field, 'a regular file', file);
  if ((stat.mode & 0o077) !== 0) throw new InputError(field, 'a file only its owner can read (chmod 600)', file);
  return absolute;
}

function checkCaDir(dir: string): string {
  const absolute = checkAbsolutePath('--ca-dir', path.resolve(dir));
  if (!fs.existsSync(absolute) || !fs.statSync(absolute).isDirectory())
    throw new InputError('--ca-dir', 'an existing directory of CA certificates', dir);
  return absolute;
}

export function subscriptionFromOptions(url: string, opts: SubscribeOptions, defaultSite: string): SubscriptionConfig {
  if (isOciUrl(url)) return ociSubscriptionFromOptions(url, opts, defaultSite);
  checkListUrl('url', url);
  if (opts.endorserDn === undefined)
    throw new InputError('--endorser-dn', 'the endorser DN the list must be signed by', undefined);
  if (opts.endorserCa === undefined) throw new InputError('--endorser-ca', "the DN of the endorser's CA", undefined);
  const registry = oneOf('--registry', REGISTRY_KINDS, opts.registry);
  if (registry === 'opennebula' && (opts.username === undefined || opts.passwordFile === undefined)) {
    throw new InputError('--registry', 'opennebula with --username and --password-file', registry);
  }
  const identifier = opts.identifier === undefined ? undefined : checkListIdentifier('--identifier', opts.identifier);
  const name = checkName('--name', opts.name ?? identifier?.toLowerCase() ?? nameFromUrl(url));
  const config: SubscriptionConfig = {
    name,
    url,
    endorser: { dn: checkDn('--endorser-dn', opts.endorserDn), ca: checkDn('--endorser-ca', opts.endorserCa) },
    every: checkEvery('--every', opts.every),
    newImages: oneOf('--new-images', NEW_IMAGE_POLICIES, opts.newImages),
    registry,
    format: oneOf('--format', DISK_FORMATS, opts.format),
    stage: opts.stage === true,
    site: checkHost('--site', opts.site ?? defaultSite),
    ...(identifier !== undefined ? { identifier } : {}),
    ...(opts.caDir !== undefined ? { caDir: checkCaDir(opts.caDir) } : {}),
    ...(opts.insecure ? { insecure: true } : {}),
    ...(opts.username !== undefined ? { username: opts.username } : {}),
    ...(opts.passwordFile !== undefined ? { passwordFile: checkSecretFile('--password-file', opts.passwordFile) } : {}),
    ...(opts.credentialsFile !== undefined
      ? { credentialsFile: checkSecretFile('--credentials-file', opts.credentialsFile) }
      : {}),
  };
  return checkSubscriptionConfig(config);
}

function handleOf(client: Client, subscription: string) {
  return client.workflow.getHandle(subscriptionWorkflowId(checkName('subscription', subscription)));
}

/** A missing subscription is the user's mistake: a one-line InputError naming it. */
async function orMissing<T>(subscription: string, work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (error) {
    if (error instanceof WorkflowNotFoundError || (error as Error).name === 'WorkflowNotFoundError')
      throw new InputError('subscription', 'an existing subscription (see imgflow subscriptions)', subscription);
    throw error;
  }
}

/** The update's own reason, not the client's wrapper around it. */
function reasonOf(error: unknown): string {
  const err = error as Error & { cause?: Error };
  return (err.cause?.message ?? err.message).split('\n')[0]!;
}

/** A sync's outcome for people: status, what the plan did, and each failure with its reason. */
export function formatOutcome(outcome: SyncOutcome): string {
  const report = outcome.report;
  const pairs: [string, unknown][] = [
    ['run', outcome.run],
    ['status', outcome.status],
    ['list version', outcome.listVersion],
  ];
  if (outcome.reason) pairs.push(['reason', outcome.reason]);
  if (report) {
    pairs.push(
      ['add', report.add.join(', ') || '-'],
      ['update', report.update.join(', ') || '-'],
      ['metadata', report.metadata.join(', ') || '-'],
    );
    pairs.push(
      ['expire', report.expire.map((e) => e.from).join(', ') || '-'],
      ['offered', report.offered.join(', ') || '-'],
      ['name taken', report.taken?.join(', ') || '-'],
      ['unchanged', report.unchanged.length],
    );
  }
  const outcomes = outcome.outcomes ?? [];
  const staged = outcomes.filter((o) => o.ok && o.action === 'stage');
  if (outcome.status === 'staged')
    pairs.push([
      'staged',
      staged.map((o) => `${o.registryName} (image ${o.registryId}, ${o.imageVersion})`).join(', ') || '-',
    ]);
  for (const failed of outcomes.filter((o) => !o.ok)) pairs.push([`failed ${failed.identifier}`, failed.note]);
  return formatPairs(pairs);
}

/** A sync that refused its list or failed an image (`partial`) failed, for people and scripts alike. */
export function syncFailed(outcome: SyncOutcome): boolean {
  return ['refused', 'partial', 'failed'].includes(outcome.status) || (outcome.outcomes ?? []).some((o) => !o.ok);
}

/** The appliances as a table for people. */
export function formatAppliances(appliances: Appliance[]): string {
  const rows = appliances.map((a) => ({
    ...a,
    version: a.imageVersion,
    registry: a.registryName,
    changed: a.lastChange,
  }));
  return formatTable(
    rows,
    ['subscription', 'identifier', 'version', 'listVersion', 'state', 'registry', 'changed', 'note'],
    ['SUBSCRIPTION', 'IMAGE', 'VERSION', 'LIST', 'STATE', 'REGISTRY NAME', 'LAST CHANGE', 'NOTE'],
  );
}

async function runningSubscriptions(client: Client): Promise<string[]> {
  const names: string[] = [];
  for await (const execution of client.workflow.list({
    query: `WorkflowType = 'subscriptionWorkflow' AND ExecutionStatus = 'Running'`,
  })) {
    names.push(execution.workflowId.replace(/^subscription-/, ''));
  }
  return names.sort();
}

/**
 * Starts the subscription's entity workflow and the schedule that syncs it every `config.every`;
 * returns the workflow id. A name already in use is the user's mistake.
 */
export async function startSubscription(client: Client, config: SubscriptionConfig): Promise<string> {
  const workflowId = subscriptionWorkflowId(config.name);
  try {
    await client.workflow.start(subscriptionWorkflow, {
      taskQueue: WORKFLOW_QUEUE,
      workflowId,
      args: [{ config }],
      typedSearchAttributes: [
        { key: SA.kind, value: 'subscription' },
        { key: SA.subscription, value: config.name },
      ],
      staticSummary: `Subscription ${config.name} to ${config.url}`,
    });
  } catch (error) {
    if (error instanceof WorkflowExecutionAlreadyStartedError)
      throw new InputError('--name', 'a subscription name not yet in use', config.name);
    throw error;
  }
  await client.schedule.create({
    scheduleId: subscriptionScheduleId(config.name),
    spec: { intervals: [{ every: config.every }] },
    action: {
      type: 'startWorkflow',
      workflowType: subscriptionTickWorkflow,
      taskQueue: WORKFLOW_QUEUE,
      workflowId: `${workflowId}-tick`,
      args: [{ subscription: config.name }],
    },
    policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1m' },
  });
  return workflowId;
}

/** Syncs now (or adopts) and waits for the outcome, showing progress. */
export async function syncSubscription(
  client: Client,
  subscription: string,
  verb: 'sync' | 'adopt' = 'sync',
): Promise<SyncOutcome> {
  const handle = handleOf(client, subscription);
  const update = verb === 'sync' ? syncUpdate : adoptUpdate;
  const done = orMissing(
    subscription,
    sendUpdate(client, handle, `subscription ${subscription}`, update, { by: currentUser() }),
  ).catch((error: unknown) => {
    if (error instanceof InputError) throw error;
    // The cause keeps a validator's refusal recognisable as bad input (exit 2).
    throw new Error(`${verb} ${subscription}: ${reasonOf(error)}`, { cause: error });
  });
  return watchProgress(handle, done, `${verb} ${subscription}`);
}

/** Stops the subscription and deletes its schedule; its images stay in the registry. */
export async function stopSubscription(client: Client, subscription: string): Promise<SubscriptionView> {
  const view = await orMissing(
    subscription,
    sendUpdate(client, handleOf(client, subscription), `subscription ${subscription}`, unsubscribeUpdate, {
      by: currentUser(),
    }),
  );
  await client.schedule
    .getHandle(subscriptionScheduleId(subscription))
    .delete()
    .catch((error: unknown) => {
      if (!(error instanceof ScheduleNotFoundError)) throw error;
    });
  return view;
}

/** The subscription's settings and state, or undefined when no such subscription runs. */
export async function describeSubscription(
  client: Client,
  subscription: string,
): Promise<SubscriptionView | undefined> {
  const handle = handleOf(client, subscription);
  try {
    if ((await handle.describe()).status.name !== 'RUNNING') return undefined;
    return await handle.query(describeQuery);
  } catch (error) {
    if (error instanceof WorkflowNotFoundError) return undefined;
    throw error;
  }
}

export async function subscriptionAppliances(client: Client, subscription: string): Promise<Appliance[]> {
  return orMissing(subscription, handleOf(client, subscription).query(appliancesQuery));
}

/** The settings and state of every running subscription, by name. */
export async function listSubscriptions(client: Client): Promise<SubscriptionView[]> {
  return Promise.all((await runningSubscriptions(client)).map((name) => handleOf(client, name).query(describeQuery)));
}

/** The images of one subscription, or of every running one. */
export async function appliancesOf(client: Client, subscription?: string): Promise<Appliance[]> {
  const names = subscription !== undefined ? [subscription] : await runningSubscriptions(client);
  return (await Promise.all(names.map((name) => subscriptionAppliances(client, name)))).flat();
}

/** Asks the subscription for a durable sync (a signal: returns once the server has it). */
export async function requestSync(
  client: Client,
  subscription: string,
  request: { by: string; reason: string },
): Promise<void> {
  await orMissing(subscription, handleOf(client, subscription).signal(syncRequestSignal, request));
}

export { checkListIdentifier } from '../common/subscription.js';
