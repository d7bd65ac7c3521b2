/**
 * OCI registries: `imgflow push` (a stored version, annotated and signed, run on its NAS),
 * `imgflow signing-key` (a P-256 key pair, the public half in cosign's PEM format) and
 * `imgflow oci-verify` (resolve, verify and optionally pull an artifact from this machine).
 */
import type { Command } from 'commander';
import fs from 'node:fs';
import path from 'node:path';
import { checkArch, checkInt, InputError } from '../../common/names.js';
import { generateSigningKey, readPublicKey } from '../../activities/oci/cosign.js';
import { formatReference, parseReference } from '../../common/oci.js';
import { clientFor, pullLayers, resolveArtifact, type RegistryAccess } from '../../activities/oci/transfer.js';
import { machineArch } from '../../lib/config.js';
import { connected, say, type GlobalFlags } from '../context.js';
import { formatPairs, printJson } from '../output.js';

interface AccessFlags {
  credentialsFile?: string;
  caFile?: string;
  plainHttp?: boolean;
}

function absolute(field: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (!path.isAbsolute(value)) throw new InputError(field, 'an absolute path', value);
  return value;
}

function accessFrom(opts: AccessFlags): RegistryAccess {
  const credentialsFile = absolute('--credentials-file', opts.credentialsFile);
  const caFile = absolute('--ca-file', opts.caFile);
  return {
    ...(credentialsFile ? { credentialsFile } : {}),
    ...(caFile ? { caFile } : {}),
    ...(opts.plainHttp ? { plainHttp: true } : {}),
  };
}

function print(flags: GlobalFlags, result: object): void {
  if (flags.json) printJson(result);
  else process.stdout.write(`${formatPairs(Object.entries(result))}\n`);
}

export function registerPush(program: Command): void {
  program
    .command('push')
    .description(
      'push a stored version to an OCI registry as an annotated artifact, signed (cosign-compatible); again: uploads nothing',
    )
    .argument('<image>', '<image>[:version|tag] or <image>@<channel>')
    .requiredOption('--to <registry/repository[:tag]>', 'where to (the tag defaults to the version id)')
    .requiredOption('--key <file>', 'the ECDSA P-256 private key (PEM) on the NAS (make one with imgflow signing-key)')
    .option('--nas <host>', 'the NAS whose stored copy is pushed (default: the first storing it)')
    .option('--credentials-file <file>', 'user:password for the registry, a file on the NAS')
    .option('--ca-file <file>', "the CA of the registry's certificate, a file on the NAS")
    .option('--plain-http', 'plain http to a registry on loopback (tests only)')
    .option('--worker-wait <seconds>', "how long to wait for the NAS's worker", '300')
    .action(
      async (
        image: string,
        opts: AccessFlags & { to: string; key: string; nas?: string; workerWait: string },
        cmd: Command,
      ) => {
        const flags = cmd.optsWithGlobals<GlobalFlags>();
        const request = {
          image,
          to: formatReference(parseReference('--to', opts.to)),
          signingKeyFile: absolute('--key', opts.key)!,
          access: accessFrom(opts),
          workerWaitSeconds: checkInt('--worker-wait', opts.workerWait, 1, 86400),
          ...(opts.nas ? { nas: opts.nas } : {}),
        };
        const clients = async () => ({ ...(await import('../client.js')), ...(await import('../push-client.js')) });
        await connected(cmd, clients, async ({ c, client }) => print(flags, await c.pushVersion(client, request)));
      },
    );

  program
    .command('signing-key')
    .description(
      'make an ECDSA P-256 key pair for signing pushes: <prefix>.key (PKCS#8, mode 600) and <prefix>.pub (what cosign verify --key takes)',
    )
    .argument('<prefix>', 'path of the files, without .key/.pub')
    .action((prefix: string, _opts: unknown, cmd: Command) => {
      const flags = cmd.optsWithGlobals<GlobalFlags>();
      const files = { key: `${prefix}.key`, pub: `${prefix}.pub` };
      for (const file of Object.values(files))
        if (fs.existsSync(file)) throw new InputError('prefix', 'a path where no key file exists yet', file);
      const pair = generateSigningKey();
      fs.mkdirSync(path.dirname(path.resolve(files.key)), { recursive: true });
      fs.writeFileSync(files.key, pair.privatePem, { mode: 0o600, flag: 'wx' });
      fs.writeFileSync(files.pub, pair.publicPem, { mode: 0o644, flag: 'wx' });
      say(`made ${files.key} (keep it on the NAS that pushes) and ${files.pub} (give it to subscribers)`);
      print(flags, files);
    });

  program
    .command('oci-verify')
    .description(
      'resolve an artifact for an arch, verify its signature with a public key, and with --out pull its disk layers (digests checked)',
    )
    .argument('<reference>', '<registry>/<repository>:<tag> or @sha256:<digest>')
    .requiredOption('--key <file>', 'the public key (PEM, cosign.pub format)')
    .option('--arch <arch>', 'the architecture to pick from an index (default: this machine)')
    .option('--out <dir>', 'download the disk layers here')
    .option('--credentials-file <file>', 'user:password for the registry')
    .option('--ca-file <file>', "the CA of the registry's certificate")
    .option('--plain-http', 'plain http to a registry on loopback (tests only)')
    .action(
      async (reference: string, opts: AccessFlags & { key: string; arch?: string; out?: string }, cmd: Command) => {
        const flags = cmd.optsWithGlobals<GlobalFlags>();
        const ref = parseReference('reference', reference);
        if (!ref.tag && !ref.digest) throw new InputError('reference', 'a reference with a tag or a digest', reference);
        const arch = checkArch('--arch', opts.arch ?? machineArch());
        const key = await readPublicKey(path.resolve(opts.key));
        const client = await clientFor(ref, accessFrom(opts));
        try {
          const resolved = await resolveArtifact(client, ref, arch, key);
          const files = opts.out ? await pullLayers(client, resolved.manifest, path.resolve(opts.out)) : [];
          print(flags, {
            reference: formatReference(ref),
            digest: resolved.digest,
            manifest: resolved.manifestDigest,
            verified: resolved.verifiedDigest,
            ...(opts.out
              ? {
                  files: files
                    .map((f) => `${f.name} ${f.path} ${f.bytes} bytes${f.cached ? ' (cached)' : ''}`)
                    .join('; '),
                }
              : {}),
          });
        } finally {
          client.close();
        }
      },
    );
}
