/**
 * A client of the OCI distribution API (`/v2/`), on Node's own http/https: the authentication
 * challenge (Basic, or Bearer through the registry's token service), manifests by tag or digest
 * (every body's sha256 checked), blobs downloaded with resume and a digest check, uploads that first
 * ask whether the registry already holds the blob, and tag listings. A connection that goes quiet
 * for `stallTimeoutMs` is dropped; 5xx answers and dropped connections are retried a bounded number
 * of times; anything else is refused with one line naming the check.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createStreamHash } from '../../lib/hashing.js';
import { OciError } from './errors.js';

export const MEDIA = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;
export const MANIFEST_TYPES: readonly string[] = [MEDIA.ociManifest, MEDIA.dockerManifest];
export const INDEX_TYPES: readonly string[] = [MEDIA.ociIndex, MEDIA.dockerList];

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { architecture: string; os: string; variant?: string };
  artifactType?: string;
}

export interface Manifest {
  schemaVersion: 2;
  mediaType: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface Index {
  schemaVersion: 2;
  mediaType: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

export interface FetchedManifest {
  digest: string;
  mediaType: string;
  body: Buffer;
  json: Manifest | Index;
}

export interface RegistryOptions {
  /** `user:password` for the registry (Basic, or to get a Bearer token). */
  credentials?: { username: string; password: string };
  /** PEM of the CA the registry's certificate comes from (else the system's). */
  ca?: string;
  /** Plain http instead of https: for tests and loopback registries only. */
  plainHttp?: boolean;
  stallTimeoutMs?: number;
  /** Further attempts after the first, for retryable failures. */
  retries?: number;
  retryDelayMs?: number;
  /** Called while long transfers run, with the bytes moved so far. */
  progress?: (bytes: number) => void;
}

const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const sha256 = (data: Buffer | string) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  stream: http.IncomingMessage;
}

interface Send {
  method: string;
  /** A path under the registry, or an absolute URL (upload locations, token realms). */
  target: string;
  headers?: Record<string, string>;
  /** The body: bytes, or a function opening a fresh stream for each attempt. */
  body?: Buffer | (() => Readable);
  length?: number;
  scope: string;
}

/** Reads an answer's body, at most `limit` bytes. */
async function readBody(stream: Readable, limit: number, check: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      stream.destroy();
      throw new OciError(check, `the registry's answer is larger than ${limit} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** `Bearer realm="...",service="...",scope="..."` into its scheme and parameters. */
export function parseChallenge(header: string): { scheme: string; params: Record<string, string> } {
  const m = /^(\w+)\s*(.*)$/s.exec(header.trim());
  const params: Record<string, string> = {};
  for (const p of (m?.[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)) params[p[1]!.toLowerCase()] = p[2]!;
  return { scheme: (m?.[1] ?? '').toLowerCase(), params };
}

export class RegistryClient {
  readonly base: string;
  private authorization: string | undefined;
  private readonly agent: http.Agent;
  private readonly stallMs: number;
  private readonly retries: number;
  private readonly retryDelayMs: number;

  constructor(
    readonly registry: string,
    readonly repository: string,
    private readonly options: RegistryOptions = {},
  ) {
    this.base = `${options.plainHttp ? 'http' : 'https'}://${registry}`;
    this.agent = options.plainHttp
      ? new http.Agent({ keepAlive: true })
      : new https.Agent({ keepAlive: true, ...(options.ca ? { ca: options.ca } : {}) });
    this.stallMs = options.stallTimeoutMs ?? 30_000;
    this.retries = options.retries ?? 3;
    this.retryDelayMs = options.retryDelayMs ?? 500;
  }

  close(): void {
    this.agent.destroy();
  }

  /** One request, answered or failed; the stall timer runs until the headers and again per body chunk. */
  private request(
    method: string,
    url: URL,
    headers: Record<string, string>,
    body?: Buffer | Readable,
  ): Promise<Answer> {
    const lib = url.protocol === 'http:' ? http : https;
    return new Promise((resolve, reject) => {
      const req = lib.request(
        url,
        {
          method,
          headers,
          agent: url.origin === this.base ? this.agent : undefined,
          ...(url.protocol === 'https:' && this.options.ca ? { ca: this.options.ca } : {}),
        },
        (res) => {
          res.setTimeout(this.stallMs, () =>
            res.destroy(new OciError('stalled', `${method} ${url.pathname}: nothing for ${this.stallMs} ms`, true)),
          );
          resolve({ status: res.statusCode ?? 0, headers: res.headers, stream: res });
        },
      );
      req.setTimeout(this.stallMs, () =>
        req.destroy(new OciError('stalled', `${method} ${url.pathname}: no answer for ${this.stallMs} ms`, true)),
      );
      req.on('error', (error) =>
        reject(
          error instanceof OciError
            ? error
            : new OciError('network', `${method} ${url.host}${url.pathname}: ${error.message}`, true),
        ),
      );
      if (body === undefined) req.end();
      else if (Buffer.isBuffer(body)) req.end(body);
      else {
        body.on('error', (error) => req.destroy(error));
        body.pipe(req);
      }
    });
  }

  /** Answers a 401's challenge: Basic with the credentials, or a Bearer token from the realm. */
  private async authenticate(challenge: string | undefined, scope: string): Promise<boolean> {
    if (!challenge) return false;
    const { scheme, params } = parseChallenge(challenge);
    const creds = this.options.credentials;
    const basic = creds ? `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}` : undefined;
    if (scheme === 'basic') {
      if (!basic || this.authorization === basic) return false;
      this.authorization = basic;
      return true;
    }
    if (scheme !== 'bearer' || !params.realm) return false;
    const realm = new URL(params.realm);
    if (params.service) realm.searchParams.set('service', params.service);
    realm.searchParams.set('scope', params.scope ?? `repository:${this.repository}:${scope}`);
    const answer = await this.request('GET', realm, basic ? { authorization: basic } : {});
    const body = await readBody(answer.stream, 1024 * 1024, 'auth');
    if (answer.status !== 200)
      throw new OciError(
        'auth',
        `the token service at ${realm.host} answered ${answer.status}${basic ? '' : ' (no credentials given)'}`,
      );
    const token = JSON.parse(body.toString('utf8')) as { token?: string; access_token?: string };
    const value = token.token ?? token.access_token;
    if (!value) throw new OciError('auth', `the token service at ${realm.host} gave no token`);
    const bearer = `Bearer ${value}`;
    if (this.authorization === bearer) return false;
    this.authorization = bearer;
    return true;
  }

  /**
   * Sends, answering one authentication challenge, retrying what is worth retrying; the answer's
   * status is one of `expect` or the request is refused naming it.
   */
  private async send(request: Send, expect: number[]): Promise<Answer> {
    const url = new URL(request.target, this.base);
    for (let attempt = 0, authed = false; ; attempt++) {
      const headers: Record<string, string> = {
        ...request.headers,
        ...(this.authorization && url.origin === this.base ? { authorization: this.authorization } : {}),
      };
      if (request.length !== undefined) headers['content-length'] = String(request.length);
      let answer: Answer;
      try {
        const body = typeof request.body === 'function' ? request.body() : request.body;
        answer = await this.request(request.method, url, headers, body);
      } catch (error) {
        if (error instanceof OciError && error.retryable && attempt < this.retries) {
          await new Promise((r) => setTimeout(r, this.retryDelayMs * 2 ** attempt));
          continue;
        }
        throw error;
      }
      if (answer.status === 401 && !authed) {
        answer.stream.resume();
        authed = true;
        if (await this.authenticate(answer.headers['www-authenticate'], request.scope)) {
          attempt--;
          continue;
        }
      }
      if (expect.includes(answer.status)) return answer;
      const text = (await readBody(answer.stream, 64 * 1024, 'registry').catch(() => Buffer.alloc(0))).toString('utf8');
      const code = /"code"\s*:\s*"([A-Z_]+)"/.exec(text)?.[1];
      const what = `${request.method} ${url.pathname}`;
      if (answer.status >= 500 && attempt < this.retries) {
        await new Promise((r) => setTimeout(r, this.retryDelayMs * 2 ** attempt));
        continue;
      }
      if (answer.status === 401 || answer.status === 403)
        throw new OciError(
          'auth',
          `${what}: the registry answered ${answer.status}${this.options.credentials ? ' to the credentials given' : ' and no credentials were given'}`,
        );
      if (answer.status === 404)
        throw new OciError('not-found', `${what}: the registry answered 404${code ? ` ${code}` : ''}`);
      throw new OciError(
        'registry',
        `${what}: the registry answered ${answer.status}${code ? ` ${code}` : ''}`,
        answer.status >= 500,
      );
    }
  }

  private path(kind: 'manifests' | 'blobs' | 'tags', ref = ''): string {
    return `/v2/${this.repository}/${kind}/${ref}`;
  }

  /** Checks the registry speaks /v2/ and that the credentials are taken. */
  async ping(): Promise<void> {
    const answer = await this.send({ method: 'GET', target: '/v2/', scope: 'pull' }, [200]);
    answer.stream.resume();
  }

  /** The manifest (or index) by tag or digest, its sha256 checked; undefined when the registry has none. */
  async getManifest(ref: string, options: { missingOk?: boolean } = {}): Promise<FetchedManifest | undefined> {
    let answer: Answer;
    try {
      answer = await this.send(
        {
          method: 'GET',
          target: this.path('manifests', ref),
          headers: { accept: [...MANIFEST_TYPES, ...INDEX_TYPES].join(', ') },
          scope: 'pull',
        },
        [200],
      );
    } catch (error) {
      if (options.missingOk && error instanceof OciError && error.check === 'not-found') return undefined;
      throw error;
    }
    const body = await readBody(answer.stream, MAX_MANIFEST_BYTES, 'manifest');
    const digest = sha256(body);
    if (ref.startsWith('sha256:') && digest !== ref)
      throw new OciError('digest', `manifest ${ref} has digest ${digest}`);
    const said = answer.headers['docker-content-digest'];
    if (typeof said === 'string' && said.startsWith('sha256:') && said !== digest)
      throw new OciError('digest', `the registry says manifest ${ref} is ${said}, its bytes are ${digest}`);
    let json: Manifest | Index;
    try {
      json = JSON.parse(body.toString('utf8')) as Manifest | Index;
    } catch {
      throw new OciError('manifest', `manifest ${ref} is not JSON`);
    }
    const mediaType = json.mediaType ?? String(answer.headers['content-type'] ?? '').split(';')[0];
    if (![...MANIFEST_TYPES, ...INDEX_TYPES].includes(mediaType))
      throw new OciError(
        'media-type',
        `manifest ${ref} is ${mediaType || 'of no media type'}, not an OCI or Docker v2 manifest or index`,
      );
    return { digest, mediaType, body, json };
  }

  /** The digest the registry holds under a tag or digest, without its body; undefined when none. */
  async headManifest(ref: string): Promise<string | undefined> {
    try {
      const answer = await this.send(
        {
          method: 'HEAD',
          target: this.path('manifests', ref),
          headers: { accept: [...MANIFEST_TYPES, ...INDEX_TYPES].join(', ') },
          scope: 'pull',
        },
        [200],
      );
      answer.stream.resume();
      const digest = answer.headers['docker-content-digest'];
      return typeof digest === 'string' ? digest : (await this.getManifest(ref))?.digest;
    } catch (error) {
      if (error instanceof OciError && error.check === 'not-found') return undefined;
      throw error;
    }
  }

  /** Puts a manifest under a tag (or its digest); returns its digest. */
  async putManifest(ref: string, body: Buffer, mediaType: string): Promise<string> {
    const digest = sha256(body);
    const answer = await this.send(
      {
        method: 'PUT',
        target: this.path('manifests', ref),
        headers: { 'content-type': mediaType },
        body,
        length: body.length,
        scope: 'push,pull',
      },
      [201, 200],
    );
    answer.stream.resume();
    const said = answer.headers['docker-content-digest'];
    if (typeof said === 'string' && said !== digest)
      throw new OciError('digest', `the registry stored manifest ${digest} as ${said}`);
    return digest;
  }

  /** Deletes a manifest by digest (and so every tag naming it), where the registry allows deletes. */
  async deleteManifest(digest: string): Promise<void> {
    const answer = await this.send(
      { method: 'DELETE', target: this.path('manifests', digest), scope: 'push,pull,delete' },
      [202, 200],
    );
    answer.stream.resume();
  }

  async hasBlob(digest: string): Promise<boolean> {
    try {
      const answer = await this.send({ method: 'HEAD', target: this.path('blobs', digest), scope: 'pull' }, [200]);
      answer.stream.resume();
      return true;
    } catch (error) {
      if (error instanceof OciError && error.check === 'not-found') return false;
      throw error;
    }
  }

  /**
   * Uploads a blob unless the registry has it; returns whether bytes were sent. The upload is one
   * streamed PUT to the session the registry opened; a failed attempt starts a new session.
   */
  async pushBlob(digest: string, size: number, body: Buffer | (() => Readable)): Promise<boolean> {
    if (await this.hasBlob(digest)) return false;
    for (let attempt = 0; ; attempt++) {
      const opened = await this.send(
        { method: 'POST', target: this.path('blobs', 'uploads/'), headers: {}, length: 0, scope: 'push,pull' },
        [202],
      );
      opened.stream.resume();
      const location = opened.headers.location;
      if (typeof location !== 'string')
        throw new OciError('registry', 'the registry opened an upload without a Location');
      const target = new URL(location, this.base);
      target.searchParams.set('digest', digest);
      try {
        const answer = await this.send(
          {
            method: 'PUT',
            target: target.toString(),
            headers: { 'content-type': 'application/octet-stream' },
            body,
            length: size,
            scope: 'push,pull',
          },
          [201],
        );
        answer.stream.resume();
        return true;
      } catch (error) {
        if (error instanceof OciError && error.retryable && attempt < this.retries) continue;
        throw error;
      }
    }
  }

  /** A small blob (config, signature payload) in memory, its digest checked. */
  async getBlob(digest: string, limit = MAX_MANIFEST_BYTES): Promise<Buffer> {
    const answer = await this.send({ method: 'GET', target: this.path('blobs', digest), scope: 'pull' }, [200]);
    const body = await readBody(answer.stream, limit, 'blob');
    if (sha256(body) !== digest) throw new OciError('digest', `blob ${digest} has digest ${sha256(body)}`);
    return body;
  }

  /**
   * A blob into `target`: bytes go to `<target>.partial`, hashed (sha256, and sha512 for the
   * registry's catalog) as they come; an interrupted transfer resumes with a Range request; the
   * file takes its name only when its size and digest are the descriptor's. A partial file that does
   * not hash to the digest in the end is removed.
   */
  async downloadBlob(
    descriptor: { digest: string; size: number },
    target: string,
  ): Promise<{ path: string; sha512: string; bytes: number; resumedAt: number[]; transferred: number }> {
    const partial = `${target}.partial`;
    await fsp.mkdir(path.dirname(target), { recursive: true });
    const resumedAt: number[] = [];
    let transferred = 0;
    for (let attempt = 0; ; attempt++) {
      const have = await fsp.stat(partial).then(
        (s) => s.size,
        () => 0,
      );
      const headers: Record<string, string> = have > 0 ? { range: `bytes=${have}-` } : {};
      let answer: Answer;
      try {
        answer = await this.send(
          { method: 'GET', target: this.path('blobs', descriptor.digest), headers, scope: 'pull' },
          [200, 206],
        );
      } catch (error) {
        if (error instanceof OciError && error.retryable && attempt < this.retries) continue;
        throw error;
      }
      const resumed = answer.status === 206 && have > 0;
      if (resumed) resumedAt.push(have);
      const start = resumed ? have : 0;
      let written = start;
      // Hashed as written (sha512 on a thread of its own); a resumed file's first part is hashed from disk first.
      const a = createHash('sha256');
      const b = createStreamHash('sha512');
      let batch = b.batch();
      let filled = 0;
      const add = async (chunk: Buffer) => {
        a.update(chunk);
        for (let at = 0; at < chunk.length;) {
          const copied = chunk.copy(batch, filled, at);
          filled += copied;
          at += copied;
          if (filled === batch.length) {
            const full = batch;
            [batch, filled] = [b.batch(), 0];
            await b.update(full, full.length);
          }
        }
      };
      try {
        if (resumed)
          for await (const chunk of fs.createReadStream(partial, { end: have - 1, highWaterMark: 4 * 1024 * 1024 }))
            await add(chunk as Buffer);
        const counter = new Transform({
          transform: (chunk: Buffer, _enc, done) => {
            written += chunk.length;
            transferred += chunk.length;
            if (written > descriptor.size)
              return done(
                new OciError('size', `blob ${descriptor.digest} is larger than its ${descriptor.size} bytes`),
              );
            this.options.progress?.(written);
            add(chunk).then(() => done(null, chunk), done);
          },
        });
        await pipeline(
          answer.stream,
          counter,
          fs.createWriteStream(partial, resumed ? { flags: 'a' } : { flags: 'w' }),
        );
      } catch (error) {
        b.close();
        const retry = !(error instanceof OciError) || error.retryable;
        if (retry && attempt < this.retries) {
          await new Promise((r) => setTimeout(r, this.retryDelayMs * 2 ** attempt));
          continue;
        }
        if (retry)
          throw new OciError(
            'stalled',
            `blob ${descriptor.digest} stopped at ${written} of ${descriptor.size} bytes after ${attempt + 1} attempts`,
          );
        await fsp.rm(partial, { force: true });
        throw error;
      }
      if (written < descriptor.size) {
        if (attempt < this.retries) continue;
        throw new OciError('size', `blob ${descriptor.digest} ended at ${written} of ${descriptor.size} bytes`);
      }
      if (filled > 0) await b.update(batch, filled);
      const got = `sha256:${a.digest('hex')}`;
      const sha512 = await b.digest();
      b.close();
      if (got !== descriptor.digest) {
        await fsp.rm(partial, { force: true });
        throw new OciError('digest', `blob ${descriptor.digest} downloaded as ${got}`);
      }
      await fsp.rename(partial, target);
      return { path: target, sha512, bytes: written, resumedAt, transferred };
    }
  }

  /** Every tag of the repository (following `Link` pages); none for a repository the registry lacks. */
  async listTags(): Promise<string[]> {
    const tags: string[] = [];
    let target: string | undefined = `${this.path('tags', 'list')}?n=1000`;
    while (target) {
      let answer: Answer;
      try {
        answer = await this.send({ method: 'GET', target, scope: 'pull' }, [200]);
      } catch (error) {
        if (error instanceof OciError && error.check === 'not-found' && tags.length === 0) return [];
        throw error;
      }
      const body = JSON.parse((await readBody(answer.stream, MAX_MANIFEST_BYTES, 'tags')).toString('utf8')) as {
        tags?: string[] | null;
      };
      tags.push(...(body.tags ?? []));
      const link = /<([^>]+)>;\s*rel="?next"?/.exec(String(answer.headers.link ?? ''));
      target = link?.[1];
    }
    return tags;
  }
}

/** sha256 (as a digest) and sha512 (hex) of a file in one pass. */
export async function hashFile(file: string): Promise<{ sha256: string; sha512: string; bytes: number }> {
  const a = createHash('sha256');
  const b = createHash('sha512');
  let bytes = 0;
  await pipeline(
    fs.createReadStream(file, { highWaterMark: 4 * 1024 * 1024 }),
    new Writable({
      write(chunk: Buffer, _enc, done) {
        a.update(chunk);
        b.update(chunk);
        bytes += chunk.length;
        done();
      },
    }),
  );
  return { sha256: `sha256:${a.digest('hex')}`, sha512: b.digest('hex'), bytes };
}

export const digestOf = sha256;
