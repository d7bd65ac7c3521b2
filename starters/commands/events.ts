/**
 * `imgflow events` lists what happened (every entry a lineage, volume or subscription records),
 * and `imgflow notify` chooses who hears of it: webhooks, signed with an HMAC when given a secret's
 * file, and e-mail addresses.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import {
  checkEmail,
  checkEventsRequest,
  checkPatterns,
  checkSecretFile,
  checkWebhook,
  DEFAULT_DELIVER_FOR,
  DELIVER_FOR_MAX,
  describeTarget,
  type NotifyTarget,
} from '../../common/events.js';
import { checkInt, checkName, InputError } from '../../common/names.js';
import { connected, currentUser } from '../context.js';
import { printJson } from '../output.js';

const clients = async () => ({ ...(await import('../client.js')), ...(await import('../events-client.js')) });

const list = (value: string | undefined) => value?.split(',').map((s) => s.trim());

/** The target of `notify add`; the secret's file must be readable here, and only its path is recorded. */
function targetOf(opts: { webhook?: string; email?: string; secretFile?: string }): NotifyTarget {
  if ((opts.webhook === undefined) === (opts.email === undefined))
    throw new InputError('--webhook/--email', 'exactly one of --webhook URL or --email ADDRESS', undefined);
  if (opts.email !== undefined) {
    if (opts.secretFile !== undefined)
      throw new InputError('--secret-file', 'no secret for an e-mail target', opts.secretFile);
    return { email: checkEmail('--email', opts.email) };
  }
  const webhook = checkWebhook('--webhook', opts.webhook);
  if (opts.secretFile === undefined) return { webhook };
  const secretFile = checkSecretFile('--secret-file', path.resolve(opts.secretFile));
  try {
    fs.accessSync(secretFile, fs.constants.R_OK);
  } catch {
    throw new InputError('--secret-file', 'a readable file holding the webhook secret', opts.secretFile);
  }
  return { webhook, secretFile };
}

export function registerEvents(program: Command): void {
  program
    .command('events')
    .description('what happened, newest last: builds, tags, promotions, revocations, packs, maps, list syncs ...')
    .option('--image <image>', 'only events about this image (its lineage, builds and volumes)')
    .option('--since <time>', 'only events at or after this ISO 8601 time')
    .option('--type <types>', 'only these event types, comma-separated (image.promote, build.*)')
    .option('--limit <n>', 'the newest n (default 50)', '50')
    .action(async (opts: { image?: string; since?: string; type?: string; limit: string }, cmd: Command) => {
      const request = checkEventsRequest(
        {
          ...(opts.image !== undefined ? { image: opts.image } : {}),
          ...(opts.since !== undefined ? { since: opts.since } : {}),
          ...(opts.type !== undefined ? { types: list(opts.type) } : {}),
          limit: Number(opts.limit),
        },
        '--',
      );
      await connected(cmd, clients, async ({ c, client, flags }) => {
        const events = await c.listEvents(client, request);
        if (flags.json) return printJson(events);
        process.stdout.write(`${c.formatEvents(events)}\n`);
      });
    });

  const notify = program.command('notify').description('who hears of events: webhooks and e-mail addresses');
  notify
    .command('add')
    .description('deliver events to a webhook (POST of the event as JSON) or an e-mail address, retried until accepted')
    .option('--webhook <url>', 'an http(s) URL')
    .option('--secret-file <file>', 'sign webhook requests with the secret in this file (HMAC-SHA256 header)')
    .option('--email <address>', 'an e-mail address (the control host sends through IMGFLOW_SMTP)')
    .option('--events <types>', 'only these event types, comma-separated (image.promote, build.*, volume.*)')
    .option('--image <image>', 'only events about this image')
    .option('--name <name>', 'the rule name (default rule-<n>)')
    .option('--deliver-for <seconds>', 'keep retrying a delivery this long', String(DEFAULT_DELIVER_FOR))
    .action(
      async (
        opts: {
          webhook?: string;
          email?: string;
          secretFile?: string;
          events?: string;
          image?: string;
          name?: string;
          deliverFor: string;
        },
        cmd: Command,
      ) => {
        const input = {
          by: currentUser(),
          target: targetOf(opts),
          ...(opts.events !== undefined ? { events: checkPatterns('--events', list(opts.events)) } : {}),
          ...(opts.image !== undefined ? { image: checkName('--image', opts.image) } : {}),
          ...(opts.name !== undefined ? { name: checkName('--name', opts.name) } : {}),
          deliverFor: checkInt('--deliver-for', opts.deliverFor, 10, DELIVER_FOR_MAX),
        };
        await connected(cmd, clients, async ({ c, client, flags }) => {
          const rule = await c.addRule(client, input);
          if (flags.json) return printJson(rule);
          process.stdout.write(`${rule.name}: ${describeTarget(rule.target)}\n`);
        });
      },
    );
  notify
    .command('list')
    .description('the notification rules, with deliveries made and failed')
    .action(async (_opts: unknown, cmd: Command) => {
      await connected(cmd, clients, async ({ c, client, flags }) => {
        const rules = await c.listRules(client);
        if (flags.json) return printJson(rules);
        process.stdout.write(`${c.formatRules(rules)}\n`);
      });
    });
  notify
    .command('remove')
    .description('stop delivering to a rule (deliveries already under way finish)')
    .argument('<name>', 'the rule name')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      checkName('name', name);
      await connected(cmd, clients, async ({ c, client, flags }) => {
        const rule = await c.removeRule(client, name, currentUser());
        if (flags.json) return printJson(rule);
        process.stdout.write(`removed ${rule.name}\n`);
      });
    });
}
