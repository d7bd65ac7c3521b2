/**
 * The subscription commands as a site runs them: bad input refused in one line with exit 2 and
 * nothing started; then subscribe (a schedule with overlap SKIP), sync, appliances, a vmcatcher
 * event, a staged subscription (sync stages, adopt applies) and unsubscribe against a real server
 * and workers.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ScheduleOverlapPolicy } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createCloudActivities } from '../../activities/cloud/index.js';
import { CatalogRegistry } from '../../activities/cloud/registry/catalog.js';
import { createRunner } from '../../activities/runner.js';
import { CONTROL_QUEUE, queues, WORKFLOW_QUEUE } from '../../common/queues.js';
import { historyQuery } from '../../workflows/subscription/messages.js';
import { imgflow, spawnImgflow, type CliResult } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { digestOf, listDocument } from '../support/imagelists.js';
import { startFileServer, type FileServer } from '../support/http-server.js';
import { memoryLogger } from '../support/logger.js';
import { createPki, type Pki } from '../support/pki.js';
import { NAMESPACE, testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';

/** `imgflow` without blocking this process, whose in-process workers must keep running meanwhile. */
function imgflowAsync(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  const child = spawnImgflow(args, env);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve) => child.on('close', (status) => resolve({ status, stdout, stderr })));
}

function expectOneLineError(result: CliResult, pattern: RegExp, status = 2): void {
  expect(result.stderr.trim().split('\n'), result.stderr).toHaveLength(1);
  expect(result.stderr).toMatch(/^imgflow: /);
  expect(result.stderr).toMatch(pattern);
  expect(result.status).toBe(status);
  expect(result.stdout).toBe('');
}

describe('imgflow subscription commands', () => {
  requireTools('openssl', 'qemu-img');
  const dir = tempDir();
  const unreachable = ['--home', dir, '--address', '127.0.0.1:1'];
  const dn = '/C=CH/O=imgflow test/OU=endorsers/CN=Image Endorser';
  const ca = '/C=CH/O=imgflow test/CN=imgflow Test CA';
  const good = ['subscribe', 'https://lists.example.org/site.smime', '--endorser-dn', dn, '--endorser-ca', ca];
  let pki: Pki;
  let server: FileServer;

  beforeAll(async () => {
    pki = createPki(path.join(dir, 'pki'));
    server = await startFileServer();
  });
  afterAll(() => server.close());

  /** Signs a list of one image, `imageId`, and serves it at `listPath`. */
  function publishList(listId: string, listPath: string, imageId = 'img-a'): void {
    const disk = path.join(dir, `${listId}.qcow2`);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '1M']);
    const body = fs.readFileSync(disk);
    server.setFile(`/${listId}.qcow2`, body);
    const list = listDocument(
      { identifier: listId, version: '1', source: server.url('/'), uri: server.url(listPath), endorser: pki.endorser },
      [{ identifier: imageId, ...digestOf(body), uri: server.url(`/${listId}.qcow2`), version: '1.0' }],
    );
    server.setFile(listPath, fs.readFileSync(pki.sign(list, pki.endorser, listId)));
  }

  const refusals: [string, string[], RegExp, NodeJS.ProcessEnv?][] = [
    [
      'a URL with credentials, not shown back',
      ['subscribe', 'https://TOKEN:x-oauth-basic@lists.example.org/l', '--endorser-dn', dn, '--endorser-ca', ca],
      /^imgflow: url: expected a URL without credentials \(put user:token in a file and give it as --credentials-file\), got "https:\/\/<credentials>@lists\.example\.org\/l"\n/,
    ],
    [
      'a missing credentials file',
      [...good, '--credentials-file', '/nonexistent/creds'],
      /--credentials-file: expected a readable file/,
    ],
    [
      'a file URL',
      ['subscribe', 'file:///etc/passwd', '--endorser-dn', dn, '--endorser-ca', ca],
      /url: expected an http\(s\) URL/,
    ],
    [
      'an unclosed IPv6 bracket',
      ['subscribe', 'http://[::1/list', '--endorser-dn', dn, '--endorser-ca', ca],
      /url: expected an http\(s\) URL without credentials: a host name or \[IPv6\] address, a port from 1 to 65535/,
    ],
    [
      'a port past 65535',
      ['subscribe', 'http://lists.example.org:99999/l', '--endorser-dn', dn, '--endorser-ca', ca],
      /url: expected .*a port from 1 to 65535, got "http:\/\/lists\.example\.org:99999\/l"/,
    ],
    [
      'port 0',
      ['subscribe', 'http://lists.example.org:0/l', '--endorser-dn', dn, '--endorser-ca', ca],
      /url: expected .*a port from 1 to 65535/,
    ],
    ['a missing endorser', ['subscribe', 'https://lists.example.org/l'], /--endorser-dn: expected the endorser DN/],
    [
      'a DN not in slash form',
      [...good.slice(0, 3), 'CN=x, O=y', '--endorser-ca', ca],
      /--endorser-dn: expected a distinguished name in slash form/,
    ],
    [
      'a DN with a trailing blank',
      [...good.slice(0, 3), `${dn} `, '--endorser-ca', ca],
      /--endorser-dn: expected a distinguished name in slash form without blanks around it/,
    ],
    [
      'a DN with a leading blank',
      [...good.slice(0, 5), ` ${ca}`],
      /--endorser-ca: expected a distinguished name in slash form without blanks around it/,
    ],
    [
      'a DN with an empty value',
      [...good.slice(0, 3), '/C=CH/O=', '--endorser-ca', ca],
      /--endorser-dn: expected a distinguished name/,
    ],
    ['a bad interval', [...good, '--every', '0h'], /--every: expected an interval/],
    [
      'an unknown new-images policy',
      [...good, '--new-images', 'maybe'],
      /--new-images: expected one of accept, subscribe, refuse/,
    ],
    [
      'opennebula without a password file',
      [...good, '--registry', 'opennebula', '--username', 'oneadmin'],
      /--registry: expected opennebula with --username and --password-file/,
    ],
    [
      'an identifier with path characters',
      [...good, '--identifier', '../../etc'],
      /--identifier: expected a list identifier/,
    ],
    ['a subscription name with path characters', ['sync', '../etc'], /subscription: expected a name/],
    ['a bad appliances filter', ['appliances', '--subscription', 'a/b'], /--subscription: expected a name/],
    [
      'an unknown vmcatcher event',
      ['vmcatcher-event'],
      /VMCATCHER_EVENT_TYPE: expected one of AvailablePrefix/,
      { VMCATCHER_EVENT_TYPE: 'Reboot' },
    ],
  ];
  it.each(refusals)('refuses %s', (_what, args, pattern, env) => {
    expectOneLineError(imgflow([...unreachable, ...args], env ?? {}), pattern);
  });

  it('refuses a password file others can read, without printing its content', () => {
    const file = path.join(dir, 'one-password');
    fs.writeFileSync(file, 'sekrit-password\n', { mode: 0o644 });
    fs.chmodSync(file, 0o644);
    const result = imgflow([
      ...unreachable,
      ...good,
      '--registry',
      'opennebula',
      '--username',
      'oneadmin',
      '--password-file',
      file,
    ]);
    expectOneLineError(result, /--password-file: expected a file only its owner can read/);
    expect(result.stderr).not.toContain('sekrit');
  });

  it('subscribes with a schedule, syncs, shows appliances, takes a vmcatcher event and unsubscribes', async () => {
    const site = uniqueQueue('site');
    const listId = `list-${site}`;
    publishList(listId, '/list.smime');

    const catalog = new CatalogRegistry({ dir: path.join(dir, 'catalog') });
    const acts = createCloudActivities({
      run: createRunner(memoryLogger().logger),
      config: { home: path.join(dir, 'home'), site },
      registry: catalog,
      trust: { caDir: pki.caDir },
    });
    const base = ['--address', inject('temporalAddress'), '--namespace', NAMESPACE, '--home', dir];
    const { client, connection } = await testClient();
    await withWorkers(
      { workflowQueue: WORKFLOW_QUEUE, activities: { [queues.cloud(site)]: acts, [CONTROL_QUEUE]: acts } },
      async () => {
        const subscribed = await imgflowAsync([
          ...base,
          'subscribe',
          server.url('/list.smime'),
          '--endorser-dn',
          pki.endorser.dn,
          '--endorser-ca',
          pki.endorser.caDn,
          '--ca-dir',
          pki.caDir,
          '--identifier',
          listId,
          '--site',
          site,
          '--every',
          '1h',
        ]);
        expect(subscribed.status, subscribed.stderr).toBe(0);
        expect(subscribed.stderr).toContain(`subscribed ${listId}`);
        const schedule = await client.schedule.getHandle(`subscription-${listId}`).describe();
        expect(schedule.policies.overlap).toBe(ScheduleOverlapPolicy.SKIP);
        expectOneLineError(
          await imgflowAsync([
            ...base,
            'subscribe',
            server.url('/list.smime'),
            '--endorser-dn',
            pki.endorser.dn,
            '--endorser-ca',
            pki.endorser.caDn,
            '--identifier',
            listId,
            '--site',
            site,
          ]),
          /--name: expected a subscription name not yet in use/,
        );

        const synced = await imgflowAsync([...base, '--json', 'sync', listId]);
        expect(synced.status, synced.stderr).toBe(0);
        expect(JSON.parse(synced.stdout)).toMatchObject({
          status: 'applied',
          listVersion: '1',
          report: { add: ['img-a'] },
        });

        const appliances = await imgflowAsync([...base, '--json', 'appliances', '--subscription', listId]);
        expect(JSON.parse(appliances.stdout)).toEqual([
          expect.objectContaining({
            identifier: 'img-a',
            state: 'registered',
            listVersion: '1',
            registryName: 'img-a',
          }),
        ]);
        const table = await imgflowAsync([...base, 'appliances', '--subscription', listId]);
        expect(table.stdout).toMatch(/^SUBSCRIPTION\s+IMAGE\s+VERSION\s+LIST\s+STATE\s+REGISTRY NAME\s+LAST CHANGE/);

        const event = await imgflowAsync([...base, 'vmcatcher-event'], {
          VMCATCHER_EVENT_TYPE: 'AvailablePostfix',
          VMCATCHER_EVENT_IL_DC_IDENTIFIER: listId,
          VMCATCHER_EVENT_DC_IDENTIFIER: 'img-a',
        });
        expect(event.status, event.stderr).toBe(0);
        const entity = client.workflow.getHandle(`subscription-${listId}`);
        await expect
          .poll(
            async () =>
              (await entity.query(historyQuery, {})).some(
                (e) => e.op === 'sync' && e.detail.includes('vmcatcher AvailablePostfix img-a'),
              ),
            { timeout: 30_000 },
          )
          .toBe(true);

        await expect
          .poll(
            async () =>
              JSON.parse((await imgflowAsync([...base, '--json', 'subscriptions'])).stdout || '[]').map(
                (v: { config: { name: string } }) => v.config.name,
              ),
            { timeout: 30_000 },
          )
          .toContain(listId);

        // A staged subscription: sync stages img-s under its test name and says so; adopt applies it.
        const stagedList = `${listId}-staged`;
        publishList(stagedList, '/staged.smime', 'img-s');
        const stagedSub = await imgflowAsync([
          ...base,
          'subscribe',
          server.url('/staged.smime'),
          '--endorser-dn',
          pki.endorser.dn,
          '--endorser-ca',
          pki.endorser.caDn,
          '--ca-dir',
          pki.caDir,
          '--identifier',
          stagedList,
          '--site',
          site,
          '--stage',
        ]);
        expect(stagedSub.stderr).toContain('(staged: adopt applies)');
        const stagedSync = await imgflowAsync([...base, 'sync', stagedList]);
        expect(stagedSync.status, stagedSync.stderr).toBe(0);
        expect(stagedSync.stdout).toMatch(/status\s+staged/);
        expect(stagedSync.stdout).toMatch(/staged\s+img-s\+STAGED \(image \d+, 1\.0\)/);
        expect((await catalog.list({ imageList: stagedList })).map((i) => [i.name, i.mode])).toEqual([
          ['img-s+STAGED', '700'],
        ]);
        const adopted = await imgflowAsync([...base, '--json', 'adopt', stagedList]);
        expect(adopted.status, adopted.stderr).toBe(0);
        expect(JSON.parse(adopted.stdout), adopted.stdout).toMatchObject({
          status: 'applied',
          outcomes: [{ identifier: 'img-s', action: 'add', ok: true }],
        });
        expect((await catalog.list({ imageList: stagedList })).map((i) => i.name)).toEqual(['img-s']);
        expectOneLineError(
          await imgflowAsync([...base, 'adopt', stagedList]),
          /subscription: expected a staged report or offered images to adopt/,
        );
        expect((await imgflowAsync([...base, 'unsubscribe', stagedList])).status).toBe(0);

        const gone = await imgflowAsync([...base, 'unsubscribe', listId]);
        expect(gone.status, gone.stderr).toBe(0);
        await expect(client.schedule.getHandle(`subscription-${listId}`).describe()).rejects.toThrow();
        expectOneLineError(
          await imgflowAsync([...base, 'sync', listId]),
          /subscription: expected an existing subscription/,
        );
      },
    );
    await connection.close();
  });
});
