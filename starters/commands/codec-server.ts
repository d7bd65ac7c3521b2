/**
 * `imgflow codec-server`: decodes payloads for the Temporal Web UI, for holders of a valid token
 * only, until SIGINT/SIGTERM.
 */
import type { AddressInfo } from 'node:net';
import type { Command } from 'commander';
import { InputError } from '../../common/names.js';
import { checkAddress } from '../../lib/config.js';
import { configFrom, say, type GlobalFlags } from '../context.js';

interface CodecServerFlags {
  listen: string;
  corsOrigin: string[];
  jwks?: string;
}

/** scheme://host[:port] exactly as a browser sends it in Origin. */
function checkOrigin(value: string): string {
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    /* refused below */
  }
  if (!url || !/^https?:$/.test(url.protocol) || `${url.origin}` !== value.replace(/\/$/, ''))
    throw new InputError('--cors-origin', 'an origin such as http://127.0.0.1:8233', value);
  return url.origin;
}

async function runCodecServer(opts: CodecServerFlags, cmd: Command): Promise<void> {
  const [host, port] = [
    checkAddress(opts.listen)
      .replace(/:\d+$/, '')
      .replace(/^\[|\]$/g, ''),
    Number(opts.listen.split(':').at(-1)),
  ];
  const origins = opts.corsOrigin.map(checkOrigin);
  const [{ AesGcmCodec }, { createCodecServer }, { readJwks }, { readKeyring }, { createLogger }] = await Promise.all([
    import('../../lib/codec.js'),
    import('../../lib/codec-server.js'),
    import('../../lib/jwt.js'),
    import('../../lib/keyring.js'),
    import('../../lib/logger.js'),
  ]);
  const jwksFile = opts.jwks ?? process.env.IMGFLOW_JWKS;
  if (!jwksFile) throw new InputError('--jwks', 'the JSON Web Key Set file that verifies tokens (or env IMGFLOW_JWKS)');
  const jwks = readJwks(jwksFile);
  // The keyring must exist already: a server that made a fresh one could decode nothing.
  const keyring = readKeyring(configFrom(cmd.optsWithGlobals<GlobalFlags>()).codecKeys);
  const logger = createLogger('imgflow-codec-server');
  const server = createCodecServer({ codec: new AesGcmCodec(keyring), jwks, corsOrigins: origins, logger });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, host, resolve));
  const { address, port: bound } = server.address() as AddressInfo;
  say(
    `codec server on http://${address.includes(':') ? `[${address}]` : address}:${bound} (keys: ${keyring.keys.map((k) => k.id).join(', ')}; CORS: ${origins.join(', ') || 'none'})`,
  );
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

export function registerCodecServer(program: Command): void {
  program
    .command('codec-server')
    .description(
      'decode payloads for the Temporal Web UI, for holders of a token that grants read on the namespace; until SIGINT/SIGTERM',
    )
    .option('--listen <host:port>', 'where to listen', '127.0.0.1:8888')
    .option(
      '--cors-origin <url>',
      "the Web UI's origin allowed to call it (repeatable)",
      (v: string, all: string[]) => [...all, v],
      [] as string[],
    )
    .option('--jwks <file>', 'the JSON Web Key Set that verifies bearer tokens (env IMGFLOW_JWKS)')
    .action(runCodecServer);
}
