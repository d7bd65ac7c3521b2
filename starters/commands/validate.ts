/**
 * `imgflow validate <image>[:version] [--fix]`: checks a stored version against the preparation
 * rules and prints each breach; `--fix` prepares a copy again and registers it as a new version.
 * Exit 1 while breaches remain.
 */
import { randomUUID } from 'node:crypto';
import type { Command } from 'commander';
import { checkPrepareInput, type PrepareOptions } from '../../activities/builder/recipe.js';
import { formatBreaches } from '../../activities/builder/validate.js';
import { checkText } from '../../common/limits.js';
import type { VersionRecord } from '../../common/lineage.js';
import { checkHost, InputError } from '../../common/names.js';
import { WORKFLOW_QUEUE } from '../../common/queues.js';
import { SA } from '../../common/search-attributes.js';
import { registerVersionUpdate } from '../../workflows/lineage/messages.js';
import { validateWorkflow, type ValidateResult } from '../../workflows/validate.js';
import { configFrom, connectClient, currentUser, type GlobalFlags } from '../context.js';
import { fullVersion, lineageHandle, parseImageRef } from '../lineage-client.js';
import { printJson, watchProgress } from '../output.js';

interface ValidateFlags {
  fix?: boolean;
  hostname?: string;
  removeNetwork?: boolean;
  keepNetwork?: boolean;
  removeServices?: string;
  allowPasswordHashes?: boolean;
  store?: string;
  message?: string;
}

/** The rules to check, from the flags; private directories and sharing come from the version. */
function prepareFrom(opts: ValidateFlags): PrepareOptions {
  if (opts.removeNetwork && opts.keepNetwork) throw new InputError('--remove-network', 'either --remove-network or --keep-network, not both', true);
  if (opts.hostname !== undefined) checkHost('--hostname', opts.hostname);
  const services = opts.removeServices === undefined ? [] : opts.removeServices.split(',').filter(Boolean);
  return checkPrepareInput({
    ...(opts.hostname !== undefined ? { hostname: opts.hostname } : {}),
    network: opts.removeNetwork ? 'remove' : 'keep',
    removeServices: services,
    private: [],
    shared: false,
    allowPasswordHashes: opts.allowPasswordHashes ?? false,
  });
}

function printResult(result: ValidateResult, registered: VersionRecord | undefined): void {
  const where = `${result.image}:${result.version}`;
  if (result.breaches.length) process.stdout.write(`${formatBreaches(result.breaches)}\n`);
  if (!result.fixed) {
    process.stdout.write(result.breaches.length ? `${where}: ${result.breaches.length} breaches\n` : `${where}: ok, no breaches\n`);
    return;
  }
  const { fixed, remaining } = result.fixed;
  if (remaining.length) process.stdout.write(`still broken after the fix:\n${formatBreaches(remaining)}\n`);
  process.stdout.write(`${where}: ${fixed.length} of ${result.breaches.length} breaches repaired in ${result.image}:${registered?.id ?? '?'}\n`);
}

export function registerValidate(program: Command): void {
  program
    .command('validate')
    .description("check a version against the preparation rules; --fix records a repaired copy as a new version")
    .argument('<image>', '<image>[:<version or tag>] (default: the newest version)')
    .option('--fix', 'prepare a copy again and register it as a new version')
    .option('--hostname <name>', 'the hostname the image must have')
    .option('--remove-network', 'per-host network identity must be gone (machine-id, host keys, leases)')
    .option('--keep-network', 'per-host network identity may stay (the default)')
    .option('--remove-services <units>', 'comma-separated services that must be disabled and masked')
    .option('--allow-password-hashes', "accept password hashes in /etc/shadow (the default when the version's recipe allowed them)")
    .option('--store <nas>', "the NAS whose image store keeps a repaired copy (default: the version's)")
    .option('-m, --message <text>', 'message of a repaired version')
    .action(async (ref: string, opts: ValidateFlags, cmd: Command) => {
      const flags = cmd.optsWithGlobals<GlobalFlags>();
      const { image, ref: which } = parseImageRef(ref);
      const prepare = prepareFrom(opts);
      const by = currentUser();
      const { client, connection } = await connectClient(configFrom(flags));
      try {
        const version = await fullVersion(client, image, which);
        const id = version.id;
        // A version whose recipe allowed password hashes is checked as its recipe asked.
        const rules = version.allowPasswordHashes ? { ...prepare, allowPasswordHashes: true } : prepare;
        const store = checkHost('--store', opts.store ?? version.artifacts[0]?.host);
        const handle = await client.workflow.start(validateWorkflow, {
          taskQueue: WORKFLOW_QUEUE,
          workflowId: `validate-${image}-${id}-${randomUUID().slice(0, 8)}`,
          args: [{ image, version, prepare: rules, fix: opts.fix ?? false, by, message: opts.message === undefined ? `validate --fix of ${id}` : checkText('--message', opts.message, 'message'), store }],
          typedSearchAttributes: [
            { key: SA.kind, value: 'validate' },
            { key: SA.image, value: image },
            { key: SA.version, value: id },
            { key: SA.arch, value: version.arch },
          ],
          staticSummary: `Validate ${image}:${id}${opts.fix ? ' and fix' : ''} for ${by}`,
        });
        const result = await watchProgress(handle, handle.result(), `validate ${image}:${id}`);
        const registered = result.fixed ? await lineageHandle(client, image).executeUpdate(registerVersionUpdate, { args: [result.fixed.record] }) : undefined;
        if (flags.json) printJson({ ...result, ...(registered ? { registered } : {}) });
        else printResult(result, registered);
        const left = result.fixed ? result.fixed.remaining : result.breaches;
        if (left.length) process.exitCode = 1;
      } finally {
        await connection.close();
      }
    });
}
