/**
 * Image-list subscriptions from the command line: subscribe, list, sync now, adopt a staged update,
 * unsubscribe, show appliances, and `vmcatcher-event`, the hook a vmcatcher cache run calls. Every
 * argument is checked here before anything reaches Temporal; a password file is checked to exist
 * and is never read into a payload.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ScheduleNotFoundError, ScheduleOverlapPolicy, WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { Command } from 'commander';
import { checkHost, checkName, InputError } from '../../common/names.js';
import { WORKFLOW_QUEUE } from '../../common/queues.js';
import { SA } from '../../common/search-attributes.js';
import { adoptUpdate, appliancesQuery, describeQuery, subscriptionScheduleId, subscriptionWorkflowId, syncRequestSignal, syncUpdate, unsubscribeUpdate, type Appliance, type SubscriptionConfig, type SubscriptionView, type SyncOutcome } from '../../workflows/subscription/messages.js';
import { checkAbsolutePath, checkDn, checkEvery, checkListIdentifier, checkListUrl, checkSubscriptionConfig, DISK_FORMATS, NEW_IMAGE_POLICIES, REGISTRY_KINDS } from '../../common/subscription.js';
import { subscriptionTickWorkflow } from '../../workflows/subscription/tick-workflow.js';
import { subscriptionWorkflow } from '../../workflows/subscription/workflow.js';
import { configFrom, connectClient, currentUser, say, type GlobalFlags } from '../context.js';
import { formatPairs, formatTable, printJson, watchProgress } from '../output.js';

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
}

function oneOf<T extends string>(field: string, allowed: readonly T[], value: unknown): T {
  if (!allowed.includes(value as T)) throw new InputError(field, `one of ${allowed.join(', ')}`, value);
  return value as T;
}

/** A name from the URL when neither --name nor --identifier gives one: host and file, lower-cased. */
function nameFromUrl(url: string): string {
  const { hostname, pathname } = new URL(url);
  const file = path.posix.basename(pathname).replace(/\.[^.]*$/, '');
  const slug = `${hostname}-${file}`.toLowerCase().replace(/[^a-z0-9._-]+/g, '-').replace(/\.{2,}/g, '.').replace(/^[^a-z0-9]+/, '');
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
  if (!fs.existsSync(absolute) || !fs.statSync(absolute).isDirectory()) throw new InputError('--ca-dir', 'an existing directory of CA certificates', dir);
  return absolute;
}

export function subscriptionFromOptions(url: string, opts: SubscribeOptions, defaultSite: string): SubscriptionConfig {
  checkListUrl('url', url);
  if (opts.endorserDn === undefined) throw new InputError('--endorser-dn', 'the endorser DN the list must be signed by', undefined);
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
    ...(opts.credentialsFile !== undefined ? { credentialsFile: checkSecretFile('--credentials-file', opts.credentialsFile) } : {}),
  };
  return checkSubscriptionConfig(config);
}

/** Runs `fn` with a client, closing the connection after. */
async function withClient<T>(cmd: Command, fn: (client: Client, flags: GlobalFlags) => Promise<T>): Promise<T> {
  const flags = cmd.optsWithGlobals<GlobalFlags>();
  const { client, connection } = await connectClient(configFrom(flags));
  try {
    return await fn(client, flags);
  } finally {
    await connection.close();
  }
}

function handleOf(client: Client, subscription: string) {
  return client.workflow.getHandle(subscriptionWorkflowId(checkName('subscription', subscription)));
}

/** A missing subscription is the user's mistake: a one-line InputError naming it. */
async function orMissing<T>(subscription: string, work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (error) {
    if (error instanceof WorkflowNotFoundError || (error as Error).name === 'WorkflowNotFoundError') throw new InputError('subscription', 'an existing subscription (see imgflow subscriptions)', subscription);
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
    pairs.push(['add', report.add.join(', ') || '-'], ['update', report.update.join(', ') || '-'], ['metadata', report.metadata.join(', ') || '-']);
    pairs.push(['expire', report.expire.map((e) => e.from).join(', ') || '-'], ['offered', report.offered.join(', ') || '-'], ['name taken', report.taken?.join(', ') || '-'], ['unchanged', report.unchanged.length]);
  }
  const outcomes = outcome.outcomes ?? [];
  const staged = outcomes.filter((o) => o.ok && o.action === 'stage');
  if (outcome.status === 'staged') pairs.push(['staged', staged.map((o) => `${o.registryName} (image ${o.registryId}, ${o.imageVersion})`).join(', ') || '-']);
  for (const failed of outcomes.filter((o) => !o.ok)) pairs.push([`failed ${failed.identifier}`, failed.note]);
  return formatPairs(pairs);
}

/** A sync that refused its list or failed an image (`partial`) failed, for people and scripts alike. */
export function syncFailed(outcome: SyncOutcome): boolean {
  return ['refused', 'partial', 'failed'].includes(outcome.status) || (outcome.outcomes ?? []).some((o) => !o.ok);
}

function printOutcome(outcome: SyncOutcome, json: boolean | undefined): void {
  if (json) printJson(outcome);
  else process.stdout.write(`${formatOutcome(outcome)}\n`);
  if (syncFailed(outcome)) process.exitCode = 1;
}

/** The appliances as a table for people. */
export function formatAppliances(appliances: Appliance[]): string {
  const rows = appliances.map((a) => ({ ...a, version: a.imageVersion, registry: a.registryName, changed: a.lastChange }));
  return formatTable(rows, ['subscription', 'identifier', 'version', 'listVersion', 'state', 'registry', 'changed', 'note'], ['SUBSCRIPTION', 'IMAGE', 'VERSION', 'LIST', 'STATE', 'REGISTRY NAME', 'LAST CHANGE', 'NOTE']);
}

async function runningSubscriptions(client: Client): Promise<string[]> {
  const names: string[] = [];
  for await (const execution of client.workflow.list({ query: `WorkflowType = 'subscriptionWorkflow' AND ExecutionStatus = 'Running'` })) {
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
    if (error instanceof WorkflowExecutionAlreadyStartedError) throw new InputError('--name', 'a subscription name not yet in use', config.name);
    throw error;
  }
  await client.schedule.create({
    scheduleId: subscriptionScheduleId(config.name),
    spec: { intervals: [{ every: config.every }] },
    action: { type: 'startWorkflow', workflowType: subscriptionTickWorkflow, taskQueue: WORKFLOW_QUEUE, workflowId: `${workflowId}-tick`, args: [{ subscription: config.name }] },
    policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1m' },
  });
  return workflowId;
}

/** Syncs now (or adopts) and waits for the outcome, showing progress. */
export async function syncSubscription(client: Client, subscription: string, verb: 'sync' | 'adopt' = 'sync'): Promise<SyncOutcome> {
  const handle = handleOf(client, subscription);
  const update = verb === 'sync' ? syncUpdate : adoptUpdate;
  const done = orMissing(subscription, handle.executeUpdate(update, { args: [{ by: currentUser() }] })).catch((error: unknown) => {
    if (error instanceof InputError) throw error;
    // The cause keeps a validator's refusal recognisable as bad input (exit 2).
    throw new Error(`${verb} ${subscription}: ${reasonOf(error)}`, { cause: error });
  });
  return watchProgress(handle, done, `${verb} ${subscription}`);
}

/** Stops the subscription and deletes its schedule; its images stay in the registry. */
export async function stopSubscription(client: Client, subscription: string): Promise<SubscriptionView> {
  const view = await orMissing(subscription, handleOf(client, subscription).executeUpdate(unsubscribeUpdate, { args: [{ by: currentUser() }] }));
  await client.schedule
    .getHandle(subscriptionScheduleId(subscription))
    .delete()
    .catch((error: unknown) => {
      if (!(error instanceof ScheduleNotFoundError)) throw error;
    });
  return view;
}

/** The subscription's settings and state, or undefined when no such subscription runs. */
export async function describeSubscription(client: Client, subscription: string): Promise<SubscriptionView | undefined> {
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

function registerSubscribe(program: Command): void {
  program
    .command('subscribe')
    .description('subscribe to a signed image list; a schedule syncs it into the cloud registry')
    .argument('<url>', 'the image list URL (http or https)')
    .option('--endorser-dn <dn>', 'the endorser the list must be signed by, /C=../O=../CN=..')
    .option('--endorser-ca <dn>', "the endorser's CA, in the same slash form")
    .option('--ca-dir <dir>', 'hashed CA directory to verify against (default: the worker\'s, /etc/grid-security/certificates)')
    .option('--every <interval>', 'how often to sync: 30m, 6h, 1d', '6h')
    .option('--new-images <policy>', 'new images: accept (register), subscribe (offer until adopt), refuse', 'accept')
    .option('--registry <kind>', 'catalog or opennebula (as the site\'s cloud worker is configured)', 'catalog')
    .option('--username <user>', 'registry user (opennebula)')
    .option('--password-file <file>', 'file holding the registry password, read on the cloud worker only')
    .option('--credentials-file <file>', "file holding user:token for the list's host (what a URL's TOKEN:x-oauth-basic@ carries), read by the control and cloud workers only")
    .option('--format <format>', 'disk format in the registry: qcow2 or raw', 'qcow2')
    .option('--stage', 'syncs stage new and changed images as <id>+STAGED and report; imgflow adopt applies')
    .option('--identifier <id>', "the list's dc:identifier (default: fixed by the first verified list)")
    .option('--name <name>', 'the subscription name (default: from the identifier or the URL)')
    .option('--site <site>', 'the cloud site whose worker holds the registry (default: IMGFLOW_SITE)')
    .option('--insecure', 'do not verify signatures (never for production lists)')
    .action(async (url: string, opts: SubscribeOptions, cmd: Command) => {
      const flags = cmd.optsWithGlobals<GlobalFlags>();
      const config = subscriptionFromOptions(url, opts, configFrom(flags).site);
      await withClient(cmd, async (client) => {
        const workflowId = await startSubscription(client, config);
        if (flags.json) printJson({ subscription: config.name, workflowId, config });
        else say(`subscribed ${config.name} to ${config.url}, syncing every ${config.every}${config.stage ? ' (staged: adopt applies)' : ''}; imgflow sync ${config.name} syncs now`);
      });
    });
}

function registerList(program: Command): void {
  program
    .command('subscriptions')
    .description('list image-list subscriptions')
    .action(async (_opts: unknown, cmd: Command) => {
      await withClient(cmd, async (client, flags) => {
        const views = await Promise.all((await runningSubscriptions(client)).map((name) => handleOf(client, name).query(describeQuery)));
        if (flags.json) return printJson(views);
        const rows = views.map((v) => ({
          name: v.config.name,
          url: v.config.url,
          every: v.config.every,
          registry: `${v.config.registry}@${v.config.site}`,
          applied: v.lastAppliedVersion,
          staged: v.staged?.listVersion,
          images: v.images,
          last: v.lastSync ? `${v.lastSync.status} ${v.lastSync.at}` : undefined,
        }));
        process.stdout.write(`${formatTable(rows, ['name', 'url', 'every', 'registry', 'applied', 'staged', 'images', 'last'])}\n`);
      });
    });
}

function registerSyncAndAdopt(program: Command): void {
  for (const [verb, description] of [
    ['sync', 'sync a subscription now and wait for the result'],
    ['adopt', 'apply the staged update (and offered images) of a subscription'],
  ] as const) {
    program
      .command(verb)
      .description(description)
      .argument('<subscription>', 'the subscription name')
      .action(async (subscription: string, _opts: unknown, cmd: Command) => {
        checkName('subscription', subscription);
        await withClient(cmd, async (client, flags) => printOutcome(await syncSubscription(client, subscription, verb), flags.json));
      });
  }
}

function registerUnsubscribe(program: Command): void {
  program
    .command('unsubscribe')
    .description('stop a subscription (its images stay in the registry)')
    .argument('<subscription>', 'the subscription name')
    .action(async (subscription: string, _opts: unknown, cmd: Command) => {
      checkName('subscription', subscription);
      await withClient(cmd, async (client, flags) => {
        const view = await stopSubscription(client, subscription);
        if (flags.json) printJson(view);
        else say(`unsubscribed ${subscription}; its ${view.images} images stay in the registry`);
      });
    });
}

function registerAppliances(program: Command): void {
  program
    .command('appliances')
    .description('the images of subscriptions: list version, state, registry name, last change')
    .option('--subscription <name>', 'only this subscription')
    .action(async (opts: { subscription?: string }, cmd: Command) => {
      if (opts.subscription !== undefined) checkName('--subscription', opts.subscription);
      await withClient(cmd, async (client, flags) => {
        const names = opts.subscription !== undefined ? [opts.subscription] : await runningSubscriptions(client);
        const appliances = (await Promise.all(names.map((name) => subscriptionAppliances(client, name)))).flat();
        if (flags.json) return printJson(appliances);
        process.stdout.write(`${formatAppliances(appliances)}\n`);
      });
    });
}

/** vmcatcher's events that mean the registry should change. */
const VMCATCHER_EVENTS = ['AvailablePrefix', 'AvailablePostfix', 'ExpirePrefix', 'ExpirePostfix', 'ProcessPrefix', 'ProcessPostfix'];
const ACTED_ON = ['AvailablePostfix', 'ExpirePostfix'];

function registerVmcatcherEvent(program: Command): void {
  program
    .command('vmcatcher-event')
    .description("vmcatcher's event hook: asks the subscription for a durable sync and returns at once")
    .option('--subscription <name>', 'the subscription (default: the lower-cased VMCATCHER_EVENT_IL_DC_IDENTIFIER)')
    .action(async (opts: { subscription?: string }, cmd: Command) => {
      const env = process.env;
      const type = oneOf('VMCATCHER_EVENT_TYPE', VMCATCHER_EVENTS, env.VMCATCHER_EVENT_TYPE);
      const listId = env.VMCATCHER_EVENT_IL_DC_IDENTIFIER === undefined ? undefined : checkListIdentifier('VMCATCHER_EVENT_IL_DC_IDENTIFIER', env.VMCATCHER_EVENT_IL_DC_IDENTIFIER);
      const image = env.VMCATCHER_EVENT_DC_IDENTIFIER === undefined ? undefined : checkListIdentifier('VMCATCHER_EVENT_DC_IDENTIFIER', env.VMCATCHER_EVENT_DC_IDENTIFIER);
      const subscription = checkName('--subscription', opts.subscription ?? listId?.toLowerCase());
      if (!ACTED_ON.includes(type)) return; // the prefix events come before the files exist
      await withClient(cmd, async (client) => {
        await orMissing(subscription, handleOf(client, subscription).signal(syncRequestSignal, { by: 'vmcatcher', reason: `vmcatcher ${type}${image ? ` ${image}` : ''}` }));
      });
    });
}

export function registerSubscriptions(program: Command): void {
  registerSubscribe(program);
  registerList(program);
  registerSyncAndAdopt(program);
  registerUnsubscribe(program);
  registerAppliances(program);
  registerVmcatcherEvent(program);
}
