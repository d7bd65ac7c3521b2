/**
 * OpenNebula's image registry over its XML-RPC API. Every call carries the session string
 * "user:password" as its first parameter; that string lives only in this object and never reaches a
 * log line, an error or a result.
 */
import http from 'node:http';
import https from 'node:https';
import type { Logger } from '../../../lib/logger.js';
import {
  bitsToMode,
  checkImageName,
  checkMode,
  checkTemplateKey,
  modeToBits,
  pollUntilReady,
  RegistryError,
  stateFromNumber,
  TEMPLATE,
  type DiskFormat,
  type ImageRegistry,
  type Ownership,
  type RegisterRequest,
  type RegistryImage,
  type WaitOptions,
} from './types.js';
import { child, childText, children, parseXml, type XmlElement } from './xml.js';
import { decodeResponse, encodeCall, type XmlRpcValue } from './xmlrpc.js';

export interface OpenNebulaOptions {
  /** The XML-RPC endpoint, e.g. http://one.example.org:2633/RPC2. */
  endpoint: string;
  user: string;
  password: string;
  datastoreId: number;
  format?: DiskFormat;
  timeoutMs?: number;
  logger?: Logger;
}

/** OpenNebula's error codes, as returned in the third element of a failed call. */
export const ONE_ERRORS = {
  AUTHENTICATION: 0x100,
  AUTHORIZATION: 0x200,
  NO_EXISTS: 0x400,
  ACTION: 0x800,
  XML_RPC_API: 0x1000,
  INTERNAL: 0x2000,
  ALLOCATE: 0x4000,
  LOCKED: 0x8000,
} as const;

const PERMISSION_TAGS = [
  'OWNER_U',
  'OWNER_M',
  'OWNER_A',
  'GROUP_U',
  'GROUP_M',
  'GROUP_A',
  'OTHER_U',
  'OTHER_M',
  'OTHER_A',
];

/** one.image.update's last parameter: 0 replaces the whole template, 1 merges into it. */
const TEMPLATE_MERGE = 1;

/** Filter flag -2: every image the session may see, not only its own. */
const ALL_IMAGES = -2;

function templateAttributes(template: XmlElement | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const attribute of template?.children ?? []) {
    if (attribute.children.length === 0) out[attribute.name] = attribute.text;
  }
  return out;
}

/** An <IMAGE> document as the registry-neutral record. */
export function imageFromXml(image: XmlElement): RegistryImage {
  const permissions = child(image, 'PERMISSIONS');
  const bits = PERMISSION_TAGS.map((tag) => (permissions && childText(permissions, tag)?.trim() === '1' ? 1 : 0));
  return {
    id: Number(childText(image, 'ID')),
    name: childText(image, 'NAME') ?? '',
    state: stateFromNumber(Number(childText(image, 'STATE'))),
    ownerId: Number(childText(image, 'UID')),
    groupId: Number(childText(image, 'GID')),
    mode: bitsToMode(bits),
    template: templateAttributes(child(image, 'TEMPLATE')),
  };
}

/** A template in OpenNebula's KEY="value" syntax; quotes and backslashes escaped. */
export function renderTemplate(attributes: Record<string, string>): string {
  const quote = (value: string) => `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
  return Object.entries(attributes)
    .map(([key, value]) => `${checkTemplateKey(key)}=${quote(value)}`)
    .join('\n');
}

export class OpenNebulaRegistry implements ImageRegistry {
  readonly format: DiskFormat;
  // Private fields, not options kept whole: the password must not surface in a dump of this object.
  readonly #session: string;
  readonly #url: URL;
  readonly #datastoreId: number;
  readonly #timeoutMs: number;
  readonly #logger: Logger | undefined;

  constructor(options: OpenNebulaOptions) {
    if (options.user.includes(':')) throw new RegistryError('config', 'the OpenNebula user name must not contain ":"');
    this.#session = `${options.user}:${options.password}`;
    this.#url = new URL(options.endpoint);
    if (this.#url.protocol !== 'http:' && this.#url.protocol !== 'https:')
      throw new RegistryError('config', 'the endpoint must be an http(s) URL');
    if (this.#url.username || this.#url.password)
      throw new RegistryError('config', 'credentials belong in user and password, not in the endpoint URL');
    this.#datastoreId = options.datastoreId;
    this.#timeoutMs = options.timeoutMs ?? 60_000;
    this.#logger = options.logger;
    this.format = options.format ?? 'qcow2';
  }

  /** Calls `method` with the session first; OpenNebula answers [ok, result-or-message, error code]. */
  private async call(method: string, ...params: XmlRpcValue[]): Promise<XmlRpcValue> {
    const started = performance.now();
    const body = encodeCall(method, [this.#session, ...params]);
    const answer = decodeResponse(await this.post(body));
    // Parameters after the session are ids, names and templates: safe to log; the session is not.
    const durationMs = Math.round(performance.now() - started);
    if (!answer.ok) {
      this.#logger?.warn({ method, durationMs, fault: answer.code }, 'opennebula call');
      throw new RegistryError(method, `XML-RPC fault ${answer.code}: ${answer.message}`);
    }
    const [ok, result, code] = Array.isArray(answer.value)
      ? answer.value
      : [false, 'malformed response', ONE_ERRORS.INTERNAL];
    this.#logger?.info(
      { method, id: typeof params[0] === 'number' ? params[0] : undefined, durationMs, ok },
      'opennebula call',
    );
    if (ok !== true) throw new RegistryError(method, String(result), typeof code === 'number' ? code : undefined);
    return result!;
  }

  private post(body: string): Promise<string> {
    const client = this.#url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const request = client.request(
        this.#url,
        {
          method: 'POST',
          headers: { 'content-type': 'text/xml', 'content-length': Buffer.byteLength(body) },
          timeout: this.#timeoutMs,
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('error', reject);
          response.on('end', () => {
            if (response.statusCode !== 200)
              reject(new RegistryError('xml-rpc', `HTTP ${response.statusCode} from ${this.#url.host}`));
            else resolve(Buffer.concat(chunks).toString('utf8'));
          });
        },
      );
      request.on('timeout', () =>
        request.destroy(new RegistryError('xml-rpc', `no answer from ${this.#url.host} within ${this.#timeoutMs} ms`)),
      );
      request.on('error', reject);
      request.end(body);
    });
  }

  async list(filter: { imageList?: string } = {}): Promise<RegistryImage[]> {
    const xml = String(await this.call('one.imagepool.info', ALL_IMAGES, -1, -1));
    const images = children(parseXml(xml), 'IMAGE').map(imageFromXml);
    return filter.imageList === undefined
      ? images
      : images.filter((image) => image.template[TEMPLATE.imageList] === filter.imageList);
  }

  async info(id: number): Promise<RegistryImage> {
    return imageFromXml(parseXml(String(await this.call('one.image.info', id))));
  }

  async register(request: RegisterRequest): Promise<number> {
    const template = renderTemplate({
      ...request.template,
      NAME: checkImageName(request.name),
      PATH: request.path,
      TYPE: 'OS',
      FORMAT: request.format,
      DRIVER: request.format,
    });
    // Optional trailing parameters (capacity check, decrypt, force) are left out: every version accepts the short forms.
    return Number(await this.call('one.image.allocate', template, this.#datastoreId));
  }

  async rename(id: number, name: string): Promise<void> {
    await this.call('one.image.rename', id, checkImageName(name));
  }

  async chown(id: number, owner: Ownership): Promise<void> {
    await this.call('one.image.chown', id, owner.userId, owner.groupId);
  }

  async chmod(id: number, mode: string): Promise<void> {
    await this.call('one.image.chmod', id, ...modeToBits(checkMode(mode)));
  }

  async setEnabled(id: number, enabled: boolean): Promise<void> {
    await this.call('one.image.enable', id, enabled);
  }

  async updateTemplate(id: number, attributes: Record<string, string>): Promise<void> {
    await this.call('one.image.update', id, renderTemplate(attributes), TEMPLATE_MERGE);
  }

  async delete(id: number): Promise<void> {
    await this.call('one.image.delete', id);
  }

  waitReady(id: number, options?: WaitOptions): Promise<RegistryImage> {
    return pollUntilReady(() => this.info(id), options);
  }
}
