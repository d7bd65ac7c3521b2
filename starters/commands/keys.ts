/**
 * `imgflow keys new|rotate|list`: the payload keyring. Output names key ids and creation times,
 * never key material.
 */
import type { Command } from 'commander';
import { createKeyring, readKeyring, rotateKeyring, type Keyring } from '../../lib/keyring.js';
import { configFrom, say, type GlobalFlags } from '../context.js';
import { formatTable, printJson } from '../output.js';

function printKeys(keyring: Keyring, json: boolean | undefined): void {
  const rows = keyring.keys.map((k) => ({
    ...k,
    use: k.id === keyring.current.id ? 'encrypts, decrypts' : 'decrypts',
  }));
  if (json) printJson({ file: keyring.file, current: keyring.current.id, keys: rows });
  else process.stdout.write(`${formatTable(rows, ['id', 'created', 'use'])}\n`);
}

export function registerKeys(program: Command): void {
  const keys = program
    .command('keys')
    .description(
      'the payload keyring: the newest key encrypts, every listed key decrypts (--codec-keys or env IMGFLOW_CODEC_KEYS)',
    );
  keys
    .command('new')
    .description('make the keyring with one key (refused if it exists); clients and workers also make it on first use')
    .action((_opts: unknown, cmd: Command) => {
      const flags = cmd.optsWithGlobals<GlobalFlags>();
      const keyring = createKeyring(configFrom(flags).codecKeys);
      say(`made keyring ${keyring.file} (mode 600)`);
      printKeys(keyring, flags.json);
    });
  keys
    .command('rotate')
    .description('add a new key that encrypts from now on; older keys stay to decrypt')
    .action((_opts: unknown, cmd: Command) => {
      const flags = cmd.optsWithGlobals<GlobalFlags>();
      const keyring = rotateKeyring(configFrom(flags).codecKeys);
      say(
        `key ${keyring.current.id} encrypts from now on; copy ${keyring.file} to every host (running workers take it up when they meet it)`,
      );
      printKeys(keyring, flags.json);
    });
  keys
    .command('list')
    .description('the key ids and their creation times, oldest first (never key material)')
    .action((_opts: unknown, cmd: Command) => {
      const flags = cmd.optsWithGlobals<GlobalFlags>();
      printKeys(readKeyring(configFrom(flags).codecKeys), flags.json);
    });
}
