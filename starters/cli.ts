/**
 * The `imgflow` command line: noun and verb, tables for people, `--json` for scripts, one-line
 * errors on stderr and a non-zero exit on any failure.
 */
import { createRequire } from 'node:module';
import type * as commander from 'commander';
import { InputError } from '../common/names.js';
import { registerBridge } from './commands/bridge.js';
import { registerBuild } from './commands/build.js';
import { registerCodecServer } from './commands/codec-server.js';
import { registerCluster } from './commands/cluster.js';
import { registerDemo } from './commands/demo.js';
import { registerEvents } from './commands/events.js';
import { registerLineage } from './commands/lineage.js';
import { registerDev } from './commands/dev.js';
import { registerFleet } from './commands/fleet.js';
import { registerKeys } from './commands/keys.js';
import { registerPing } from './commands/ping.js';
import { registerPush } from './commands/push.js';
import { registerRollout } from './commands/rollout.js';
import { registerSubscriptions } from './commands/subscriptions.js';
import { registerValidate } from './commands/validate.js';
import { registerVolumes } from './commands/volumes.js';
import { registerWorker } from './commands/worker.js';
import { oneLine } from './output.js';

// Commander is CommonJS: required directly it loads in half the time its ES module wrapper takes,
// and `imgflow --help` is mostly start-up.
const { Command, CommanderError } = createRequire(import.meta.url)('commander') as typeof commander;

export function buildProgram(): commander.Command {
  const program = new Command('imgflow')
    .description('durable orchestration of OS and VM images on Temporal')
    .option('--address <host:port>', 'Temporal frontend (env TEMPORAL_ADDRESS)')
    .option('--namespace <name>', 'Temporal namespace (env TEMPORAL_NAMESPACE)')
    .option('--home <dir>', "imgflow's state directory (env IMGFLOW_HOME)")
    .option('--codec-keys <file>', 'the payload keyring (env IMGFLOW_CODEC_KEYS; default <home>/keys/codec.json)')
    .option('--json', 'print results as JSON')
    .option('--tls', 'connect with TLS (on when any TLS file is given; env TEMPORAL_TLS)')
    .option('--tls-cert-path <file>', "this client's certificate (env TEMPORAL_TLS_CLIENT_CERT_PATH)")
    .option('--tls-key-path <file>', "this client's private key (env TEMPORAL_TLS_CLIENT_KEY_PATH)")
    .option('--tls-ca-path <file>', "the CA of the server's certificate (env TEMPORAL_TLS_SERVER_CA_CERT_PATH)")
    .option('--tls-server-name <name>', "the name in the server's certificate (env TEMPORAL_TLS_SERVER_NAME)")
    .option('--api-key <token>', 'bearer token sent with every call (env TEMPORAL_API_KEY; prefer --api-key-file)')
    .option('--api-key-file <file>', 'a file holding the bearer token (env IMGFLOW_API_KEY_FILE)')
    .option(
      '--connect-timeout <seconds>',
      'keep trying to reach the server, with backoff, this long (env IMGFLOW_CONNECT_TIMEOUT; default 30)',
    )
    .option(
      '--answer-timeout <seconds>',
      'wait this long for an orchestrator to answer a read, such as maps, or to take a change (env IMGFLOW_ANSWER_TIMEOUT; default 10)',
    )
    .showSuggestionAfterError()
    .exitOverride()
    .configureOutput({
      writeErr: (text) => process.stderr.write(text.startsWith('error: ') ? `imgflow: ${text.slice(7)}` : text),
    });
  const groups: [string, ((p: commander.Command) => void)[]][] = [
    ['Running imgflow:', [registerDemo, registerDev, registerWorker, registerPing, registerCluster]],
    ['Images:', [registerBuild, registerLineage, registerValidate, registerPush]],
    ['Volumes:', [registerVolumes, registerFleet, registerRollout, registerBridge]],
    ['Image lists:', [registerSubscriptions]],
    ['Events:', [registerEvents]],
    ['Encrypted payloads:', [registerKeys, registerCodecServer]],
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
