/**
 * `imgflow bridge rocks-amqp`: answers an existing Rocks cluster's NAS requests from RabbitMQ with
 * imgflow's volumes, until SIGINT/SIGTERM. The broker URL may come from the environment so that
 * its password stays out of process listings.
 */
import type { Command } from 'commander';
import { checkHost, checkInt, InputError } from '../../common/names.js';
import { BDEV_MODES } from '../bridges/rocks-options.js';
import { configFrom, type GlobalFlags } from '../context.js';
import { BASE_REF } from '../image-refs.js';

interface RocksFlags {
  url?: string;
  nas: string;
  image?: string;
  exchange: string;
  timeout: string;
  compute: string[];
  bdev: string;
}

/** Resolves on the first SIGINT or SIGTERM. */
function stopSignal(): Promise<string> {
  return new Promise((resolve) => {
    const on = (signal: string) => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(signal);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

async function runRocksAmqp(opts: RocksFlags, cmd: Command): Promise<void> {
  const [
    { withClient },
    { hasWorker },
    { baseVersion },
    { checkAmqpUrl, checkBdevMode, checkExchange, startRocksBridge },
    { WORKFLOW_QUEUE },
    { createLogger },
  ] = await Promise.all([
    import('../client.js'),
    import('../answers.js'),
    import('../volume-client.js'),
    import('../bridges/rocks-amqp.js'),
    import('../../common/queues.js'),
    import('../../lib/logger.js'),
  ]);
  const url = checkAmqpUrl('--url', opts.url ?? process.env.IMGFLOW_BRIDGE_URL ?? '');
  const nas = checkHost('--nas', opts.nas);
  const image = opts.image ?? process.env.IMGFLOW_BRIDGE_IMAGE;
  if (!image) throw new InputError('--image', `${BASE_REF} (or env IMGFLOW_BRIDGE_IMAGE)`);
  const exchange = checkExchange('--exchange', opts.exchange);
  const timeoutSeconds = checkInt('--timeout', opts.timeout, 5, 3600);
  const computeHosts = opts.compute.map((h) => checkHost('--compute', h));
  const bdev = checkBdevMode('--bdev', opts.bdev);
  await withClient(configFrom(cmd.optsWithGlobals<GlobalFlags>()), async ({ client, config }) => {
    const logger = createLogger('imgflow-bridge');
    // With an orchestrator, an image with no version stored on this NAS fails fast (exit 2); without
    // one the bridge serves anyway, answering each request with that error until one polls.
    if (await hasWorker(client, config.namespace, WORKFLOW_QUEUE, 'workflow')) await baseVersion(client, image, nas);
    else
      logger.warn(
        { queue: WORKFLOW_QUEUE, namespace: config.namespace },
        'no orchestrator polls yet: requests are answered with an error until one does',
      );
    const bridge = await startRocksBridge({
      url,
      nas,
      image,
      exchange,
      client,
      namespace: config.namespace,
      logger,
      timeoutSeconds,
      computeHosts,
      bdev,
    });
    const signal = await Promise.race([stopSignal(), bridge.closed.then(() => undefined)]);
    if (signal) logger.info({ signal }, 'stopping: requests in flight finish first');
    await bridge.stop();
  });
}

export function registerBridge(program: Command): void {
  const bridge = program.command('bridge').description('serve clients of older image storage systems from imgflow');
  bridge
    .command('rocks-amqp')
    .description(
      "answer a Rocks cluster's NAS requests (map_zvol, unmap_zvol, del_zvol, list_zvols, zvol attrs) and its compute hosts' (list_initiator, list_dev) from RabbitMQ; runs until SIGINT/SIGTERM",
    )
    .option('--url <amqp-url>', 'the RabbitMQ URL (env IMGFLOW_BRIDGE_URL; the password is never logged)')
    .requiredOption('--nas <host>', 'the NAS host name this bridge answers for: its queue and routing key')
    .option('--image <ref>', `what map_zvol clones: ${BASE_REF} (env IMGFLOW_BRIDGE_IMAGE)`)
    .option('--exchange <name>', 'the direct exchange the frontend publishes to', 'rocks.vm-manage')
    .option(
      '--timeout <seconds>',
      'the bound on each request: its wait in the queue (then refused unrun) and its answer',
      '300',
    )
    .option(
      '--compute <host>',
      "also answer this compute host's requests (list_initiator, list_dev) as its old daemon did; repeatable",
      (h: string, all: string[]) => [...all, h],
      [] as string[],
    )
    .option(
      '--bdev <mode>',
      `block: map only where bdev is a block device Rocks can use (kernel iSCSI or sync mode); any: pass on files and URLs too (${BDEV_MODES.join(', ')})`,
      'block',
    )
    .action(runRocksAmqp);
}
