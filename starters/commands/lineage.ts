/**
 * `imgflow tag|tags|promote|rollback|channels|test-result|revoke`: changes to an image's lineage,
 * each a validated update (a bad request is refused before anything is recorded).
 */
import type { Client } from '@temporalio/client';
import type { Command } from 'commander';
import { checkReason, checkTag } from '../../common/lineage.js';
import { InputError } from '../../common/names.js';
import { checkChannel, promoteUpdate, revokeUpdate, rollbackUpdate, tagUpdate, testResultUpdate } from '../../workflows/lineage.js';
import { configFrom, connectClient, type GlobalFlags } from '../context.js';
import { currentUser, describeLineage, lineageHandle, parseImageRef } from '../lineage-client.js';
import { formatPairs, formatTable, printJson } from '../output.js';

type Action<O> = (client: Client, image: string, opts: O) => Promise<unknown>;

/** Connects, runs the action against one image and prints what it returns (a table or JSON). */
function onImage<O>(action: Action<O>, show: (result: never) => string) {
  return async (ref: string, opts: O, cmd: Command) => {
    const flags = cmd.optsWithGlobals<GlobalFlags>();
    const { image } = parseImageRef(ref);
    const { client, connection } = await connectClient(configFrom(flags));
    try {
      const result = await action(client, image, opts);
      if (flags.json) printJson(result);
      else process.stdout.write(`${show(result as never)}\n`);
    } finally {
      await connection.close();
    }
  };
}

export function registerLineage(program: Command): void {
  const pairs = (r: object) => formatPairs(Object.entries(r));
  const table = (columns: string[]) => (rows: Record<string, unknown>[]) => formatTable(rows, columns);

  program
    .command('tag')
    .description('name a version (default: the newest) with an immutable tag (default: <date>-RELEASE-by-<user>)')
    .argument('<image>', 'the image')
    .option('--version <v>', 'the version to tag')
    .option('--name <tag>', 'the tag name')
    .action(
      onImage<{ version?: string; name?: string }>(
        (client, image, o) =>
          lineageHandle(client, image).executeUpdate(tagUpdate, {
            args: [{ by: currentUser(), ...(o.version ? { version: o.version } : {}), ...(o.name ? { name: checkTag('--name', o.name) } : {}) }],
          }),
        pairs,
      ),
    );

  program
    .command('tags')
    .description("list an image's tags")
    .argument('<image>', 'the image')
    .action(
      onImage(
        async (client, image) => Object.entries((await describeLineage(client, image)).tags).map(([name, t]) => ({ tag: name, ...t })),
        table(['tag', 'version', 'at', 'by']),
      ),
    );

  program
    .command('promote')
    .description('point a channel at a tagged version (gated channels need a passed test result, or --force --reason)')
    .argument('<image>', 'the image')
    .requiredOption('--tag <tag>', 'the tag to promote')
    .requiredOption('--to <channel>', 'the channel (test, prod, ...)')
    .option('--force', 'promote without a passed test result')
    .option('--reason <text>', 'why (required with --force)')
    .action(
      onImage<{ tag: string; to: string; force?: boolean; reason?: string }>((client, image, o) => {
        if (o.force) checkReason('--reason', o.reason);
        return lineageHandle(client, image).executeUpdate(promoteUpdate, {
          args: [{ by: currentUser(), tag: checkTag('--tag', o.tag), channel: checkChannel('--to', o.to), ...(o.force ? { force: true } : {}), ...(o.reason ? { reason: o.reason } : {}) }],
        });
      }, pairs),
    );

  program
    .command('rollback')
    .description('move a channel back to its previous entry')
    .argument('<image>', 'the image')
    .requiredOption('--channel <channel>', 'the channel')
    .option('--reason <text>', 'why')
    .action(
      onImage<{ channel: string; reason?: string }>(
        (client, image, o) =>
          lineageHandle(client, image).executeUpdate(rollbackUpdate, { args: [{ by: currentUser(), channel: checkChannel('--channel', o.channel), ...(o.reason ? { reason: o.reason } : {}) }] }),
        pairs,
      ),
    );

  program
    .command('channels')
    .description("show an image's channels: current version and how many entries their history has")
    .argument('<image>', 'the image')
    .action(
      onImage(
        async (client, image) => Object.entries((await describeLineage(client, image)).channels).map(([name, c]) => ({ channel: name, ...c.current, entries: c.entries })),
        table(['channel', 'tag', 'version', 'action', 'at', 'by', 'reason', 'entries']),
      ),
    );

  program
    .command('test-result')
    .description('record whether a tag passed its test (other systems can send the testResult signal instead)')
    .argument('<image>', 'the image')
    .requiredOption('--tag <tag>', 'the tag that was tested')
    .option('--passed', 'the test passed')
    .option('--failed', 'the test failed')
    .option('--note <text>', 'what was tested')
    .action(
      onImage<{ tag: string; passed?: boolean; failed?: boolean; note?: string }>((client, image, o) => {
        if (Boolean(o.passed) === Boolean(o.failed)) throw new InputError('--passed/--failed', 'exactly one of them', undefined);
        return lineageHandle(client, image).executeUpdate(testResultUpdate, {
          args: [{ by: currentUser(), tag: checkTag('--tag', o.tag), passed: Boolean(o.passed), ...(o.note ? { note: o.note } : {}) }],
        });
      }, pairs),
    );

  program
    .command('revoke')
    .description('revoke a version: it can no longer be tagged, promoted or cloned, and says why')
    .argument('<image>', 'the image')
    .requiredOption('--version <v>', 'the version')
    .requiredOption('--reason <text>', 'why')
    .action(
      onImage<{ version: string; reason: string }>(
        (client, image, o) => lineageHandle(client, image).executeUpdate(revokeUpdate, { args: [{ by: currentUser(), version: o.version, reason: checkReason('--reason', o.reason) }] }),
        ({ id, revoked }: { id: string; revoked: object }) => pairs({ version: id, ...revoked }),
      ),
    );
}
