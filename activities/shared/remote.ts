/**
 * Commands on another host's store (a NAS pulling from a compute host, a compute host receiving
 * from its NAS) run over ssh, argv only, unless that host is this one or the worker is told that
 * every host's store is reachable here (`local`, IMGFLOW_SYNC_LOCAL=1: tests and one-host sites).
 */
import { checkHost } from '../../common/names.js';
import { viaSsh } from '../drivers/index.js';
import type { Run } from '../runner.js';

export interface RemoteRun {
  run: Run;
  /** The argv as it runs on this host: the command itself, or ssh to the other host with it. */
  wrap: (argv: string[]) => string[];
}

export function remoteRun(run: Run, here: string, there: string, local: boolean): RemoteRun {
  const wrap = there === here || local ? (argv: string[]) => argv : viaSsh(checkHost('host', there));
  return { run: (argv, options) => run(wrap([...argv]), options), wrap };
}
