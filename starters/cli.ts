/**
 * The `imgflow` command line: noun and verb, tables for people, `--json` for scripts, one-line
 * errors on stderr and a non-zero exit on any failure.
 */
import { Command, CommanderError } from 'commander';
import { InputError } from '../common/names.js';
import { registerBridge } from './commands/bridge.js';
import { registerBuild } from './commands/build.js';
import { registerClusterHosts } from './commands/cluster-hosts.js';
import { registerDemo } from './commands/demo.js';
import { registerLineage } from './commands/lineage.js';
import { registerDev } from './commands/dev.js';
import { registerPing } from './commands/ping.js';
import { registerSubscriptions } from './commands/subscriptions.js';
import { registerValidate } from './commands/validate.js';
import { registerVolumes } from './commands/volumes.js';
import { registerWorker } from './commands/worker.js';
import { oneLine } from './output.js';

/** `imgflow cluster`: the whole topology on one machine; for now, its hosts. */
function registerCluster(program: Command): void {
  registerClusterHosts(program.command('cluster').description('a cluster on this machine: hosts in network namespaces of their own'));
}

export function buildProgram(): Command {
  const program = new Command('imgflow')
    .description('durable orchestration of OS and VM images on Temporal')
    .option('--address <host:port>', 'Temporal frontend (env TEMPORAL_ADDRESS)')
    .option('--namespace <name>', 'Temporal namespace (env TEMPORAL_NAMESPACE)')
    .option('--home <dir>', "imgflow's state directory (env IMGFLOW_HOME)")
    .option('--json', 'print results as JSON')
    .showSuggestionAfterError()
    .exitOverride()
    .configureOutput({ writeErr: (text) => process.stderr.write(text.startsWith('error: ') ? `imgflow: ${text.slice(7)}` : text) });
  const groups: [string, ((p: Command) => void)[]][] = [
    ['Running imgflow:', [registerDemo, registerDev, registerWorker, registerPing, registerCluster]],
    ['Images:', [registerBuild, registerLineage, registerValidate]],
    ['Volumes:', [registerVolumes, registerBridge]],
    ['Image lists:', [registerSubscriptions]],
  ];
  for (const [heading, registers] of groups) {
    program.commandsGroup(heading);
    for (const register of registers) register(program);
  }
  return program;
}

/** Bad input, here or refused by a workflow's validator (its failure keeps the error's type). */
function isInputError(err: unknown): boolean {
  for (let e = err as (Error & { type?: string; cause?: unknown }) | undefined; e; e = e.cause as typeof e) {
    if (e instanceof InputError || e.name === 'InputError' || e.type === 'InputError') return true;
  }
  return false;
}

/** Exit codes: 0 done, 1 failed, 2 bad input (nothing was started or changed). */
export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return Number(process.exitCode ?? 0);
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    process.stderr.write(`imgflow: ${oneLine(err)}\n`);
    return isInputError(err) ? 2 : 1;
  }
}
