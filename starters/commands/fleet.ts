/**
 * `imgflow fleet`: every volume and pack with the version it runs, the channel, tag or pack it
 * came from, and whether that version is current, superseded on its channel, or revoked; grouped
 * by host (the compute host of a volume, the NAS of a pack).
 */
import type { Command } from 'commander';
import { connected } from '../context.js';
import { printJson } from '../output.js';

const clients = async () => ({ ...(await import('../client.js')), ...(await import('../fleet-client.js')) });

export function registerFleet(program: Command): void {
  program
    .command('fleet')
    .description(
      'every volume and pack, the version it runs and where that version stands: current, superseded or revoked',
    )
    .option('--image <image>', 'only what runs this image')
    .action(async (opts: { image?: string }, cmd: Command) => {
      await connected(cmd, clients, async ({ c: { fleet, formatFleet }, client, flags }) => {
        const rows = await fleet(client, opts);
        if (flags.json) return printJson(rows);
        process.stdout.write(`${formatFleet(rows)}\n`);
      });
    });
}
