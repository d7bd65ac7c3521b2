import { describe, expect, it } from 'vitest';
import {
  checkImageList,
  checkSigner,
  compareVersions,
  diffList,
  ImageListError,
  imageTemplate,
  parseImageList,
  type ImageList,
} from '../../activities/cloud/imagelist.js';
import { parkedName } from '../../common/subscription.js';
import type { RegistryImage } from '../../activities/cloud/registry/types.js';

const NOW = new Date('2026-06-01T12:00:00Z');
const SHA_A = 'a'.repeat(128);
const SHA_B = 'b'.repeat(128);

function entry(id: string, overrides: Record<string, unknown> = {}) {
  return {
    'hv:image': {
      'dc:identifier': id,
      'dc:title': `Image ${id}`,
      'dc:description': 'A test image',
      'hv:size': 1024,
      'sl:checksum:sha512': SHA_A,
      'hv:uri': `https://images.example.org/${id}.qcow2`,
      'hv:version': '1.0',
      'hv:hypervisor': 'QEMU,KVM',
      'hv:format': 'qcow2',
      'sl:arch': 'x86_64',
      'sl:os': 'Linux',
      'sl:osversion': 'AlmaLinux 9',
      'sl:comments': '',
      ...overrides,
    },
  };
}

function document(overrides: Record<string, unknown> = {}, images = [entry('img-a'), entry('img-b')]) {
  return {
    'hv:imagelist': {
      'dc:date:created': '2026-05-01T00:00:00Z',
      'dc:date:expires': '2026-07-01T00:00:00Z',
      'dc:identifier': 'list-0001',
      'dc:description': 'Test list',
      'dc:title': 'Test',
      'dc:source': 'https://lists.example.org/',
      'hv:version': '3.2',
      'hv:uri': 'https://lists.example.org/list-0001.smime',
      'hv:endorser': {
        'hv:x509': {
          'hv:dn': '/C=CH/O=x/CN=Endorser',
          'hv:ca': '/C=CH/O=x/CN=CA',
          'hv:email': 'e@example.org',
          'dc:creator': 'Endorser',
        },
      },
      'hv:images': images,
      ...overrides,
    },
  };
}

const parse = (doc: unknown) => parseImageList(JSON.stringify(doc));
const failure = (fn: () => unknown): ImageListError => {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ImageListError);
    return error as ImageListError;
  }
  throw new Error('expected an ImageListError');
};

describe('image list parsing and checks', () => {
  it('parses a well-formed list into typed fields', () => {
    const list = parse(document());
    expect(list).toMatchObject({
      identifier: 'list-0001',
      version: '3.2',
      endorser: { dn: '/C=CH/O=x/CN=Endorser', ca: '/C=CH/O=x/CN=CA' },
    });
    expect(list.images[0]).toMatchObject({
      identifier: 'img-a',
      size: 1024,
      sha512: SHA_A,
      format: 'qcow2',
      osVersion: 'AlmaLinux 9',
    });
    expect(checkImageList(list, { identifier: 'list-0001', lastAppliedVersion: '3.1', now: NOW })).toBe(list);
  });

  it('refuses malformed JSON, naming the check', () => {
    const error = failure(() => parseImageList('{"hv:imagelist": '));
    expect(error.check).toBe('json');
    expect(error.message).toMatch(/^image list check "json" failed: the list is not valid JSON/);
  });

  it('refuses missing fields, naming the field', () => {
    const list = document();
    delete (list['hv:imagelist'] as Record<string, unknown>)['dc:identifier'];
    expect(failure(() => parse(list)).message).toBe(
      'image list check "required-fields" failed: dc:identifier is missing',
    );
    const noSha = document({}, [entry('img-a', { 'sl:checksum:sha512': undefined })]);
    expect(failure(() => parse(noSha)).message).toMatch(/hv:images\[0\]\.hv:image\.sl:checksum:sha512 is missing/);
    const noEndorser = document({ 'hv:endorser': {} });
    expect(failure(() => parse(noEndorser)).message).toMatch(/hv:endorser\.hv:x509 is missing/);
    expect(failure(() => parse({})).check).toBe('required-fields');
  });

  it('refuses image identifiers with path characters', () => {
    for (const id of ['../etc/passwd', 'a/b', '..', 'x y', '.hidden', 'a\\b']) {
      const error = failure(() => parse(document({}, [entry(id)])));
      expect(error.check).toBe('image-identifier');
    }
    expect(failure(() => parse(document({}, [entry('same'), entry('same')]))).message).toMatch(/appears twice/);
  });

  it('refuses a bad digest, size or non-http URI', () => {
    expect(failure(() => parse(document({}, [entry('a', { 'sl:checksum:sha512': 'abc' })]))).message).toMatch(
      /128 hex digits/,
    );
    expect(failure(() => parse(document({}, [entry('a', { 'hv:size': -1 })]))).message).toMatch(
      /hv:size must be a whole number/,
    );
    expect(failure(() => parse(document({}, [entry('a', { 'hv:uri': 'file:///etc/shadow' })]))).message).toMatch(
      /hv:uri must be an http\(s\) URL/,
    );
  });

  it('refuses a list with another identifier than the subscription expects', () => {
    expect(failure(() => checkImageList(parse(document()), { identifier: 'list-0002', now: NOW })).check).toBe(
      'identifier',
    );
  });

  it('refuses a list created in the future', () => {
    const list = parse(document({ 'dc:date:created': '2026-06-02T00:00:00Z' }));
    expect(failure(() => checkImageList(list, { identifier: 'list-0001', now: NOW })).check).toBe('created');
  });

  it('refuses an expired list', () => {
    const list = parse(document({ 'dc:date:expires': '2026-05-31T00:00:00Z' }));
    const error = failure(() => checkImageList(list, { identifier: 'list-0001', now: NOW }));
    expect(error.check).toBe('expires');
    expect(error.message).toMatch(/expired at 2026-05-31/);
  });

  it('refuses a version lower than the one last applied (a replay), accepts the same one', () => {
    const list = parse(document({ 'hv:version': '3.2' }));
    expect(
      failure(() => checkImageList(list, { identifier: 'list-0001', lastAppliedVersion: '3.10', now: NOW })).check,
    ).toBe('version');
    expect(() => checkImageList(list, { identifier: 'list-0001', lastAppliedVersion: '3.2', now: NOW })).not.toThrow();
  });

  it('orders versions numerically part by part', () => {
    expect(compareVersions('1.10', '1.9')).toBe(1);
    expect(compareVersions('20240101', '20240102')).toBe(-1);
    expect(compareVersions('2.0', '2.0')).toBe(0);
    expect(compareVersions('2.0.1', '2.0')).toBe(1);
  });

  it('compares the signer with the endorser named in the list', () => {
    const list = parse(document());
    expect(() => checkSigner(list, { subject: '/C=CH/O=x/CN=Endorser', issuer: '/C=CH/O=x/CN=CA' })).not.toThrow();
    expect(failure(() => checkSigner(list, { subject: '/C=CH/O=x/CN=Other', issuer: '/C=CH/O=x/CN=CA' })).check).toBe(
      'signer',
    );
    expect(
      failure(() => checkSigner(list, { subject: '/C=CH/O=x/CN=Endorser', issuer: '/C=CH/O=x/CN=Other CA' })).check,
    ).toBe('signer-ca');
  });

  it('names expired images with a UTC timestamp', () => {
    expect(parkedName('img-a', new Date('2026-03-04T05:06:07Z'))).toBe('img-a_EXPIRED_2026-03-04_05-06-07_UTC');
  });
});

describe('reconciling a list with the registry', () => {
  let nextId = 10;
  function registered(list: ImageList, id: string, overrides: Record<string, string> = {}, name = id): RegistryImage {
    const image = list.images.find((i) => i.identifier === id)!;
    return {
      id: nextId++,
      name,
      state: 'READY',
      ownerId: 0,
      groupId: 0,
      mode: '640',
      template: { ...imageTemplate(list, image), ...overrides },
    };
  }

  it('adds new images, updates changed bytes, updates metadata only when only metadata changed, expires removed ones', () => {
    const old = parse(document({}, [entry('keep'), entry('new-bytes'), entry('new-text'), entry('gone')]));
    const current = parse(
      document({}, [
        entry('keep'),
        entry('new-bytes', { 'sl:checksum:sha512': SHA_B, 'hv:version': '1.1' }),
        entry('new-text', { 'dc:description': 'Better words' }),
        entry('fresh'),
      ]),
    );
    const registry = [
      registered(old, 'keep'),
      registered(old, 'new-bytes'),
      registered(old, 'new-text'),
      registered(old, 'gone'),
    ];
    const diff = diffList(current, registry, NOW);
    expect(diff.add.map((i) => i.identifier)).toEqual(['fresh']);
    expect(diff.update.map((c) => c.image.identifier)).toEqual(['new-bytes']);
    expect(diff.update[0]!.changed).toEqual(['IMGFLOW_SHA512', 'IMGFLOW_VERSION']);
    expect(diff.metadata.map((c) => [c.image.identifier, c.changed])).toEqual([['new-text', ['DESCRIPTION']]]);
    expect(diff.expire.map((i) => i.name)).toEqual(['gone']);
    expect(diff.unchanged).toEqual(['keep']);
  });

  it('treats a changed URI or size as new bytes', () => {
    const old = parse(document({}, [entry('a'), entry('b')]));
    const current = parse(
      document({}, [entry('a', { 'hv:uri': 'https://mirror.example.org/a.qcow2' }), entry('b', { 'hv:size': 2048 })]),
    );
    const diff = diffList(current, [registered(old, 'a'), registered(old, 'b')], NOW);
    expect(diff.update.map((c) => c.image.identifier)).toEqual(['a', 'b']);
  });

  it("ignores parked images and other lists' images under other names, and reports a new image whose name is taken", () => {
    const list = parse(document({}, [entry('a'), entry('b'), entry('c')]));
    const otherList = registered(list, 'a', { IMGFLOW_IMAGELIST: 'another-list' });
    const fromNoList = { ...registered(list, 'b'), template: {} };
    const otherName = registered(list, 'c', { IMGFLOW_IMAGELIST: 'another-list' }, 'c-local');
    const parked = registered(list, 'c', {}, 'c_EXPIRED_2026-01-01_00-00-00_UTC');
    const diff = diffList(list, [otherList, fromNoList, otherName, parked], NOW);
    expect(diff.add.map((i) => i.identifier)).toEqual(['c']);
    expect(diff.taken.map(({ image, ...holder }) => [image.identifier, holder])).toEqual([
      ['a', { holderId: otherList.id, holderList: 'another-list' }],
      ['b', { holderId: fromNoList.id }],
    ]);
    expect(diff.expire).toEqual([]);
  });

  describe('owned by the subscription that registered them', () => {
    const mine = { identifier: 'shared-id', subscription: 'mine', endorserDn: '/CN=Mine' };
    const theirs = { identifier: 'shared-id', subscription: 'theirs', endorserDn: '/CN=Theirs' };
    const list = parse(document({ 'dc:identifier': 'shared-id' }, [entry('a'), entry('b')]));
    const owned = (owner: typeof mine | { identifier: string }, id: string): RegistryImage => {
      const image = list.images.find((i) => i.identifier === id)!;
      return {
        id: nextId++,
        name: id,
        state: 'READY',
        ownerId: 0,
        groupId: 0,
        mode: '640',
        template: imageTemplate(owner, image),
      };
    };

    it("never updates or expires another subscription's image under a reused list identifier, and names it", () => {
      const other = owned(theirs, 'a');
      const theirsGone = owned(theirs, 'b');
      const changed = parse(document({ 'dc:identifier': 'shared-id' }, [entry('a', { 'sl:checksum:sha512': SHA_B })]));
      const diff = diffList(changed, [other, theirsGone], NOW, mine);
      expect(diff.update).toEqual([]);
      expect(diff.expire).toEqual([]);
      expect(diff.taken.map(({ image, ...holder }) => [image.identifier, holder])).toEqual([
        ['a', { holderId: other.id, holderList: 'shared-id', holderSubscription: 'theirs' }],
      ]);
      expect(diffList(changed, [other, theirsGone], NOW, theirs).update.map((c) => c.image.identifier)).toEqual(['a']);
    });

    it('lets a verified subscription claim an image registered before owners were recorded, and an unverified one none', () => {
      const legacy = owned({ identifier: 'shared-id' }, 'a');
      const claimed = diffList(list, [legacy], NOW, mine);
      expect(claimed.metadata.map((c) => [c.image.identifier, c.changed])).toEqual([
        ['a', ['IMGFLOW_ENDORSER', 'IMGFLOW_SUBSCRIPTION']],
      ]);
      const unverified = diffList(list, [legacy], NOW, { identifier: 'shared-id', subscription: 'unchecked' });
      expect(unverified.metadata).toEqual([]);
      expect(unverified.taken.map((t) => t.holderId)).toEqual([legacy.id]);
    });
  });

  it("honours an image's own expiry: not added when expired, expired when registered", () => {
    const list = parse(
      document({}, [
        entry('live', { 'dc:date:expires': '2026-07-01T00:00:00Z' }),
        entry('dead', { 'dc:date:expires': '2026-05-01T00:00:00Z' }),
        entry('dead-new', { 'dc:date:expires': '2026-05-01T00:00:00Z' }),
      ]),
    );
    const dead = registered(list, 'dead');
    const diff = diffList(list, [registered(list, 'live'), dead], NOW);
    expect(diff.unchanged).toEqual(['live']);
    expect(diff.add).toEqual([]);
    expect(diff.expire.map((i) => i.id)).toEqual([dead.id]);
    expect(() => parse(document({}, [entry('bad', { 'dc:date:expires': 'soon' })]))).toThrow(
      /hv:images\[0\]\.hv:image\.dc:date:expires is not a date/,
    );
  });

  it('expires every image of a list that has itself expired, and adds nothing', () => {
    const list = parse(document({ 'dc:date:expires': '2026-05-01T00:00:00Z' }, [entry('a'), entry('b')]));
    const diff = diffList(list, [registered(list, 'a')], NOW);
    expect(diff.expire.map((i) => i.name)).toEqual(['a']);
    expect(diff.add).toEqual([]);
  });
});
