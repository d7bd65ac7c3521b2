/**
 * Image-list subscriptions from the command line: subscribe, list, sync now, adopt a staged update,
 * unsubscribe, show appliances, and `vmcatcher-event`, the hook a vmcatcher cache run calls. Every
 * argument is checked before anything reaches Temporal (subscription-client.ts does the work).
 */
import type { Command } from 'commander';
import type { SyncOutcome } from '../../workflows/subscription/messages.js';
import { checkName } from '../../common/names.js';
import { configFrom, connected, say, type GlobalFlags } from '../context.js';
import { formatTable, printJson } from '../output.js';
import type { SubscribeOptions } from '../subscription-client.js';

/** The Temporal side, loaded when a command runs (never for --help). */
const clients = async () => ({ ...(await import('../client.js')), ...(await import('../subscription-client.js')) });

/** A sync's outcome as JSON or for people; exit 1 when it failed. */
function printOutcome(
  outcome: SyncOutcome,
  c: { formatOutcome: (o: SyncOutcome) => string; syncFailed: (o: SyncOutcome) => boolean },
  json: boolean | undefined,
): void {
  if (json) printJson(outcome);
  else process.stdout.write(`${c.formatOutcome(outcome)}\n`);
  if (c.syncFailed(outcome)) process.exitCode = 1;
}

function registerSubscribe(program: Command): void {
  program
    .command('subscribe')
    .description('subscribe to a signed image list; a schedule syncs it into the cloud registry')
    .argument(
      '<url>',
      'the image list URL (http or https), or oci://<registry>/<repository> (every tag an image, signatures checked with --key)',
    )
    .option('--endorser-dn <dn>', 'the endorser the list must be signed by, /C=../O=../CN=..')
    .option('--endorser-ca <dn>', "the endorser's CA, in the same slash form")
    .option(
      '--ca-dir <dir>',
      "hashed CA directory to verify against (default: the worker's, /etc/grid-security/certificates)",
    )
    .option('--every <interval>', 'how often to sync: 30m, 6h, 1d', '6h')
    .option('--new-images <policy>', 'new images: accept (register), subscribe (offer until adopt), refuse', 'accept')
    .option('--registry <kind>', "catalog or opennebula (as the site's cloud worker is configured)", 'catalog')
    .option('--username <user>', 'registry user (opennebula)')
    .option('--password-file <file>', 'file holding the registry password, read on the cloud worker only')
    .option(
      '--credentials-file <file>',
      "file holding user:token for the list's host (what a URL's TOKEN:x-oauth-basic@ carries), read by the control and cloud workers only",
    )
    .option('--format <format>', 'disk format in the registry: qcow2 or raw', 'qcow2')
    .option('--stage', 'syncs stage new and changed images as <id>+STAGED and report; imgflow adopt applies')
    .option('--identifier <id>', "the list's dc:identifier (default: fixed by the first verified list)")
    .option('--name <name>', 'the subscription name (default: from the identifier or the URL)')
    .option('--site <site>', 'the cloud site whose worker holds the registry (default: IMGFLOW_SITE)')
    .option('--insecure', 'do not verify signatures (never for production lists)')
    .option('--key <file>', 'oci:// only: the public key (cosign.pub format) every tag must be signed with')
    .option('--arch <arch>', 'oci:// only: the architecture picked from an index (default: this machine)')
    .option('--ca-file <file>', "oci:// only: the CA of the registry's certificate")
    .action(async (url: string, opts: SubscribeOptions, cmd: Command) => {
      const flags = cmd.optsWithGlobals<GlobalFlags>();
      const settings = configFrom(flags);
      const { withClient, subscriptionFromOptions, startSubscription } = await clients();
      const config = subscriptionFromOptions(url, opts, settings.site);
      await withClient(settings, async ({ client }) => {
        const workflowId = await startSubscription(client, config);
        if (flags.json) printJson({ subscription: config.name, workflowId, config });
        else
          say(
            `subscribed ${config.name} to ${config.url}, syncing every ${config.every}${config.stage ? ' (staged: adopt applies)' : ''}; imgflow sync ${config.name} syncs now`,
          );
      });
    });
}

function registerList(program: Command): void {
  program
    .command('subscriptions')
    .description('list image-list subscriptions')
    .action(async (_opts: unknown, cmd: Command) => {
      await connected(cmd, clients, async ({ c: { listSubscriptions }, client, flags }) => {
        const views = await listSubscriptions(client);
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
        process.stdout.write(
          `${formatTable(rows, ['name', 'url', 'every', 'registry', 'applied', 'staged', 'images', 'last'])}\n`,
        );
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
        await connected(cmd, clients, async ({ c, client, flags }) =>
          printOutcome(await c.syncSubscription(client, subscription, verb), c, flags.json),
        );
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
      await connected(cmd, clients, async ({ c: { stopSubscription }, client, flags }) => {
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
      await connected(cmd, clients, async ({ c: { appliancesOf, formatAppliances }, client, flags }) => {
        const appliances = await appliancesOf(client, opts.subscription);
        if (flags.json) return printJson(appliances);
        process.stdout.write(`${formatAppliances(appliances)}\n`);
      });
    });
}

/** vmcatcher's events that mean the registry should change. */
const VMCATCHER_EVENTS = [
  'AvailablePrefix',
  'AvailablePostfix',
  'ExpirePrefix',
  'ExpirePostfix',
  'ProcessPrefix',
  'ProcessPostfix',
];
const ACTED_ON = ['AvailablePostfix', 'ExpirePostfix'];

function registerVmcatcherEvent(program: Command): void {
  program
    .command('vmcatcher-event')
    .description("vmcatcher's event hook: asks the subscription for a durable sync and returns at once")
    .option('--subscription <name>', 'the subscription (default: the lower-cased VMCATCHER_EVENT_IL_DC_IDENTIFIER)')
    .action(async (opts: { subscription?: string }, cmd: Command) => {
      const env = process.env;
      const { withClient, oneOf, checkListIdentifier, requestSync } = await clients();
      const type = oneOf('VMCATCHER_EVENT_TYPE', VMCATCHER_EVENTS, env.VMCATCHER_EVENT_TYPE);
      const listId =
        env.VMCATCHER_EVENT_IL_DC_IDENTIFIER === undefined
          ? undefined
          : checkListIdentifier('VMCATCHER_EVENT_IL_DC_IDENTIFIER', env.VMCATCHER_EVENT_IL_DC_IDENTIFIER);
      const image =
        env.VMCATCHER_EVENT_DC_IDENTIFIER === undefined
          ? undefined
          : checkListIdentifier('VMCATCHER_EVENT_DC_IDENTIFIER', env.VMCATCHER_EVENT_DC_IDENTIFIER);
      const subscription = checkName('--subscription', opts.subscription ?? listId?.toLowerCase());
      if (!ACTED_ON.includes(type)) return; // the prefix events come before the files exist
      await withClient(configFrom(cmd.optsWithGlobals<GlobalFlags>()), ({ client }) =>
        requestSync(client, subscription, { by: 'vmcatcher', reason: `vmcatcher ${type}${image ? ` ${image}` : ''}` }),
      );
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
