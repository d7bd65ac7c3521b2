/**
 * `imgflow validate <image>[:version] [--fix]`: checks a stored version against the preparation
 * rules and prints each breach; `--fix` prepares a copy again and registers it as a new version.
 * Exit 1 while breaches remain.
 */
import type { Command } from 'commander';
import type { PrepareOptions } from '../../activities/builder/recipe.js';
import type { VersionRecord } from '../../common/lineage.js';
import { checkHost, InputError } from '../../common/names.js';
import type { ValidateResult } from '../../workflows/validate.js';
import { connected, currentUser } from '../context.js';
import { parseImageRef } from '../image-refs.js';
import { printJson } from '../output.js';

/** What the action needs, loaded when it runs (never for --help). */
const clients = async () => ({
  ...(await import('../client.js')),
  ...(await import('../validate-client.js')),
  ...(await import('../../activities/builder/recipe.js')),
  ...(await import('../../activities/builder/validate.js')),
});
type Clients = Awaited<ReturnType<typeof clients>>;

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
function prepareFrom(opts: ValidateFlags, checkPrepareInput: Clients['checkPrepareInput']): PrepareOptions {
  if (opts.removeNetwork && opts.keepNetwork)
    throw new InputError('--remove-network', 'either --remove-network or --keep-network, not both', true);
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

function printResult(
  result: ValidateResult,
  registered: VersionRecord | undefined,
  formatBreaches: Clients['formatBreaches'],
): void {
  const where = `${result.image}:${result.version}`;
  if (result.breaches.length) process.stdout.write(`${formatBreaches(result.breaches)}\n`);
  if (!result.fixed) {
    process.stdout.write(
      result.breaches.length ? `${where}: ${result.breaches.length} breaches\n` : `${where}: ok, no breaches\n`,
    );
    return;
  }
  const { fixed, remaining } = result.fixed;
  if (remaining.length) process.stdout.write(`still broken after the fix:\n${formatBreaches(remaining)}\n`);
  process.stdout.write(
    `${where}: ${fixed.length} of ${result.breaches.length} breaches repaired in ${result.image}:${registered?.id ?? '?'}\n`,
  );
}

export function registerValidate(program: Command): void {
  program
    .command('validate')
    .description('check a version against the preparation rules; --fix records a repaired copy as a new version')
    .argument('<image>', '<image>[:<version or tag>] (default: the newest version)')
    .option('--fix', 'prepare a copy again and register it as a new version')
    .option('--hostname <name>', 'the hostname the image must have')
    .option('--remove-network', 'per-host network identity must be gone (machine-id, host keys, leases)')
    .option('--keep-network', 'per-host network identity may stay (the default)')
    .option('--remove-services <units>', 'comma-separated services that must be disabled and masked')
    .option(
      '--allow-password-hashes',
      "accept password hashes in /etc/shadow (the default when the version's recipe allowed them)",
    )
    .option('--store <nas>', "the NAS whose image store keeps a repaired copy (default: the version's)")
    .option('-m, --message <text>', 'message of a repaired version')
    .action(async (ref: string, opts: ValidateFlags, cmd: Command) => {
      const { image, ref: which } = parseImageRef(ref);
      const c = await clients();
      const prepare = prepareFrom(opts, c.checkPrepareInput);
      const by = currentUser();
      await connected(
        cmd,
        async () => c,
        async ({ client, flags }) => {
          const { result, registered } = await c.validateVersion(client, {
            image,
            ...(which ? { ref: which } : {}),
            prepare,
            fix: opts.fix ?? false,
            by,
            ...(opts.message !== undefined ? { message: opts.message } : {}),
            ...(opts.store !== undefined ? { store: opts.store } : {}),
          });
          if (flags.json) printJson({ ...result, ...(registered ? { registered } : {}) });
          else printResult(result, registered, c.formatBreaches);
          const left = result.fixed ? result.fixed.remaining : result.breaches;
          if (left.length) process.exitCode = 1;
        },
      );
    });
}
