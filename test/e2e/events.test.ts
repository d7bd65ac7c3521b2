/**
 * Events and notifications through the real CLI, on real volumes and a real SMTP server: every
 * lifecycle change of an image and its volumes becomes an event; a webhook receives each one as
 * JSON, signed with an HMAC of its secret, after the retries its first refusals cause; an e-mail
 * address receives the ones its rule chose; `imgflow events` lists them; a receiver that never
 * answers is given up at the rule's bound and shows as failed; the secret is in no payload.
 */
import crypto, { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import type { Payload } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { createBuilderActivities } from '../../activities/builder/index.js';
import { createNotifyActivities } from '../../activities/control/notify.js';
import { createHostActivities } from '../../activities/host.js';
import { createNasActivities } from '../../activities/nas/index.js';
import { createRunner } from '../../activities/runner.js';
import type { ImgflowEvent } from '../../common/events.js';
import { CONTROL_QUEUE, queues, WORKFLOW_QUEUE } from '../../common/queues.js';
import { loadConfig } from '../../lib/config.js';
import { EVENTS_WORKFLOW_ID, type RuleView } from '../../workflows/events/messages.js';
import { lineageWorkflowId } from '../../workflows/lineage/messages.js';
import { imgflowAt } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { saveHistory } from '../support/histories.js';
import { tinyImageRecipe } from '../support/images.js';
import { memoryLogger } from '../support/logger.js';
import { freePort } from '../support/ports.js';
import { startSmtpServer } from '../support/smtp.js';
import { decodePayload, testClient, uniqueQueue, withWorkers } from '../support/temporal.js';
import { requireTools } from '../support/tools.js';
import { storeVersion } from '../support/versions.js';
import { localVolumeHosts } from '../support/volume-hosts.js';
import { until } from '../support/wait.js';

interface Received {
  event: ImgflowEvent;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A webhook receiver that refuses its first `refuse` requests with 503, then accepts. */
async function startReceiver(refuse: number) {
  const accepted: Received[] = [];
  let refused = 0;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
    req.on('end', () => {
      if (refused < refuse) {
        refused++;
        res.writeHead(503).end();
        return;
      }
      accepted.push({ event: JSON.parse(body) as ImgflowEvent, headers: req.headers, body });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hooks/imgflow`,
    accepted,
    refused: () => refused,
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** What a receiver checks: the HMAC of `<t>.<body>` under the shared secret, made within five minutes. */
function signedBy(secret: string, r: Received): boolean {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(String(r.headers['x-imgflow-signature']));
  if (!m) return false;
  const mac = crypto.createHmac('sha256', secret).update(`${m[1]}.${r.body}`).digest('hex');
  return mac === m[2] && Math.abs(Date.now() / 1000 - Number(m[1])) < 300;
}

/** Every payload of a workflow's history, decoded, as text. */
async function historyText(events: unknown[]): Promise<string> {
  const payloads: Payload[] = [];
  const walk = (v: unknown): void => {
    if (!v || typeof v !== 'object') return;
    if (Array.isArray(v)) return v.forEach(walk);
    for (const [k, child] of Object.entries(v)) {
      if (k === 'payloads' && Array.isArray(child)) payloads.push(...(child as Payload[]));
      else walk(child);
    }
  };
  walk(events);
  const decoded = await Promise.all(payloads.map((p) => decodePayload(p)));
  return decoded.map((p) => Buffer.from(p.data ?? []).toString('utf8')).join('\n');
}

describe('events and notifications', () => {
  requireTools('qemu-img', 'qemu-io');
  const dir = tempDir('imgflow-events-');
  const home = path.join(dir, 'home');
  const nasHost = uniqueQueue('nas');
  const nodeHost = uniqueQueue('node');
  const image = `ev${nasHost.slice(-6)}`;
  const volume = `evv${nasHost.slice(-6)}`;
  const run = createRunner(memoryLogger().logger);
  const secret = `whsec-${randomUUID()}`;
  const secretFile = path.join(dir, 'hook.secret');
  fs.writeFileSync(secretFile, `${secret}\n`, { mode: 0o600 });
  const cli = imgflowAt(home);
  const ok = async (...args: string[]) => {
    const r = await cli(...args);
    expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(0);
    return r.stdout;
  };
  const json = async <T>(...args: string[]) => JSON.parse(await ok(...args, '--json')) as T;

  it('delivers every change signed, retried and by e-mail, lists it, and gives up on a dead receiver', async () => {
    const smtp = await startSmtpServer(dir);
    const hook = await startReceiver(2);
    const deadPort = await freePort();
    const { client } = await testClient();
    const activities = {
      ...localVolumeHosts({ home, nasHost, nodeHost, run }),
      [CONTROL_QUEUE]: createNotifyActivities({
        settings: { smtp: { host: smtp.host, port: smtp.port }, from: 'imgflow@test.invalid' },
      }),
    };
    try {
      await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities }, async () => {
        const hookRule = `hook-${image}`;
        await ok(
          'notify',
          'add',
          '--name',
          hookRule,
          '--webhook',
          hook.url,
          '--secret-file',
          secretFile,
          '--image',
          image,
        );
        await ok(
          'notify',
          'add',
          '--name',
          `mail-${image}`,
          '--email',
          'ops@example.org',
          '--image',
          image,
          '--events',
          'image.promote,image.revoke',
        );
        await ok(
          'notify',
          'add',
          '--name',
          `dead-${image}`,
          '--webhook',
          `http://127.0.0.1:${deadPort}/`,
          '--image',
          image,
          '--events',
          'image.tag',
          '--deliver-for',
          '10',
        );

        await storeVersion(client, run, { home, nas: nasHost, image, n: 1 });
        await ok('tag', image, '--version', 'v1', '--name', 'gold');
        await ok('promote', image, '--tag', 'gold', '--to', 'test');
        await ok('map', volume, '--image', `${image}@test`, '--nas', nasHost, '--compute', nodeHost);
        await ok('unmap', volume);
        await ok('delete-volume', volume);
        await ok('revoke', image, '--version', 'v1', '--reason', 'CVE-2026-0001 in openssl');

        const expected = [
          'image.register',
          'image.tag',
          'image.promote',
          'volume.map',
          'volume.mapped',
          'volume.unmapped',
          'volume.deleted',
          'image.revoke',
        ];
        await until(
          'the webhook to accept every event',
          () => expected.every((t) => hook.accepted.some((r) => r.event.type === t)),
          120_000,
        );
        // Its first two attempts were refused, and retried until accepted.
        expect(hook.refused()).toBe(2);
        for (const r of hook.accepted) {
          expect(signedBy(secret, r), r.event.type).toBe(true);
          expect(r.headers['x-imgflow-event']).toBe(r.event.type);
          expect(r.headers['x-imgflow-delivery']).toBe(r.event.id);
          expect(r.event).toMatchObject({ schema: 'imgflow.event/1', image });
        }
        expect(signedBy('another secret', hook.accepted[0]!)).toBe(false);
        const ids = hook.accepted.map((r) => r.event.id);
        expect(new Set(ids).size).toBe(ids.length);
        const promote = hook.accepted.find((r) => r.event.type === 'image.promote')!.event;
        expect(promote).toMatchObject({ by: 'alice', detail: expect.stringContaining('test') });
        expect(hook.accepted.find((r) => r.event.type === 'volume.mapped')!.event).toMatchObject({ volume, image });

        // The mail rule chose promotions and revocations only.
        const mails = await until('two e-mails', () => smtp.messages().length >= 2 && smtp.messages(), 60_000);
        expect(mails).toHaveLength(2);
        expect(mails.map((m) => /^Subject: \[imgflow\] (\S+)/m.exec(m)?.[1]).sort()).toEqual([
          'image.promote',
          'image.revoke',
        ]);
        for (const m of mails) expect(m).toMatch(/^To: ops@example\.org/m);
        expect(mails.join('\n')).toContain('CVE-2026-0001 in openssl');

        // The list, in the order each entity recorded them, and filtered.
        const listed = await json<ImgflowEvent[]>('events', '--image', image);
        const types = listed.map((e) => e.type);
        expect(types.filter((t) => t.startsWith('image.') && t !== 'image.rollback')).toEqual([
          'image.register',
          'image.tag',
          'image.promote',
          'image.revoke',
        ]);
        expect(types.filter((t) => t.startsWith('volume.'))).toEqual([
          'volume.map',
          'volume.mapped',
          'volume.unmapped',
          'volume.deleted',
        ]);
        const volumes = await json<ImgflowEvent[]>('events', '--image', image, '--type', 'volume.*');
        expect(volumes.map((e) => e.type)).toEqual(types.filter((t) => t.startsWith('volume.')));
        expect(await ok('events', '--image', image, '--since', '2999-01-01T00:00:00Z')).toBe('no events\n');
        expect(await ok('events', '--image', image, '--type', 'image.promote')).toMatch(/image\.promote +\S+ +alice/);

        // The dead receiver is given up once its 10 s bound passes; the others delivered everything.
        const rules = await until(
          'the deliveries to settle',
          async () => {
            const all = await json<RuleView[]>('notify', 'list');
            const mine = Object.fromEntries(all.filter((r) => r.image === image).map((r) => [r.name, r]));
            return mine[`dead-${image}`]?.failed === 1 && mine[hookRule]?.delivered === hook.accepted.length && mine;
          },
          90_000,
        );
        expect(rules[`dead-${image}`]!.last).toMatchObject({ ok: false, error: expect.stringMatching(/ECONNREFUSED/) });
        expect(rules[hookRule]).toMatchObject({ failed: 0, target: { webhook: hook.url, secretFile } });
        expect(rules[`mail-${image}`]).toMatchObject({ delivered: 2, failed: 0 });
        expect(await ok('notify', 'list')).toMatch(
          new RegExp(`dead-${image} +http://127\\.0\\.0\\.1:${deadPort}/ +image\\.tag`),
        );

        // The secret's file is named in payloads; the secret itself is in none.
        const delivery = client.workflow.getHandle(`notify-${hookRule}-${promote.id}`);
        for (const handle of [client.workflow.getHandle(EVENTS_WORKFLOW_ID), delivery]) {
          const text = await historyText((await handle.fetchHistory()).events ?? []);
          expect(text).toContain(secretFile);
          expect(text).not.toContain(secret);
        }

        await saveHistory('eventsWorkflow', client.workflow.getHandle(EVENTS_WORKFLOW_ID));
        await saveHistory('deliveryWorkflow', delivery);
        await saveHistory('lineageWorkflow-events', client.workflow.getHandle(lineageWorkflowId(image)));

        await ok('notify', 'remove', `dead-${image}`);
        expect((await json<RuleView[]>('notify', 'list')).map((r) => r.name)).not.toContain(`dead-${image}`);
      });
    } finally {
      smtp.stop();
      await hook.stop();
    }
  }, 300_000);

  it("tells a build's own targets when it starts and ends, and when it fails", async () => {
    const smtp = await startSmtpServer(path.join(dir, 'build-mail'));
    const hook = await startReceiver(0);
    const builds = `evb${nasHost.slice(-6)}`;
    const nas = loadConfig({ home, host: nasHost }, {});
    const activities = {
      'builder.x86_64': {
        ...createHostActivities({ role: 'builder', config: nas, arch: 'x86_64', run }),
        ...createBuilderActivities({ run, config: nas }),
      },
      [queues.nas(nasHost)]: createNasActivities({ run, config: nas }),
      [CONTROL_QUEUE]: createNotifyActivities({
        settings: { smtp: { host: smtp.host, port: smtp.port }, from: 'imgflow@test.invalid' },
      }),
    };
    const received = (build: string) =>
      hook.accepted
        .filter((r) => r.event.build === build)
        .map((r) => r.event.type)
        .sort();
    try {
      await withWorkers({ workflowQueue: WORKFLOW_QUEUE, activities }, async () => {
        const recipe = await tinyImageRecipe(run, dir, builds);
        await ok('build', recipe, '--store', nasHost, '--notify', hook.url, '--notify', 'builds@example.org');
        const done = ['build.finished', 'build.requested', 'build.started'];
        await until('the build events', () => received(`build-${builds}-1`).join() === done.join(), 60_000);
        const finished = hook.accepted.find((r) => r.event.type === 'build.finished')!;
        expect(finished.event).toMatchObject({
          image: builds,
          build: `build-${builds}-1`,
          detail: expect.stringMatching(/^v1 /),
        });
        // A request's own webhook has no secret: its requests are not signed.
        expect(finished.headers['x-imgflow-signature']).toBeUndefined();
        const mails = await until('three e-mails', () => smtp.messages().length >= 3 && smtp.messages(), 60_000);
        expect(mails.map((m) => /^Subject: \[imgflow\] (\S+)/m.exec(m)?.[1]).sort()).toEqual(done);

        // No builder of the arch takes it: the build fails in its bound, and its targets hear of it.
        const nowhere = await tinyImageRecipe(run, dir, builds, { arch: 'aarch64' });
        const failed = await cli('build', nowhere, '--store', nasHost, '--builder-wait', '2', '--notify', hook.url);
        expect(failed.status).toBe(1);
        const failure = await until(
          'the failure event',
          () => hook.accepted.find((r) => r.event.type === 'build.failed' && r.event.image === builds),
          60_000,
        );
        expect(failure.event.detail).toMatch(/builder\.aarch64/);
      });
    } finally {
      smtp.stop();
      await hook.stop();
    }
  }, 300_000);

  it('refuses bad rules and requests in one line, naming the field', async () => {
    const bad = async (field: string, ...args: string[]) => {
      const r = await cli(...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(field);
    };
    await bad('--webhook', 'notify', 'add', '--webhook', 'http://user:pw@example.org/hook');
    await bad('--webhook', 'notify', 'add', '--webhook', 'ftp://example.org/');
    await bad('--email', 'notify', 'add', '--email', 'not an address');
    await bad('--webhook/--email', 'notify', 'add', '--webhook', 'http://a.example/', '--email', 'a@b.example');
    await bad(
      '--secret-file',
      'notify',
      'add',
      '--webhook',
      'http://a.example/',
      '--secret-file',
      path.join(dir, 'none'),
    );
    await bad('--events', 'notify', 'add', '--webhook', 'http://a.example/', '--events', 'image.promote,rm -rf');
    await bad('--deliver-for', 'notify', 'add', '--webhook', 'http://a.example/', '--deliver-for', '99999999');
    await bad('--limit', 'events', '--limit', '0');
    await bad('since', 'events', '--since', 'yesterday');
    await bad('--notify', 'build', path.join(dir, 'missing.yaml'), '--notify', 'http://a.example/x y');
  });
});
