import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OpenNebulaRegistry, renderTemplate } from '../../activities/cloud/registry/opennebula.js';
import { RegistryError, TEMPLATE } from '../../activities/cloud/registry/types.js';
import { decodeCall, decodeResponse, encodeCall, encodeResponse } from '../../activities/cloud/registry/xmlrpc.js';
import { memoryLogger } from '../support/logger.js';
import { ERROR, OpenNebulaContract, STATE } from '../support/opennebula-contract.js';

describe('XML-RPC encoding', () => {
  it('round-trips calls and responses with escaping', () => {
    const call = encodeCall('one.image.rename', ['user:p<&>"w', 7, true, ['a', 1.5], { k: 'v' }]);
    expect(decodeCall(call)).toEqual({
      method: 'one.image.rename',
      params: ['user:p<&>"w', 7, true, ['a', 1.5], { k: 'v' }],
    });
    expect(decodeResponse(encodeResponse([true, '<IMAGE/>', 0]))).toEqual({ ok: true, value: [true, '<IMAGE/>', 0] });
  });

  it('refuses documents with a DOCTYPE (no entity expansion)', () => {
    expect(() => decodeResponse('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><methodResponse/>')).toThrow(
      /DOCTYPE/,
    );
  });

  it('renders templates with quotes and backslashes escaped, and refuses odd attribute names', () => {
    expect(renderTemplate({ NAME: 'a', DESCRIPTION: 'say "hi" \\o/' })).toBe(
      'NAME="a"\nDESCRIPTION="say \\"hi\\" \\\\o/"',
    );
    expect(() => renderTemplate({ 'BAD"]\nX': 'v' })).toThrow(/template: expected attribute names/);
  });
});

describe('OpenNebula registry adapter against the XML-RPC contract', () => {
  const contract = new OpenNebulaContract();
  const { logger, lines } = memoryLogger();
  let one: OpenNebulaRegistry;
  const PASSWORD = 'onepass';

  beforeAll(async () => {
    await contract.start();
    one = new OpenNebulaRegistry({
      endpoint: contract.url,
      user: 'oneadmin',
      password: PASSWORD,
      datastoreId: 1,
      logger,
    });
  });
  afterAll(() => contract.stop());

  const template = { [TEMPLATE.imageList]: 'list-1', [TEMPLATE.image]: 'img-1', DESCRIPTION: 'Alma "9" base' };

  async function registerReady(name: string) {
    const id = await one.register({ name, path: '/var/tmp/img.qcow2', format: 'qcow2', template });
    return one.waitReady(id, { intervalMs: 50, timeoutMs: 5000 });
  }

  it('allocates an image that starts in INIT and becomes READY', async () => {
    const id = await one.register({ name: 'img-1', path: '/var/tmp/img.qcow2', format: 'qcow2', template });
    expect((await one.info(id)).state).toBe('INIT');
    const ready = await one.waitReady(id, { intervalMs: 50, timeoutMs: 5000 });
    expect(ready).toMatchObject({ id, name: 'img-1', state: 'READY', ownerId: 0, groupId: 0, mode: '600' });
    expect(ready.template).toMatchObject({ ...template, PATH: '/var/tmp/img.qcow2', FORMAT: 'qcow2', TYPE: 'OS' });
  });

  it('lists images, filtered by the image list attribute', async () => {
    const other = await one.register({
      name: 'unrelated',
      path: '/var/tmp/x.qcow2',
      format: 'qcow2',
      template: { DESCRIPTION: 'not ours' },
    });
    expect((await one.list()).map((i) => i.name)).toContain('unrelated');
    expect((await one.list({ imageList: 'list-1' })).map((i) => i.name)).toEqual(['img-1']);
    await one.waitReady(other, { intervalMs: 50 });
  });

  it('locks, disables, renames and restores an image as a swap does', async () => {
    const image = await registerReady('img-swap');
    await one.chown(image.id, { userId: 5, groupId: 100 });
    await one.chmod(image.id, '644');
    const remembered = await one.info(image.id);
    expect(remembered).toMatchObject({ ownerId: 5, groupId: 100, mode: '644', state: 'READY' });

    await one.chown(image.id, { userId: 0, groupId: 0 });
    await one.chmod(image.id, '700');
    await one.setEnabled(image.id, false);
    await one.rename(image.id, 'img-swap_EXPIRED_2026-01-02_03-04-05_UTC');
    expect(await one.info(image.id)).toMatchObject({
      name: 'img-swap_EXPIRED_2026-01-02_03-04-05_UTC',
      state: 'DISABLED',
      ownerId: 0,
      groupId: 0,
      mode: '700',
    });
    expect(contract.images.get(image.id)!.permissions).toEqual([1, 1, 1, 0, 0, 0, 0, 0, 0]);

    // Undo: back to what was remembered.
    await one.rename(image.id, 'img-swap');
    await one.setEnabled(image.id, true);
    await one.chown(image.id, { userId: remembered.ownerId, groupId: remembered.groupId });
    await one.chmod(image.id, remembered.mode);
    expect(await one.info(image.id)).toMatchObject({
      name: 'img-swap',
      state: 'READY',
      ownerId: 5,
      groupId: 100,
      mode: '644',
    });
  });

  it('updates the template in place: merged, in any state, owner, permissions, name and state untouched', async () => {
    const image = await registerReady('img-meta');
    await one.chown(image.id, { userId: 5, groupId: 100 });
    await one.chmod(image.id, '640');
    await one.setEnabled(image.id, false);
    const callsBefore = contract.calls.length;
    await one.updateTemplate(image.id, { DESCRIPTION: 'Alma "9.1" base', IMGFLOW_TITLE: 'Alma 9' });
    expect(contract.calls.slice(callsBefore)).toEqual(['one.image.update']);
    const updated = await one.info(image.id);
    expect(updated).toMatchObject({
      id: image.id,
      name: 'img-meta',
      state: 'DISABLED',
      ownerId: 5,
      groupId: 100,
      mode: '640',
    });
    // Merged: the attributes allocate set and those not named stay.
    expect(updated.template).toMatchObject({
      ...template,
      DESCRIPTION: 'Alma "9.1" base',
      IMGFLOW_TITLE: 'Alma 9',
      PATH: '/var/tmp/img.qcow2',
      FORMAT: 'qcow2',
    });
  });

  it('follows one.image.update as documented: type 0 replaces, another type is refused, MANAGE is needed', async () => {
    const image = await registerReady('img-update-contract');
    const call = async (method: string, ...params: (string | number)[]) => {
      const response = await fetch(contract.url, {
        method: 'POST',
        headers: { 'content-type': 'text/xml' },
        body: encodeCall(method, [`oneadmin:${PASSWORD}`, ...params]),
      });
      return decodeResponse(await response.text());
    };
    expect(await call('one.image.update', image.id, 'ONLY="this"', 0)).toEqual({
      ok: true,
      value: [true, image.id, 0],
    });
    expect(contract.images.get(image.id)!.template).toEqual({ ONLY: 'this' });
    expect(await call('one.image.update', image.id, 'X="y"', 2)).toMatchObject({
      value: [false, expect.stringMatching(/update type must be 0/), ERROR.XML_RPC_API],
    });
    const alice = new OpenNebulaRegistry({
      endpoint: contract.url,
      user: 'alice',
      password: 'alicepass',
      datastoreId: 1,
    });
    await expect(alice.updateTemplate(image.id, { DESCRIPTION: 'mine now' })).rejects.toMatchObject({
      code: ERROR.AUTHORIZATION,
    });
    await expect(one.updateTemplate(image.id, { 'bad key': 'x' })).rejects.toThrow(/^template: expected/);
  });

  it('keeps owner or group when given -1', async () => {
    const image = await registerReady('img-chown');
    await one.chown(image.id, { userId: -1, groupId: 100 });
    expect(await one.info(image.id)).toMatchObject({ ownerId: 0, groupId: 100 });
  });

  it('renames an image in use (OpenNebula allows it) but refuses a name the owner already has', async () => {
    const image = await registerReady('img-used');
    contract.setRunningVms(image.id, 2);
    expect((await one.info(image.id)).state).toBe('USED');
    await one.rename(image.id, 'img-used-renamed');
    expect((await one.info(image.id)).name).toBe('img-used-renamed');
    const error = await one.rename(image.id, 'img-1').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RegistryError);
    expect((error as RegistryError).code).toBe(ERROR.ACTION);
    expect((error as Error).message).toMatch(/^one\.image\.rename: \[one\.image\.rename\] NAME is already taken/);
  });

  it('refuses to disable or delete an image while VMs use it', async () => {
    const image = await registerReady('img-busy');
    contract.setRunningVms(image.id, 1);
    await expect(one.setEnabled(image.id, false)).rejects.toThrow(/cannot be disabled in state USED/);
    await expect(one.delete(image.id)).rejects.toThrow(/Cannot delete image in state USED/);
    contract.setRunningVms(image.id, 0);
    await one.delete(image.id);
    await expect(one.info(image.id)).rejects.toMatchObject({ code: ERROR.NO_EXISTS });
  });

  it('refuses to enable an image that is LOCKED', async () => {
    const image = await registerReady('img-locked');
    contract.setState(image.id, STATE.LOCKED);
    await expect(one.setEnabled(image.id, true)).rejects.toThrow(/cannot be enabled in state LOCKED/);
  });

  it('fails waitReady when the image goes to ERROR, and on timeout', async () => {
    contract.failNextAllocation = true;
    const broken = await one.register({ name: 'img-broken', path: '/var/tmp/x.qcow2', format: 'qcow2', template });
    await expect(one.waitReady(broken, { intervalMs: 50, timeoutMs: 5000 })).rejects.toThrow(/is in state ERROR/);
    contract.readyDelayMs = 60_000;
    const slow = await one.register({ name: 'img-slow', path: '/var/tmp/x.qcow2', format: 'qcow2', template });
    await expect(one.waitReady(slow, { intervalMs: 50, timeoutMs: 300 })).rejects.toThrow(/still INIT after 300 ms/);
    contract.readyDelayMs = 150;
  });

  it('reports an authentication failure without revealing the password', async () => {
    const wrong = new OpenNebulaRegistry({
      endpoint: contract.url,
      user: 'oneadmin',
      password: 'not-the-password',
      datastoreId: 1,
      logger,
    });
    const error = await wrong.list().catch((e: unknown) => e);
    expect((error as RegistryError).code).toBe(ERROR.AUTHENTICATION);
    expect((error as Error).message).not.toContain('not-the-password');
    expect(JSON.stringify(lines)).not.toContain('not-the-password');
    expect(JSON.stringify(lines)).not.toContain(PASSWORD);
    expect(JSON.stringify(one)).not.toContain(PASSWORD);
  });

  it("lets a user without MANAGE rights do nothing to another owner's image", async () => {
    const image = await registerReady('img-private');
    const alice = new OpenNebulaRegistry({
      endpoint: contract.url,
      user: 'alice',
      password: 'alicepass',
      datastoreId: 1,
    });
    await expect(alice.rename(image.id, 'stolen')).rejects.toMatchObject({ code: ERROR.AUTHORIZATION });
    await expect(alice.chown(image.id, { userId: 5, groupId: -1 })).rejects.toMatchObject({
      code: ERROR.AUTHORIZATION,
    });
  });

  it('surfaces an injected failure of the n-th call of a method, then works again', async () => {
    const image = await registerReady('img-fault');
    contract.failCall('one.image.rename', 2, ERROR.INTERNAL, 'database is locked');
    await one.rename(image.id, 'img-fault-1');
    const error = await one.rename(image.id, 'img-fault-2').catch((e: unknown) => e);
    expect((error as RegistryError).code).toBe(ERROR.INTERNAL);
    expect((error as Error).message).toMatch(/database is locked/);
    await one.rename(image.id, 'img-fault-3');
    expect((await one.info(image.id)).name).toBe('img-fault-3');
  });

  it('refuses unsafe names and modes before calling OpenNebula', async () => {
    const before = contract.calls.length;
    await expect(one.rename(0, '../x')).rejects.toThrow(/^name: expected an image name/);
    await expect(one.chmod(0, '800')).rejects.toThrow(/^mode: expected three octal digits/);
    expect(contract.calls.length).toBe(before);
  });

  it('logs each call by method without the session', () => {
    expect(lines).toContainEqual(
      expect.objectContaining({ msg: 'opennebula call', method: 'one.image.allocate', ok: true }),
    );
    expect(JSON.stringify(lines)).not.toContain(`oneadmin:${PASSWORD}`);
  });
});
