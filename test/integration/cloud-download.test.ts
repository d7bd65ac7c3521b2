import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { DefaultLogger } from '@temporalio/worker';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cachedPath, download, DownloadError } from '../../activities/cloud/download.js';
import { createRunner, type Run } from '../../activities/runner.js';
import { createLogger } from '../../lib/logger.js';
import { tempDir } from '../support/dirs.js';
import { startFileServer, type FileServer } from '../support/http-server.js';
import { memoryLogger } from '../support/logger.js';

const sha512 = (b: Buffer) => createHash('sha512').update(b).digest('hex');

describe('image download over HTTP', () => {
  const dir = tempDir();
  let server: FileServer;
  const image = randomBytes(3 * 1024 * 1024 + 17);
  const fast = { retryDelayMs: 10, stallTimeoutMs: 2000 };

  beforeAll(async () => {
    server = await startFileServer();
  });
  afterAll(() => server.close());

  const cacheDir = (name: string) => path.join(dir, name);

  it('downloads, checks size and sha512, and keeps the file in the cache by digest', async () => {
    server.setFile('/ok.img', image);
    const result = await download(
      { url: server.url('/ok.img'), sha512: sha512(image), size: image.length },
      { cacheDir: cacheDir('ok'), ...fast },
    );
    expect(result).toMatchObject({ sha512: sha512(image), bytes: image.length, cached: false, attempts: 1 });
    expect(result.path).toBe(cachedPath(cacheDir('ok'), sha512(image)));
    expect(fs.readFileSync(result.path).equals(image)).toBe(true);

    const before = server.requests.length;
    const again = await download(
      { url: server.url('/ok.img'), sha512: sha512(image), size: image.length },
      { cacheDir: cacheDir('ok'), ...fast },
    );
    expect(again.cached).toBe(true);
    expect(server.requests.length).toBe(before);
  });

  // The large image is hashed on a thread of its own, the kept part of it too.
  it.each([
    ['a small image', image],
    ['a large image', randomBytes(40 * 1024 * 1024 + 5)],
  ])('resumes %s with a Range request after the connection is cut', async (_name, image) => {
    const cut = `/cut-${image.length}.img`;
    server.setFile(cut, image, 'truncate-once');
    const { logger, lines } = memoryLogger();
    const result = await download(
      { url: server.url(cut), sha512: sha512(image), size: image.length },
      { cacheDir: cacheDir(`cut-${image.length}`), logger, ...fast },
    );
    expect(result.attempts).toBe(2);
    expect(result.resumedAt).toHaveLength(1);
    expect(result.resumedAt[0]).toBeGreaterThan(0);
    const ranged = server.requests.filter((r) => r.path === cut);
    expect(ranged.map((r) => r.status)).toEqual([200, 206]);
    expect(ranged[1]!.range).toBe(`bytes=${result.resumedAt[0]}-`);
    expect(fs.readFileSync(result.path).equals(image)).toBe(true);
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'download attempt failed', retry: true }));
  });

  it('reserves the space of a download of known size, and resumes from what was written, not what was reserved', async () => {
    const big = randomBytes(40 * 1024 * 1024 + 5);
    const cut = '/reserved.img';
    server.setFile(cut, big, 'truncate-once');
    const runner = createRunner(createLogger('test', 'error'));
    const calls: string[][] = [];
    const run: Run = (argv, options) => {
      calls.push([...argv]);
      return runner(argv, options);
    };
    const result = await download(
      { url: server.url(cut), sha512: sha512(big), size: big.length },
      { cacheDir: cacheDir('reserved'), run, ...fast },
    );
    const partial = path.join(cacheDir('reserved'), 'partial', `${sha512(big)}.partial`);
    expect(calls).toEqual([
      ['fallocate', '--keep-size', '--length', String(big.length), partial],
      ['fallocate', '--keep-size', '--length', String(big.length), partial],
    ]);
    expect(result).toMatchObject({ attempts: 2, bytes: big.length });
    expect(result.resumedAt[0]).toBeGreaterThan(0);
    expect(result.resumedAt[0]).toBeLessThan(big.length);
    const ranged = server.requests.filter((r) => r.path === cut);
    expect(ranged.map((r) => [r.status, r.range])).toEqual([
      [200, undefined],
      [206, `bytes=${result.resumedAt[0]}-`],
    ]);
    expect(fs.readFileSync(result.path).equals(big)).toBe(true);
    expect(fs.existsSync(partial)).toBe(false);
  });

  it('starts over when the server ignores the Range', async () => {
    const body = randomBytes(200_000);
    server.setFile('/norange.img', body, 'no-range');
    const partialDir = path.join(cacheDir('norange'), 'partial');
    fs.mkdirSync(partialDir, { recursive: true });
    fs.writeFileSync(path.join(partialDir, `${sha512(body)}.partial`), Buffer.from('stale bytes from another attempt'));
    const result = await download(
      { url: server.url('/norange.img'), sha512: sha512(body), size: body.length },
      { cacheDir: cacheDir('norange'), ...fast },
    );
    const served = server.requests.filter((r) => r.path === '/norange.img');
    expect(served).toEqual([{ path: '/norange.img', range: 'bytes=32-', status: 200 }]);
    expect(result.resumedAt).toEqual([]);
    expect(fs.readFileSync(result.path).equals(body)).toBe(true);
  });

  it('gives up on a connection that is always cut, naming truncation', async () => {
    server.setFile('/always-cut.img', image, 'truncated');
    const error = await download(
      { url: server.url('/always-cut.img'), sha512: sha512(image), size: image.length },
      { cacheDir: cacheDir('always'), retries: 2, ...fast },
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DownloadError);
    expect((error as DownloadError).kind).toBe('truncated');
    expect(server.requests.filter((r) => r.path === '/always-cut.img')).toHaveLength(3);
  });

  it('refuses a file whose sha512 differs and removes it', async () => {
    server.setFile('/wrong-sha.img', image);
    const error = await download(
      { url: server.url('/wrong-sha.img'), sha512: 'ab'.repeat(64), size: image.length },
      { cacheDir: cacheDir('sha'), ...fast },
    ).catch((e: unknown) => e);
    expect((error as DownloadError).kind).toBe('sha512');
    expect((error as Error).message).toMatch(/download sha512: the file hashes to/);
    expect(fs.readdirSync(path.join(cacheDir('sha'), 'partial'))).toEqual([]);
  });

  it('refuses a file whose size differs from the list', async () => {
    server.setFile('/wrong-size.img', image);
    const error = await download(
      { url: server.url('/wrong-size.img'), sha512: sha512(image), size: image.length + 1 },
      { cacheDir: cacheDir('size'), ...fast },
    ).catch((e: unknown) => e);
    expect((error as DownloadError).kind).toBe('size');
    expect((error as Error).message).toMatch(/announces \d+ bytes, the list says \d+/);
  });

  it('fails at once on 404, without retrying', async () => {
    const error = await download(
      { url: server.url('/missing.img'), sha512: sha512(image) },
      { cacheDir: cacheDir('404'), retries: 3, ...fast },
    ).catch((e: unknown) => e);
    expect((error as DownloadError).kind).toBe('not-found');
    expect((error as Error).message).toMatch(/HTTP 404/);
    expect(server.requests.filter((r) => r.path === '/missing.img')).toHaveLength(1);
  });

  it('drops a stalled connection after the stall timeout, retries a bounded number of times, then fails', async () => {
    server.setFile('/stall.img', image, 'stall');
    const started = Date.now();
    const error = await download(
      { url: server.url('/stall.img'), sha512: sha512(image), size: image.length },
      { cacheDir: cacheDir('stall'), retries: 1, retryDelayMs: 10, stallTimeoutMs: 300 },
    ).catch((e: unknown) => e);
    const elapsed = Date.now() - started;
    expect((error as DownloadError).kind).toBe('stalled');
    expect((error as Error).message).toMatch(/no data from 127\.0\.0\.1:\d+ for 300 ms/);
    expect(server.requests.filter((r) => r.path === '/stall.img')).toHaveLength(2);
    expect(elapsed).toBeGreaterThanOrEqual(600);
    expect(elapsed).toBeLessThan(5000);
  });

  it('downloads a file with no expected digest (an image list) and caches it by what it hashes to', async () => {
    server.setFile('/list.smime', 'signed list');
    const result = await download({ url: server.url('/list.smime') }, { cacheDir: cacheDir('list'), ...fast });
    expect(fs.readFileSync(result.path, 'utf8')).toBe('signed list');
    expect(result.sha512).toBe(sha512(Buffer.from('signed list')));
  });

  it('refuses URLs that are not http(s) and malformed digests, naming the field', async () => {
    await expect(download({ url: 'file:///etc/passwd' }, { cacheDir: cacheDir('bad') })).rejects.toThrow(
      /^url: expected an http\(s\) URL/,
    );
    await expect(download({ url: server.url('/x'), sha512: '../../x' }, { cacheDir: cacheDir('bad') })).rejects.toThrow(
      /^sha512: expected 128 hex digits/,
    );
  });

  it('heartbeats progress when it runs inside an activity', async () => {
    server.setFile('/beat.img', image);
    const env = new MockActivityEnvironment(undefined, { logger: new DefaultLogger('ERROR') });
    const beats: unknown[] = [];
    env.on('heartbeat', (details: unknown) => beats.push(details));
    const result: Awaited<ReturnType<typeof download>> = await env.run(
      download,
      { url: server.url('/beat.img'), sha512: sha512(image), size: image.length },
      { cacheDir: cacheDir('beat'), ...fast },
    );
    expect(result.bytes).toBe(image.length);
    expect(beats[0]).toMatchObject({ bytes: expect.any(Number), total: image.length, percent: expect.any(Number) });
  });

  it('ends a transfer at once when the activity is cancelled', async () => {
    server.setFile('/cancel.img', image, 'stall');
    const env = new MockActivityEnvironment(undefined, { logger: new DefaultLogger('ERROR') });
    const running = env.run(
      download,
      { url: server.url('/cancel.img'), sha512: sha512(image), size: image.length },
      { cacheDir: cacheDir('cancel'), retries: 3, stallTimeoutMs: 30_000 },
    );
    await new Promise((r) => setTimeout(r, 200));
    const started = Date.now();
    env.cancel();
    const error = await running.catch((e: unknown) => e);
    expect((error as DownloadError).kind).toBe('cancelled');
    expect(Date.now() - started).toBeLessThan(2000);
  });
});
