/** `imgflow ping <queue>`: is a worker polling that host queue, and what is it? */
import type { Command } from 'commander';
import { checkInt, InputError } from '../../common/names.js';
import { connected } from '../context.js';
import { formatPairs, printJson } from '../output.js';

const QUEUE = /^(control|(builder|nas|compute|cloud)\.[a-z0-9_-]{1,63})$/;

export function registerPing(program: Command): void {
  program
    .command('ping')
    .description(
      'check that a worker polls a host queue (builder.<arch>, nas.<host>, compute.<host>, cloud.<site>, control)',
    )
    .argument('<queue>', 'the task queue')
    .option('--wait <seconds>', 'how long to wait for a worker to take it', '10')
    .action(async (queue: string, opts: { wait: string }, cmd: Command) => {
      if (!QUEUE.test(queue))
        throw new InputError('queue', 'builder.<arch>, nas.<host>, compute.<host>, cloud.<site> or control', queue);
      const waitSeconds = checkInt('--wait', opts.wait, 1, 3600);
      const clients = async () => ({ ...(await import('../client.js')), ...(await import('../ping-client.js')) });
      await connected(cmd, clients, async ({ c, client, flags }) => {
        const facts = await c.pingQueue(client, queue, waitSeconds);
        if (flags.json) printJson(facts);
        else process.stdout.write(`${formatPairs(Object.entries(facts))}\n`);
      });
    });
}
