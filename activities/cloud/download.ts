/**
 * Downloads of listed images over HTTP(S), with Node's own http/https. Bytes go to a partial file
 * and are counted and hashed (sha512) as they are written; an interrupted transfer resumes with a
 * Range request; a connection that goes quiet for `stallTimeoutMs` is dropped and retried, a bounded
 * number of times. Finished files live in a cache keyed by their sha512, so a second subscription
 * or a retried activity finds them there.
 */
import type { Context } from '@temporalio/activity';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { InputError } from '../../common/names.js';
import { exists, hashFile } from '../../lib/files.js';
import { createStreamHash, type StreamHash } from '../../lib/hashing.js';
import type { Logger } from '../../lib/logger.js';
import type { Run } from '../runner.js';
import { currentActivity } from '../shared/index.js';

export type DownloadFailure =
  'not-found' | 'http' | 'truncated' | 'stalled' | 'network' | 'size' | 'sha512' | 'cancelled';

export class DownloadError extends Error {
  override readonly name = 'DownloadError';
  constructor(
    readonly kind: DownloadFailure,
    message: string,
    /** Worth another attempt within this download (a dropped or stalled connection, a 5xx). */
    readonly retryable = false,
  ) {
    super(`download ${kind}: ${message}`);
  }
}

export interface DownloadRequest {
  url: string;
  /** Expected digest; the file is refused if it differs. Without it, the file is cached by what it hashes to. */
  sha512?: string;
  /** Expected size in bytes. */
  size?: number;
}

export interface DownloadOptions {
  cacheDir: string;
  /** Further attempts after the first, for retryable failures. */
  retries?: number;
  /** Longest silence on the connection before it is dropped. */
  stallTimeoutMs?: number;
  retryDelayMs?: number;
  maxRedirects?: number;
  logger?: Logger;
  signal?: AbortSignal;
  /** An Authorization header, sent to this origin only (never to a host a redirect leads to). */
  authorization?: { origin: string; header: string };
  /**
   * Runs `fallocate --keep-size` to reserve the rest of a download of known size before it is
   * written: the filesystem allocates its extents at once rather than block by block as the bytes
   * arrive (on ext4 much of what writing a new file costs). The partial file's size stays what was
   * written, so a resumed transfer measures it as before; without it, or where it fails, nothing is
   * reserved.
   */
  run?: Run;
}

export interface DownloadResult {
  path: string;
  sha512: string;
  bytes: number;
  /** Found in the cache; nothing was transferred. */
  cached: boolean;
  attempts: number;
  /** Offsets at which transfers resumed with a Range request. */
  resumedAt: number[];
}

const SHA512 = /^[0-9a-f]{128}$/;
const HEARTBEAT_MS = 1000;

function checkRequest(request: DownloadRequest): { url: URL; sha512?: string } {
  let url: URL;
  try {
    url = new URL(request.url);
  } catch {
    throw new InputError('url', 'an http(s) URL', request.url);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new InputError('url', 'an http(s) URL', request.url);
  const sha512 = request.sha512?.toLowerCase();
  if (sha512 !== undefined && !SHA512.test(sha512)) throw new InputError('sha512', '128 hex digits', request.sha512);
  if (request.size !== undefined && (!Number.isSafeInteger(request.size) || request.size < 0))
    throw new InputError('size', 'a whole number of bytes', request.size);
  return { url, sha512 };
}

/** URLs may carry tokens in their query: logs get the origin and path only. */
function forLog(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

async function sizeOf(file: string): Promise<number> {
  return fs.stat(file).then(
    (s) => s.size,
    () => 0,
  );
}

/** Adds what `file` holds to `hash`. */
async function addFileTo(hash: StreamHash, file: string): Promise<void> {
  const handle = await fs.open(file);
  try {
    for (;;) {
      const batch = hash.batch();
      const { bytesRead } = await handle.read(batch, 0, batch.length);
      if (bytesRead === 0) return;
      await hash.update(batch, bytesRead);
    }
  } finally {
    await handle.close();
  }
}

/** Batches on their way to the file and the hash while the next one fills: receiving goes on during a write. */
const BATCHES_AHEAD = 4;

/**
 * Writes what it is given to `file` in the hash's batches, each added to `hash` once it is written.
 * A full batch is queued and the next one fills at once: the write (on libuv's threads), the hash (on
 * its own thread) and the receiving of the next bytes run side by side, and the sender is held back
 * only when BATCHES_AHEAD batches are still on their way. `take` sees each chunk first and may refuse
 * it (too many bytes). Writes go out strictly in order, and none after one has failed; a transfer
 * that breaks off still writes what it received, for the next attempt to resume after.
 */
function hashingFileSink(file: string, hash: StreamHash, take: (chunk: Buffer) => void): Writable {
  let handle: fs.FileHandle | undefined;
  let batch = hash.batch();
  let filled = 0;
  /** Written, then hashed, one batch after another. */
  let queue: Promise<void> = Promise.resolve();
  let ahead = 0;
  let failure: Error | undefined;
  let stopped = false;
  let moved: (() => void) | undefined;
  /** Queues the gathered bytes: written, then (unless the transfer has stopped) hashed. */
  const send = () => {
    const [full, length] = [batch, filled];
    [batch, filled] = [stopped ? batch : hash.batch(), 0];
    ahead++;
    queue = queue.then(async () => {
      try {
        if (failure) return;
        for (let at = 0; at < length;) at += (await handle!.write(full, at, length - at)).bytesWritten;
        if (!stopped) await hash.update(full, length);
      } catch (error) {
        failure ??= error as Error;
      } finally {
        ahead--;
        moved?.();
      }
    });
  };
  /** Resolves once fewer than BATCHES_AHEAD batches are on their way; fails with the first failure. */
  const room = async () => {
    while (ahead >= BATCHES_AHEAD && !failure) await new Promise<void>((resolve) => (moved = resolve));
    if (failure) throw failure;
  };
  const settle = (work: Promise<unknown>, done: (error?: Error | null) => void) => void work.then(() => done(), done);
  return new Writable({
    construct: (done) =>
      settle(
        fs.open(file, 'a').then((opened) => (handle = opened)),
        done,
      ),
    write: (chunk: Buffer, _encoding, done) => {
      try {
        if (failure) throw failure;
        take(chunk);
        for (let at = 0; at < chunk.length;) {
          const copied = chunk.copy(batch, filled, at);
          [filled, at] = [filled + copied, at + copied];
          if (filled === batch.length) send();
        }
      } catch (error) {
        done(error as Error);
        return;
      }
      // Most chunks only fill the batch: answered at once, without a promise.
      if (ahead >= BATCHES_AHEAD) settle(room(), done);
      else done();
    },
    final: (done) => {
      if (filled > 0) send();
      settle(
        queue.then(() => {
          if (failure) throw failure;
        }),
        done,
      );
    },
    destroy: (error, done) => {
      stopped = true;
      if (handle && filled > 0) send();
      const closed = queue.then(() => handle?.close());
      closed.then(
        () => done(error),
        () => done(error),
      );
    },
  });
}

interface Transfer {
  digest: string;
  total: number;
  resumed: boolean;
}

/** Progress for heartbeats: at most one a second. */
function progressReporter(activity: Context | undefined, expected: number | undefined) {
  let last = 0;
  return (bytes: number) => {
    const now = Date.now();
    if (!activity || now - last < HEARTBEAT_MS) return;
    last = now;
    activity.heartbeat({
      bytes,
      total: expected,
      percent: expected ? Math.floor((bytes * 100) / expected) : undefined,
    });
  };
}

class Downloader {
  private readonly activity = currentActivity();
  private readonly report: (bytes: number) => void;

  constructor(
    private readonly request: DownloadRequest,
    private readonly options: DownloadOptions,
  ) {
    this.report = progressReporter(this.activity, request.size);
  }

  private get signals(): AbortSignal[] {
    return [this.activity?.cancellationSignal, this.options.signal].filter((s): s is AbortSignal => !!s);
  }

  /** Opens the URL, following redirects; resolves with the final response. */
  private open(
    url: URL,
    offset: number,
    redirects = 0,
  ): Promise<{ response: http.IncomingMessage; request: http.ClientRequest; stalled: () => boolean }> {
    const client = url.protocol === 'https:' ? https : http;
    const stallMs = this.options.stallTimeoutMs ?? 60_000;
    return new Promise((resolve, reject) => {
      let stalled = false;
      const auth = this.options.authorization;
      const headers = {
        ...(offset > 0 ? { range: `bytes=${offset}-` } : {}),
        ...(auth?.origin === url.origin ? { authorization: auth.header } : {}),
      };
      const request = client.request(url, { headers, timeout: stallMs });
      // The socket timeout fires after `stallMs` of silence, before or during the body.
      request.on('timeout', () => {
        stalled = true;
        request.destroy(new DownloadError('stalled', `no data from ${url.host} for ${stallMs} ms`, true));
      });
      const cancel = () => request.destroy(new DownloadError('cancelled', 'the download was cancelled'));
      for (const s of this.signals) {
        if (s.aborted) cancel();
        else s.addEventListener('abort', cancel, { once: true });
      }
      request.on('close', () => this.signals.forEach((s) => s.removeEventListener('abort', cancel)));
      request.on('error', (error) =>
        reject(
          error instanceof DownloadError
            ? error
            : new DownloadError('network', `${forLog(url)}: ${error.message}`, true),
        ),
      );
      request.on('response', (response) => {
        const status = response.statusCode ?? 0;
        if (status >= 300 && status < 400 && response.headers.location) {
          response.resume();
          if (redirects >= (this.options.maxRedirects ?? 5)) {
            reject(new DownloadError('http', `too many redirects from ${forLog(url)}`));
            return;
          }
          const next = new URL(response.headers.location, url);
          if (next.protocol !== 'http:' && next.protocol !== 'https:') {
            reject(new DownloadError('http', `redirect to a non-http URL from ${forLog(url)}`));
            return;
          }
          this.open(next, offset, redirects + 1).then(resolve, reject);
          return;
        }
        resolve({ response, request, stalled: () => stalled });
      });
      request.end();
    });
  }

  /** One HTTP exchange into `partial`, appending from `offset` when the server honours the Range. */
  async transfer(url: URL, partial: string, offset: number): Promise<Transfer> {
    const { response, request, stalled } = await this.open(url, offset);
    const status = response.statusCode ?? 0;
    if (status === 404 || status === 410) {
      response.resume();
      throw new DownloadError('not-found', `${forLog(url)} answered HTTP ${status}`);
    }
    if (status === 416) {
      // The partial file is longer than the resource: it belongs to something else.
      response.resume();
      await fs.rm(partial, { force: true });
      throw new DownloadError('http', `${forLog(url)} refused the range from ${offset}; starting over`, true);
    }
    if (status !== 200 && status !== 206) {
      response.resume();
      throw new DownloadError('http', `${forLog(url)} answered HTTP ${status}`, status >= 500 || status === 429);
    }
    const resumed = status === 206 && offset > 0 && this.rangeStartsAt(response, offset);
    const start = resumed ? offset : 0;
    const length =
      response.headers['content-length'] === undefined ? undefined : Number(response.headers['content-length']);
    if (length !== undefined && this.request.size !== undefined && start + length !== this.request.size) {
      response.resume();
      throw new DownloadError(
        'size',
        `${forLog(url)} announces ${start + length} bytes, the list says ${this.request.size}`,
      );
    }
    let total = start;
    /** Counts each chunk before it is written; one past the size the list says fails the transfer unwritten. */
    const take = (chunk: Buffer) => {
      total += chunk.length;
      if (this.request.size !== undefined && total > this.request.size)
        throw new DownloadError('size', `${forLog(url)} sent more than the ${this.request.size} bytes the list says`);
      this.report(total);
    };
    const hash = createStreamHash('sha512');
    try {
      if (resumed) await addFileTo(hash, partial);
      // Starting over empties the file first, so that the sink only appends and keeps what is reserved.
      else await fs.writeFile(partial, '');
      if (this.request.size !== undefined && this.request.size > start) await this.reserve(partial, this.request.size);
      const sink = hashingFileSink(partial, hash, take);
      const closed = new Promise((resolve) => sink.once('close', resolve));
      const failure = await pipeline(response, sink).then(
        () => undefined,
        (error: Error) => error,
      );
      // A failed pipeline settles before the sink has written what it kept: the next attempt must
      // measure the partial file only once the sink is done with it.
      await closed;
      if (failure) throw this.explain(failure, url, stalled(), total);
      if (length !== undefined && total !== start + length) {
        throw new DownloadError('truncated', `${forLog(url)}: got ${total} of ${start + length} bytes`, true);
      }
      return { digest: await hash.digest(), total, resumed };
    } finally {
      hash.close();
      request.destroy();
    }
  }

  /** Reserves `size` bytes for the partial file, keeping its size; best effort (some filesystems cannot). */
  private async reserve(partial: string, size: number): Promise<void> {
    if (!this.options.run) return;
    await this.options
      .run(['fallocate', '--keep-size', '--length', String(size), partial])
      .catch((error: Error) => this.options.logger?.debug({ error: error.message }, 'download not reserved'));
  }

  /** What a transfer that broke off means: a stall, a cancellation, or a connection that ended early. */
  private explain(error: Error, url: URL, stalled: boolean, total: number): DownloadError {
    if (error instanceof DownloadError) return error;
    if (stalled)
      return new DownloadError(
        'stalled',
        `no data from ${url.host} for ${this.options.stallTimeoutMs ?? 60_000} ms after ${total} bytes`,
        true,
      );
    if (this.signals.some((s) => s.aborted)) return new DownloadError('cancelled', 'the download was cancelled');
    return new DownloadError(
      'truncated',
      `${forLog(url)}: connection ended after ${total} bytes (${error.message})`,
      true,
    );
  }

  private rangeStartsAt(response: http.IncomingMessage, offset: number): boolean {
    const range = /^bytes (\d+)-/.exec(String(response.headers['content-range'] ?? ''));
    return range !== null && Number(range[1]) === offset;
  }
}

/** Where a finished file with this digest lives in the cache. */
export function cachedPath(cacheDir: string, sha512: string): string {
  return path.join(cacheDir, 'sha512', sha512);
}

/**
 * Downloads `request.url` into the cache and returns the cached file. The cache is consulted first
 * when the digest is known; an interrupted earlier attempt is resumed from its partial file.
 */
export async function download(request: DownloadRequest, options: DownloadOptions): Promise<DownloadResult> {
  const { url, sha512 } = checkRequest(request);
  const log = options.logger;
  if (sha512) {
    const cached = cachedPath(options.cacheDir, sha512);
    const size = await fs.stat(cached).then(
      (s) => s.size,
      () => undefined,
    );
    if (size !== undefined && (request.size === undefined || size === request.size)) {
      log?.info({ url: forLog(url), sha512 }, 'download found in cache');
      return { path: cached, sha512, bytes: size, cached: true, attempts: 0, resumedAt: [] };
    }
  }
  const partialDir = path.join(options.cacheDir, 'partial');
  await fs.mkdir(partialDir, { recursive: true });
  const partial = path.join(partialDir, `${sha512 ?? createHash('sha256').update(url.href).digest('hex')}.partial`);
  const downloader = new Downloader({ ...request, sha512 }, options);
  const resumedAt: number[] = [];
  const attempts = (options.retries ?? 3) + 1;

  for (let attempt = 1; ; attempt++) {
    const offset = sha512 ? await sizeOf(partial) : 0; // without a digest nothing says the partial file is this URL's
    try {
      // A crash between the last byte and the rename leaves a complete partial file: no request needed.
      const complete = offset > 0 && offset === request.size;
      const transfer = complete
        ? { digest: await hashFile(partial, 'sha512'), total: offset, resumed: false }
        : await downloader.transfer(url, partial, offset);
      if (transfer.resumed) resumedAt.push(offset);
      const result = await finish(partial, transfer, { ...request, sha512 }, options.cacheDir);
      log?.info({ url: forLog(url), bytes: result.bytes, attempt }, 'downloaded');
      return { ...result, cached: false, attempts: attempt, resumedAt };
    } catch (error) {
      const retry = error instanceof DownloadError && error.retryable && attempt < attempts;
      log?.warn({ url: forLog(url), attempt, error: (error as Error).message, retry }, 'download attempt failed');
      if (!retry) throw error;
      await new Promise((r) => setTimeout(r, (options.retryDelayMs ?? 1000) * attempt));
    }
  }
}

/** Checks size and digest and moves the file into the cache; a wrong file is removed. */
async function finish(
  partial: string,
  transfer: Transfer,
  request: DownloadRequest,
  cacheDir: string,
): Promise<{ path: string; sha512: string; bytes: number }> {
  const { digest } = transfer;
  if (request.size !== undefined && transfer.total !== request.size) {
    await fs.rm(partial, { force: true });
    throw new DownloadError('size', `got ${transfer.total} bytes, the list says ${request.size}`);
  }
  if (request.sha512 !== undefined && digest !== request.sha512) {
    await fs.rm(partial, { force: true });
    throw new DownloadError(
      'sha512',
      `the file hashes to ${digest.slice(0, 16)}..., the list says ${request.sha512.slice(0, 16)}...`,
    );
  }
  const target = cachedPath(cacheDir, digest);
  await fs.mkdir(path.dirname(target), { recursive: true });
  if (await exists(target)) await fs.rm(partial, { force: true });
  else await fs.rename(partial, target);
  return { path: target, sha512: digest, bytes: transfer.total };
}
