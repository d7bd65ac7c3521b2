import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ImageListError } from '../../activities/cloud/imagelist.js';
import { verifyImageList, verifySmime } from '../../activities/cloud/smime.js';
import { createRunner } from '../../activities/runner.js';
import { checkDn } from '../../common/subscription.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { createPki, type Identity, type Pki } from '../support/pki.js';
import { requireTools } from '../support/tools.js';

const NOW = new Date();
const day = 24 * 3600 * 1000;
const iso = (offsetMs: number) => new Date(NOW.getTime() + offsetMs).toISOString();

function listJson(
  endorser: Identity,
  overrides: Record<string, unknown> = {},
  imageOverrides: Record<string, unknown> = {},
): string {
  return JSON.stringify(
    {
      'hv:imagelist': {
        'dc:date:created': iso(-day),
        'dc:date:expires': iso(30 * day),
        'dc:identifier': 'a1b2c3d4-list',
        'dc:description': 'Test list',
        'dc:title': 'Test',
        'dc:source': 'https://lists.example.org/',
        'hv:version': '5',
        'hv:uri': 'https://lists.example.org/list.smime',
        'hv:endorser': {
          'hv:x509': {
            'hv:dn': endorser.dn,
            'hv:ca': endorser.caDn,
            'hv:email': 'endorser@example.org',
            'dc:creator': 'Endorser',
          },
        },
        'hv:images': [
          {
            'hv:image': {
              'dc:identifier': 'c0ffee00-img',
              'dc:title': 'Alma 9',
              'dc:description': 'Base image',
              'hv:size': 4096,
              'sl:checksum:sha512': 'f'.repeat(128),
              'hv:uri': 'https://images.example.org/alma9.qcow2',
              'hv:version': '9.4',
              'hv:hypervisor': 'QEMU,KVM',
              'sl:arch': 'x86_64',
              'sl:os': 'Linux',
              'sl:osversion': 'AlmaLinux 9',
              'sl:comments': '',
              ...imageOverrides,
            },
          },
        ],
        ...overrides,
      },
    },
    null,
    2,
  );
}

describe('S/MIME image lists verified with openssl', () => {
  const dir = tempDir();
  const run = createRunner(memoryLogger().logger);
  const work = path.join(dir, 'work');
  let pki: Pki;
  const expect_ = { identifier: 'a1b2c3d4-list', lastAppliedVersion: '4', now: NOW };

  beforeAll(() => {
    requireTools('openssl');
    pki = createPki(path.join(dir, 'pki'));
  });

  const verify = (file: string, extra: { insecure?: boolean; lastAppliedVersion?: string } = {}) =>
    verifyImageList(run, file, work, {
      caDir: pki.caDir,
      insecure: extra.insecure,
      expect: { ...expect_, ...(extra.lastAppliedVersion ? { lastAppliedVersion: extra.lastAppliedVersion } : {}) },
    });

  async function refusal(promise: Promise<unknown>): Promise<ImageListError> {
    const error = await promise.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ImageListError);
    return error as ImageListError;
  }

  it('accepts a list signed by its endorser under the trusted CA, with the CRL checked', async () => {
    const file = pki.sign(listJson(pki.endorser), pki.endorser, 'good');
    const result = await verify(file);
    expect(result.verified).toBe(true);
    expect(result.signer).toEqual({
      subject: '/C=CH/O=imgflow test/OU=endorsers/CN=Image Endorser',
      issuer: '/C=CH/O=imgflow test/CN=imgflow Test CA',
    });
    expect(result.list.images.map((i) => i.identifier)).toEqual(['c0ffee00-img']);
    expect(fs.readdirSync(work)).toEqual([]);
  });

  it('refuses a list signed by someone else than the endorser it names', async () => {
    const file = pki.sign(listJson(pki.endorser), pki.otherEndorser, 'other-signer');
    const error = await refusal(verify(file));
    expect(error.check).toBe('signer');
    expect(error.message).toMatch(/signed by \/C=CH\/O=imgflow test\/OU=endorsers\/CN=Someone Else/);
  });

  it('refuses a signer from a CA that is not trusted', async () => {
    const file = pki.sign(listJson(pki.wrongCaSigner), pki.wrongCaSigner, 'wrong-ca');
    const error = await refusal(verify(file));
    expect(error.check).toBe('signature');
    expect(error.message).toMatch(/certificate verify error: unable to get local issuer certificate/);
  });

  it('refuses a signer whose certificate the CRL revokes', async () => {
    const file = pki.sign(listJson(pki.revokedEndorser), pki.revokedEndorser, 'revoked');
    const error = await refusal(verify(file));
    expect(error.check).toBe('signature');
    expect(error.message).toMatch(/certificate revoked/);
  });

  it('refuses an unsigned list', async () => {
    const file = path.join(dir, 'unsigned.json');
    fs.writeFileSync(file, listJson(pki.endorser));
    expect((await refusal(verify(file))).check).toBe('signature');
  });

  it('refuses a list whose body was changed after signing', async () => {
    const file = pki.sign(listJson(pki.endorser), pki.endorser, 'tampered');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('alma9.qcow2', 'evil9.qcow2'));
    const error = await refusal(verify(file));
    expect(error.check).toBe('signature');
    expect(error.message).toMatch(/digest failure/);
  });

  it('refuses an expired list', async () => {
    const file = pki.sign(listJson(pki.endorser, { 'dc:date:expires': iso(-1000) }), pki.endorser, 'expired');
    expect((await refusal(verify(file))).check).toBe('expires');
  });

  it('refuses a list created in the future', async () => {
    const file = pki.sign(listJson(pki.endorser, { 'dc:date:created': iso(day) }), pki.endorser, 'future');
    expect((await refusal(verify(file))).check).toBe('created');
  });

  it('refuses a version lower than the one last applied', async () => {
    const file = pki.sign(listJson(pki.endorser, { 'hv:version': '3' }), pki.endorser, 'old-version');
    const error = await refusal(verify(file));
    expect(error.check).toBe('version');
    expect(error.message).toMatch(/hv:version 3 is lower than 4/);
  });

  it('refuses malformed JSON, even when properly signed', async () => {
    const file = pki.sign('{"hv:imagelist": {', pki.endorser, 'malformed');
    expect((await refusal(verify(file))).check).toBe('json');
  });

  it('refuses a list with a missing field, naming it', async () => {
    const file = pki.sign(listJson(pki.endorser, {}, { 'hv:uri': null }), pki.endorser, 'missing');
    const error = await refusal(verify(file));
    expect(error.check).toBe('required-fields');
    expect(error.message).toMatch(/hv:images\[0\]\.hv:image\.hv:uri is missing/);
  });

  it('refuses an image identifier with path characters', async () => {
    const file = pki.sign(
      listJson(pki.endorser, {}, { 'dc:identifier': '../../etc/cron.d/x' }),
      pki.endorser,
      'path-id',
    );
    expect((await refusal(verify(file))).check).toBe('image-identifier');
  });

  it('refuses a list for another subscription', async () => {
    const file = pki.sign(
      listJson(pki.endorser, { 'dc:identifier': 'someone-elses-list' }),
      pki.endorser,
      'other-list',
    );
    expect((await refusal(verify(file))).check).toBe('identifier');
  });

  it("matches an endorser whose CN holds a '/', as host certificates' names do", async () => {
    const file = pki.sign(listJson(pki.hostEndorser), pki.hostEndorser, 'host-dn');
    const result = await verify(file);
    expect(result.signer?.subject).toBe('/C=CH/O=imgflow test/CN=host/vmcaster.example.org');
    expect(result.list.endorser.dn).toBe(result.signer?.subject);
    expect(checkDn('--endorser-dn', pki.hostEndorser.dn)).toBe(pki.hostEndorser.dn);
  });

  it('skips signature checks only when insecure is asked for, and says so', async () => {
    const plain = path.join(dir, 'insecure.json');
    fs.writeFileSync(plain, listJson(pki.endorser));
    const result = await verify(plain, { insecure: true });
    expect(result).toMatchObject({ verified: false, signer: undefined });
    const signedByStranger = pki.sign(listJson(pki.endorser), pki.wrongCaSigner, 'insecure-signed');
    const body = await verifySmime(run, signedByStranger, work, { insecure: true });
    expect(body.verified).toBe(false);
    expect(JSON.parse(body.body)).toHaveProperty('hv:imagelist');
  });

  it('refuses to verify without any trust anchor configured', async () => {
    const file = pki.sign(listJson(pki.endorser), pki.endorser, 'no-anchor');
    const error = await refusal(verifySmime(run, file, work, {}));
    expect(error.message).toMatch(/no CA directory or CA file configured/);
  });
});
