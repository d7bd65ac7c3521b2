/** `imgflow ping <queue>`: is a worker polling that host queue, and what is it? */
import type { Command } from 'commander';
import { randomUUID } from 'node:crypto';
import { WorkflowFailedError } from '@temporalio/client';
import { checkInt, InputError } from '../../common/names.js';
import { WORKFLOW_QUEUE } from '../../common/queues.js';
import { pingWorkflow } from '../../workflows/ping.js';
import { configFrom, connectClient, type GlobalFlags } from '../context.js';
import { formatPairs, printJson } from '../output.js';

const QUEUE = /^(control|(builder|nas|compute|cloud)\.[a-z0-9_-]{1,63})$/;

export function registerPing(program: Command): void {
  program
    .command('ping')
    .description('check that a worker polls a host queue (builder.<arch>, nas.<host>, compute.<host>, cloud.<site>, control)')
    .argument('<queue>', 'the task queue')
    .option('--wait <seconds>', 'how long to wait for a worker to take it', '10')
    .action(async (queue: string, opts: { wait: string }, cmd: Command) => {
      if (!QUEUE.test(queue)) throw new InputError('queue', 'builder.<arch>, nas.<host>, compute.<host>, cloud.<site> or control', queue);
      const waitSeconds = checkInt('--wait', opts.wait, 1, 3600);
      const flags = cmd.optsWithGlobals<GlobalFlags>();
      const { client, connection } = await connectClient(configFrom(flags));
      try {
        const facts = await client.workflow
          .execute(pingWorkflow, {
            taskQueue: WORKFLOW_QUEUE,
            workflowId: `ping-${queue}-${randomUUID().slice(0, 8)}`,
            args: [{ queue, waitSeconds }],
            // Bounded even when no orchestrator can run it (none polling, or one without this keyring's keys).
            workflowExecutionTimeout: `${waitSeconds + 30}s`,
          })
          .catch((err: unknown) => {
            // The workflow ran and failed (or timed out): nobody took the activity. Any other error is the server's answer.
            throw err instanceof WorkflowFailedError ? new Error(`no worker answered on ${queue} within ${waitSeconds}s`) : err;
          });
        if (flags.json) printJson(facts);
        else process.stdout.write(`${formatPairs(Object.entries(facts))}\n`);
      } finally {
        await connection.close();
      }
    });
}
