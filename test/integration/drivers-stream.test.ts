/**
 * Streams between hosts, each side's command run on its own side: a ZFS snapshot sent by one
 * pool's `zfs send` into another's `zfs recv` over TCP; a sender with the wrong token is dropped
 * while the right one still gets in (once); a receiver nobody comes to fails within its bound and
 * closes its port.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createStreamReceiver, sendStream } from '../../activities/drivers/stream.js';
import { createRunner } from '../../activities/runner.js';
import { sha256File } from '../../lib/files.js';
import { throwawayPool, useZfsFuse } from '../support/daemons.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { requireTools } from '../support/tools.js';

const MiB = 1024 * 1024;

describe('streams between hosts over TCP with a one-time token', () => {
  requireTools('zfs', 'dd', 'head');
  const dir = tempDir('imgflow-stream-');
  useZfsFuse();
  const from = throwawayPool(dir);
  const to = throwawayPool(dir);
  const { logger } = memoryLogger();
  const run = createRunner(logger);
  const receiver = createStreamReceiver(logger);
  const refused = (address: string, port: number) =>
    new Promise<boolean>((resolve) =>
      net
        .connect({ host: address, port })
        .once('connect', function (this: net.Socket) {
          this.destroy();
          resolve(false);
        })
        .once('error', () => resolve(true)),
    );

  it('carries a zfs send into a zfs recv, byte for byte', async () => {
    await run(['zfs', 'create', `${from.name}/vol`]);
    const file = path.join(from.mountpoint, 'vol', 'disk.raw');
    await run(['dd', 'if=/dev/urandom', `of=${file}`, 'bs=1M', 'count=8', 'status=none']);
    await run(['zfs', 'snapshot', `${from.name}/vol@s1`]);
    const token = randomUUID();
    const endpoint = await receiver.listen({ address: '127.0.0.1', token });
    expect(await receiver.listen({ address: '127.0.0.1', token })).toEqual(endpoint);
    const [received, sent] = await Promise.all([
      receiver.receive({ token, consumer: ['zfs', 'recv', '-F', `${to.name}/vol`] }),
      sendStream(logger, { ...endpoint, token, producer: ['zfs', 'send', `${from.name}/vol@s1`] }),
    ]);
    expect(received.bytes).toBe(sent.bytes);
    expect(sent.bytes).toBeGreaterThan(8 * MiB);
    expect(await sha256File(path.join(to.mountpoint, 'vol', 'disk.raw'))).toBe(await sha256File(file));
    expect(receiver.listening()).toBe(0);
    expect(await refused(endpoint.address, endpoint.port)).toBe(true);
  });

  it('drops a sender with the wrong token, admits the right one once, and refuses anyone after', async () => {
    const token = randomUUID();
    const endpoint = await receiver.listen({ address: '127.0.0.1', token });
    const out = path.join(dir, 'received.bin');
    const receiving = receiver.receive({ token, consumer: ['dd', `of=${out}`, 'status=none'] });
    const intruder = sendStream(logger, {
      ...endpoint,
      token: randomUUID(),
      producer: ['head', '-c', `${64 * MiB}`, '/dev/zero'],
    });
    await expect(intruder).rejects.toThrow();
    expect(receiver.listening()).toBe(1);
    const source = path.join(dir, 'source.bin');
    await run(['dd', 'if=/dev/urandom', `of=${source}`, 'bs=1M', 'count=2', 'status=none']);
    await sendStream(logger, { ...endpoint, token, producer: ['dd', `if=${source}`, 'status=none'] });
    expect(await receiving).toEqual({ bytes: 2 * MiB });
    expect(await sha256File(out)).toBe(await sha256File(source));
    expect(await refused(endpoint.address, endpoint.port)).toBe(true);
    expect(fs.existsSync(out)).toBe(true);
  });

  it('a receiver nobody comes to fails within its bound and closes its port', async () => {
    const token = randomUUID();
    const endpoint = await receiver.listen({ address: '127.0.0.1', token, timeoutMs: 1000 });
    await expect(receiver.receive({ token, consumer: ['dd', 'of=/dev/null', 'status=none'] })).rejects.toThrow(
      /no sender came/,
    );
    expect(receiver.listening()).toBe(0);
    expect(await refused(endpoint.address, endpoint.port)).toBe(true);
    await expect(receiver.listen({ address: '127.0.0.1', token: 'not-a-token' })).rejects.toThrow(
      /token: expected a one-time transfer token/,
    );
  });
});
