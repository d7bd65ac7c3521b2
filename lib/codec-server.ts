/**
 * The codec server the Temporal Web UI calls to show payloads decoded: POST /decode and /encode
 * with `{"payloads": [...]}` in protobuf JSON (base64 metadata values and data). Only a caller
 * whose bearer token verifies against the key set, and grants read (decode) or write (encode) on
 * the namespace in X-Namespace, gets anything back; everyone else gets 401 or 403 and nothing
 * decoded. Requests are logged without their token.
 */
import http from 'node:http';
import type { Payload, PayloadCodec } from '@temporalio/common';
import { PayloadDecryptionError } from './codec.js';
import type { Logger } from './logger.js';
import { grants, JwtError, verifyJwt, type Access, type Jwks } from './jwt.js';

export interface CodecServerOptions {
  codec: PayloadCodec;
  jwks: Jwks;
  /** Origins (scheme://host:port) whose pages may call the server: the Web UI's. */
  corsOrigins: string[];
  logger: Logger;
}

/** Temporal's own limit on a payload is 2 MiB; a request carries a few. */
const MAX_BODY_BYTES = 8 * 1024 * 1024;
const NAMESPACE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;
const ROUTES: Record<string, Access> = { '/decode': 'read', '/encode': 'write' };

interface JsonPayload {
  metadata?: Record<string, string>;
  data?: string;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function fromJson(p: JsonPayload): Payload {
  if (!p || typeof p !== 'object') throw new HttpError(400, 'payloads[]: expected objects with metadata and data');
  const metadata = Object.fromEntries(
    Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(String(v), 'base64')]),
  );
  return { metadata, data: Buffer.from(p.data ?? '', 'base64') };
}

function toJson(p: Payload): JsonPayload {
  const metadata = Object.fromEntries(
    Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v).toString('base64')]),
  );
  return { metadata, data: Buffer.from(p.data ?? []).toString('base64') };
}

async function readBody(req: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `request body: expected at most ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function parsePayloads(body: Buffer): Payload[] {
  let doc: { payloads?: unknown };
  try {
    doc = JSON.parse(body.toString('utf8')) as { payloads?: unknown };
  } catch {
    throw new HttpError(400, 'request body: expected JSON {"payloads": [...]}');
  }
  if (!Array.isArray(doc?.payloads)) throw new HttpError(400, 'payloads: expected a list');
  return (doc.payloads as JsonPayload[]).map(fromJson);
}

/** Who is asking and whether they may: a verified token that grants `access` on the request's namespace. */
function authorize(req: http.IncomingMessage, jwks: Jwks, access: Access): { namespace: string; subject: string } {
  const auth = req.headers.authorization ?? '';
  const bearer = /^Bearer ([^\s]+)$/i.exec(auth);
  if (!bearer) throw new HttpError(401, 'expected an Authorization: Bearer <token> header');
  let claims;
  try {
    claims = verifyJwt(bearer[1]!, jwks);
  } catch (err) {
    if (err instanceof JwtError) throw new HttpError(401, err.message);
    throw err;
  }
  const namespace = String(req.headers['x-namespace'] ?? '');
  if (!NAMESPACE.test(namespace)) throw new HttpError(403, 'expected an X-Namespace header naming the namespace');
  const subject = typeof claims.sub === 'string' ? claims.sub.slice(0, 128) : '?';
  if (!grants(claims, namespace, access))
    throw new HttpError(403, `token of ${subject} does not grant ${access} on namespace ${namespace}`);
  return { namespace, subject };
}

function send(res: http.ServerResponse, status: number, body?: unknown): void {
  if (body === undefined) {
    res.writeHead(status).end();
    return;
  }
  res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
}

export function createCodecServer(o: CodecServerOptions): http.Server {
  const origins = new Set(o.corsOrigins);
  return http.createServer((req, res) => {
    const origin = req.headers.origin;
    if (origin && origins.has(origin)) {
      res.setHeader('Access-Control-Allow-Origin', origin);
      res.setHeader('Access-Control-Allow-Credentials', 'true');
      res.setHeader('Vary', 'Origin');
    }
    const route = (req.url ?? '').split('?')[0]!.replace(/\/+$/, '');
    const log = (status: number, extra: Record<string, unknown> = {}) =>
      o.logger.info({ method: req.method, route, status, ...extra }, 'codec request');
    if (req.method === 'OPTIONS') {
      // The browser's preflight: allowed for the UI's origin only; it carries no token.
      if (!origin || !origins.has(origin)) return send(res, 403, { error: 'origin not allowed' });
      res.setHeader('Access-Control-Allow-Methods', 'POST, OPTIONS');
      res.setHeader('Access-Control-Allow-Headers', 'Authorization, Content-Type, X-Namespace');
      res.setHeader('Access-Control-Max-Age', '600');
      return send(res, 204);
    }
    const access = ROUTES[route];
    if (!access) return send(res, 404, { error: 'expected POST /decode or /encode' });
    if (req.method !== 'POST') return send(res, 405, { error: 'expected POST' });
    void (async () => {
      try {
        const who = authorize(req, o.jwks, access);
        const payloads = parsePayloads(await readBody(req));
        const out = access === 'read' ? await o.codec.decode(payloads) : await o.codec.encode(payloads);
        send(res, 200, { payloads: out.map(toJson) });
        log(200, { ...who, payloads: payloads.length });
      } catch (err) {
        const status = err instanceof HttpError ? err.status : err instanceof PayloadDecryptionError ? 422 : 500;
        send(res, status, { error: (err as Error).message });
        log(status, { error: (err as Error).message });
      }
    })();
  });
}
