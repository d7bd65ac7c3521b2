/**
 * Publishing a list as an endorser does, with the real openssl: the CA and endorser are made once
 * and found again, and a signed list reads back through the same verification a subscription runs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ImageList } from '../../activities/cloud/imagelist.js';
import { ensureEndorsement, fileDigest, signImageList } from '../../activities/cloud/publish.js';
import { createRunner } from '../../activities/runner.js';
import { verifyImageList } from '../../activities/cloud/smime.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { requireTools } from '../support/tools.js';

const NAMES = { ca: '/C=XX/O=imgflow test/CN=Publish CA', endorser: '/C=XX/O=imgflow test/CN=Publisher' };

describe('publishing a signed image list', () => {
  requireTools('openssl');
  const dir = tempDir();
  const run = createRunner(memoryLogger().logger);

  it('makes the CA and endorser once, signs a list, and the list verifies to what was published', async () => {
    const endorsement = await ensureEndorsement(run, path.join(dir, 'pki'), NAMES);
    const cert = fs.readFileSync(endorsement.endorser.cert);
    const again = await ensureEndorsement(run, path.join(dir, 'pki'), NAMES);
    expect(again).toEqual(endorsement);
    expect(fs.readFileSync(again.endorser.cert).equals(cert)).toBe(true);
    expect(fs.readdirSync(dir)).toEqual(['pki']);
    expect(fs.readdirSync(endorsement.caDir)).toEqual([expect.stringMatching(/^[0-9a-f]{8}\.0$/)]);

    const disk = path.join(dir, 'disk.img');
    fs.writeFileSync(disk, 'not really a disk');
    const list: ImageList = {
      identifier: 'publish-test',
      title: 'Published',
      description: 'a list',
      source: 'http://127.0.0.1/',
      version: '7',
      uri: 'http://127.0.0.1/list.smime',
      created: new Date(Date.now() - 60_000).toISOString(),
      expires: new Date(Date.now() + 3_600_000).toISOString(),
      endorser: { dn: NAMES.endorser, ca: NAMES.ca, email: 'e@example.org', creator: 'E' },
      images: [
        {
          identifier: 'img',
          title: 'I',
          description: 'd',
          ...(await fileDigest(disk)),
          uri: 'http://127.0.0.1/disk.img',
          version: '1',
          hypervisor: 'KVM',
          format: 'raw',
          arch: 'x86_64',
          os: 'Linux',
          osVersion: '1',
          comments: '',
        },
      ],
    };
    const signed = path.join(dir, 'list.smime');
    await signImageList(run, list, endorsement.endorser, signed);
    expect(fs.readFileSync(signed, 'utf8')).toMatch(/^MIME-Version: 1.0\nContent-Type: multipart\/signed/);

    const verified = await verifyImageList(run, signed, path.join(dir, 'work'), {
      caDir: endorsement.caDir,
      expect: {},
    });
    expect(verified.signer).toEqual({ subject: NAMES.endorser, issuer: NAMES.ca });
    expect(verified.list).toEqual(list);
    expect(verified.list.images[0]!.size).toBe(17);
  });
});
