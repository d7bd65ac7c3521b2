/**
 * Image lists for tests: a typed list with the fields every test list shares, written as the HEPiX
 * document by the product's own writer (`imageListDocument`), so a test names only what it is about.
 * Tests of the parser itself keep their raw documents.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type { ImageList, ListedImage } from '../../activities/cloud/imagelist.js';
import { imageListDocument } from '../../activities/cloud/publish.js';
import type { FileServer } from './http-server.js';
import type { Pki } from './pki.js';

export type TestImage = Pick<ListedImage, 'identifier' | 'size' | 'sha512' | 'uri' | 'version'> & Partial<ListedImage>;

export interface TestList
  extends
    Pick<ImageList, 'identifier' | 'version' | 'source' | 'uri'>,
    Partial<Pick<ImageList, 'title' | 'description' | 'created' | 'expires'>> {
  /** Who the list says endorses it: the subject and issuer of a test PKI identity. */
  endorser: { dn: string; caDn: string };
}

/** The size and sha512 a list states for an image's bytes. */
export function digestOf(body: Buffer): { size: number; sha512: string } {
  return { size: body.length, sha512: createHash('sha512').update(body).digest('hex') };
}

/** The HEPiX JSON document of a list created a minute ago, expiring in a day. */
export function listDocument(list: TestList, images: TestImage[]): string {
  const now = Date.now();
  const typed: ImageList = {
    title: 'Site',
    description: 'Site images',
    created: new Date(now - 60_000).toISOString(),
    expires: new Date(now + 86_400_000).toISOString(),
    ...list,
    endorser: { dn: list.endorser.dn, ca: list.endorser.caDn, email: 'e@example.org', creator: 'Endorser' },
    images: images.map((image) => ({
      title: `Image ${image.identifier}`,
      description: `${image.identifier} ${image.version}`,
      hypervisor: 'QEMU,KVM',
      format: 'qcow2',
      arch: 'x86_64',
      os: 'Linux',
      osVersion: 'Test 1',
      comments: '',
      ...image,
    })),
  };
  return imageListDocument(typed);
}

/** A qcow2 disk whose first `written` bytes hold `pattern` (qemu-io's byte), read back as its bytes. */
export function patternedQcow2(file: string, pattern: string, size = { virtual: '64M', written: '16M' }): Buffer {
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, size.virtual]);
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P ${pattern} 0 ${size.written}`, file], { stdio: 'ignore' });
  return fs.readFileSync(file);
}

/**
 * A publisher of list `listId` holding one image, `img-a`, at version 1.0 or 2.0 (the disks in
 * `bodies`): signed by the PKI's endorser and served at /list.smime, as a swap test goes from one
 * to the other. `tag` names the signed files.
 */
export function oneImageList(
  server: FileServer,
  pki: Pki,
  listId: string,
  bodies: Record<'1.0' | '2.0', Buffer>,
  tag: string,
) {
  return (version: string, imageVersion: '1.0' | '2.0'): void => {
    const body = bodies[imageVersion];
    server.setFile(`/a-${imageVersion}.qcow2`, body);
    const list = listDocument(
      { identifier: listId, version, source: server.url('/'), uri: server.url('/list.smime'), endorser: pki.endorser },
      [{ identifier: 'img-a', ...digestOf(body), uri: server.url(`/a-${imageVersion}.qcow2`), version: imageVersion }],
    );
    server.setFile('/list.smime', fs.readFileSync(pki.sign(list, pki.endorser, `${tag}-${version}`)));
  };
}
