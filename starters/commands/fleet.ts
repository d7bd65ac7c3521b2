/**
 * `imgflow fleet`: every volume and pack with the version it runs, the channel, tag or pack it
 * came from, and whether that version is current, superseded on its channel, or revoked; grouped
 * by host (the compute host of a volume, the NAS of a pack).
 */
import type { Command } from 'commander';
import { connected } from '../context.js';
import { formatTable, printJson } from '../output.js';

const clients = async () => ({ ...(await import('../client.js')), ...(await import('../fleet-client.js')) });

export function registerFleet(program: Command): void {
  program
    .command('fleet')
    .description(
      'every volume and pack, the version it runs and where that version stands: current, superseded or revoked',
    )
    .option('--image <image>', 'only what runs this image')
    .action(async (opts: { image?: string }, cmd: Command) => {
      await connected(cmd, clients, async ({ c: { fleet }, client, flags }) => {
        const rows = await fleet(client, opts);
        if (flags.json) return printJson(rows);
        const version = (r: { image: string; version: string; from: string }) =>
          `${r.image}:${r.version}${r.from ? ` (${r.from})` : ''}`;
        process.stdout.write(
          `${formatTable(
            rows.map((r) => ({ ...r, version: version(r) })),
            ['host', 'kind', 'name', 'nas', 'version', 'status', 'detail'],
            ['HOST', 'KIND', 'NAME', 'NAS', 'VERSION (FROM)', 'STATUS', 'DETAIL'],
          )}\n`,
        );
        const count = (s: string) => rows.filter((r) => r.status === s).length;
        const hosts = new Set(rows.map((r) => r.host)).size;
        process.stdout.write(
          `${rows.length} on ${hosts} host${hosts === 1 ? '' : 's'}: ${[
            'current',
            'superseded',
            'revoked',
            'removed',
            'off-channel',
          ]
            .map((s) => `${count(s)} ${s}`)
            .join(', ')}\n`,
        );
      });
    });
}
