/**
 * Image lists for tests: a typed list with the fields every test list shares, written as the HEPiX
 * document by the product's own writer (`imageListDocument`), so a test names only what it is about.
 * Tests of the parser itself keep their raw documents.
 */
import { createHash } from 'node:crypto';
import type { ImageList, ListedImage } from '../../activities/cloud/imagelist.js';
import { imageListDocument } from '../../activities/cloud/publish.js';

export type TestImage = Pick<ListedImage, 'identifier' | 'size' | 'sha512' | 'uri' | 'version'> & Partial<ListedImage>;

export interface TestList extends Pick<ImageList, 'identifier' | 'version' | 'source' | 'uri'>, Partial<Pick<ImageList, 'title' | 'description' | 'created' | 'expires'>> {
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
