/**
 * A stand-in for OpenNebula's XML-RPC image API on 127.0.0.1, keeping the behaviour the adapter
 * relies on as OpenNebula documents it:
 * - every call starts with the session "user:password"; a wrong one answers AUTHENTICATION (0x100);
 * - answers are [ok, result-or-message, error code];
 * - allocate puts an image in INIT and it turns READY after `readyDelayMs`;
 * - rename works in any state but refuses a name the owner already uses (ACTION);
 * - enable/disable only between READY and DISABLED (ERROR may go either way); USED refuses (ACTION);
 * - delete refuses an image in use by VMs (USED, USED_PERS, LOCKED_USED*);
 * - update replaces the template (type 0) or merges into it (type 1, same names replaced), in any
 *   state, leaving name, owner, group, permissions and state alone; another type is XML_RPC_API;
 * - rename, chmod, enable, update and delete need MANAGE, chown needs ADMIN, for users other than uid 0;
 * - chown and chmod take -1 for "leave as it is".
 * Fault injection: `failCall(method, n)` makes the n-th next call of a method fail.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeCall, encodeFault, encodeResponse, type XmlRpcValue } from '../../activities/cloud/registry/xmlrpc.js';
import { escapeXml } from '../../activities/cloud/registry/xml.js';

export const STATE = {
  INIT: 0,
  READY: 1,
  USED: 2,
  DISABLED: 3,
  LOCKED: 4,
  ERROR: 5,
  USED_PERS: 8,
  LOCKED_USED: 9,
  LOCKED_USED_PERS: 10,
} as const;
export const ERROR = {
  AUTHENTICATION: 0x100,
  AUTHORIZATION: 0x200,
  NO_EXISTS: 0x400,
  ACTION: 0x800,
  XML_RPC_API: 0x1000,
  INTERNAL: 0x2000,
  ALLOCATE: 0x4000,
} as const;

interface User {
  password: string;
  uid: number;
  gid: number;
}

export interface ContractImage {
  id: number;
  name: string;
  uid: number;
  gid: number;
  /** OWNER_U, OWNER_M, OWNER_A, GROUP_U, ... OTHER_A. */
  permissions: number[];
  state: number;
  runningVms: number;
  template: Record<string, string>;
}

class Refusal extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** OpenNebula's template syntax, KEY="value" with \" and \\ escapes, one attribute a line. */
function parseTemplate(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const attribute = /([A-Z][A-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"/g;
  for (const m of text.matchAll(attribute)) out[m[1]!] = m[2]!.replace(/\\(.)/g, '$1');
  return out;
}

function imageXml(image: ContractImage): string {
  const tags = ['OWNER_U', 'OWNER_M', 'OWNER_A', 'GROUP_U', 'GROUP_M', 'GROUP_A', 'OTHER_U', 'OTHER_M', 'OTHER_A'];
  const permissions = tags.map((tag, i) => `<${tag}>${image.permissions[i]}</${tag}>`).join('');
  const template = Object.entries(image.template)
    .map(([k, v]) => `<${k}><![CDATA[${v}]]></${k}>`)
    .join('');
  return (
    `<IMAGE><ID>${image.id}</ID><UID>${image.uid}</UID><GID>${image.gid}</GID><NAME>${escapeXml(image.name)}</NAME>` +
    `<PERMISSIONS>${permissions}</PERMISSIONS><TYPE>0</TYPE><PERSISTENT>0</PERSISTENT><STATE>${image.state}</STATE>` +
    `<RUNNING_VMS>${image.runningVms}</RUNNING_VMS><TEMPLATE>${template}</TEMPLATE></IMAGE>`
  );
}

const STATE_NAMES = [
  'INIT',
  'READY',
  'USED',
  'DISABLED',
  'LOCKED',
  'ERROR',
  'CLONE',
  'DELETE',
  'USED_PERS',
  'LOCKED_USED',
  'LOCKED_USED_PERS',
];
const IN_USE: number[] = [STATE.USED, STATE.USED_PERS, STATE.LOCKED_USED, STATE.LOCKED_USED_PERS];

export class OpenNebulaContract {
  readonly images = new Map<number, ContractImage>();
  /** Every call's method name, in order (never the session). */
  readonly calls: string[] = [];
  readonly users = new Map<string, User>([
    ['oneadmin', { password: 'onepass', uid: 0, gid: 0 }],
    ['alice', { password: 'alicepass', uid: 5, gid: 100 }],
  ]);
  readyDelayMs = 150;
  /** Set by allocate when true: the image goes to ERROR instead of READY. */
  failNextAllocation = false;
  private nextId = 0;
  private faults = new Map<string, { countdown: number; code: number; message: string }>();
  private server?: http.Server;
  url = '';

  /** The n-th next call of `method` (1 = the very next) fails with `code` and `message`. */
  failCall(method: string, n = 1, code: number = ERROR.INTERNAL, message = 'injected failure'): void {
    this.faults.set(method, { countdown: n, code, message });
  }

  /** Test hook: VMs start or stop using an image. */
  setRunningVms(id: number, vms: number): void {
    const image = this.get(id);
    image.runningVms = vms;
    if (vms > 0 && (image.state === STATE.READY || image.state === STATE.USED)) image.state = STATE.USED;
    if (vms === 0 && image.state === STATE.USED) image.state = STATE.READY;
  }

  setState(id: number, state: number): void {
    this.get(id).state = state;
  }

  async start(): Promise<string> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        res.setHeader('content-type', 'text/xml');
        try {
          const { method, params } = decodeCall(Buffer.concat(chunks).toString('utf8'));
          this.calls.push(method);
          res.end(encodeResponse(this.dispatch(method, params)));
        } catch (error) {
          res.end(encodeFault(-501, (error as Error).message));
        }
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/RPC2`;
    return this.url;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }

  private get(id: number): ContractImage {
    const image = this.images.get(id);
    if (!image) throw new Refusal(ERROR.NO_EXISTS, `[one.image.info] Error getting image [${id}].`);
    return image;
  }

  private dispatch(method: string, params: XmlRpcValue[]): XmlRpcValue {
    try {
      const user = this.authenticate(params[0]);
      this.injectFault(method);
      return [true, this.execute(method, user, params.slice(1)), 0];
    } catch (error) {
      if (error instanceof Refusal) return [false, error.message, error.code];
      throw error;
    }
  }

  private authenticate(session: XmlRpcValue | undefined): User {
    const [name, ...rest] = typeof session === 'string' ? session.split(':') : [];
    const user = name ? this.users.get(name) : undefined;
    if (!user || user.password !== rest.join(':'))
      throw new Refusal(ERROR.AUTHENTICATION, "User couldn't be authenticated, aborting call.");
    return user;
  }

  private injectFault(method: string): void {
    const fault = this.faults.get(method);
    if (!fault) return;
    fault.countdown -= 1;
    if (fault.countdown > 0) return;
    this.faults.delete(method);
    throw new Refusal(fault.code, `[${method}] ${fault.message}`);
  }

  /** MANAGE (bit 1) or ADMIN (bit 2) of owner/group/other; uid 0 may do anything. */
  private authorize(user: User, image: ContractImage, right: 1 | 2, method: string): void {
    if (user.uid === 0) return;
    const base = user.uid === image.uid ? 0 : user.gid === image.gid ? 3 : 6;
    if (image.permissions[base + right] !== 1) {
      throw new Refusal(
        ERROR.AUTHORIZATION,
        `[${method}] User [${user.uid}] : Not authorized to perform ${right === 1 ? 'MANAGE' : 'ADMIN'} IMAGE [${image.id}].`,
      );
    }
  }

  private execute(method: string, user: User, p: XmlRpcValue[]): XmlRpcValue {
    const num = (i: number) => {
      if (typeof p[i] !== 'number')
        throw new Refusal(ERROR.XML_RPC_API, `[${method}] parameter ${i + 1} must be an int`);
      return p[i];
    };
    switch (method) {
      case 'one.imagepool.info':
        num(0);
        return `<IMAGE_POOL>${[...this.images.values()].map(imageXml).join('')}</IMAGE_POOL>`;
      case 'one.image.info':
        return imageXml(this.get(num(0)));
      case 'one.image.allocate':
        return this.allocate(user, String(p[0]), num(1));
      case 'one.image.rename':
        return this.rename(user, num(0), String(p[1]));
      case 'one.image.chown':
        return this.chown(user, num(0), num(1), num(2));
      case 'one.image.chmod':
        return this.chmod(
          user,
          num(0),
          p.slice(1, 10).map((v) => Number(v)),
        );
      case 'one.image.enable':
        return this.enable(user, num(0), p[1] === true);
      case 'one.image.update':
        return this.updateTemplate(user, num(0), String(p[1]), num(2));
      case 'one.image.delete':
        return this.remove(user, num(0));
      default:
        throw new Refusal(ERROR.XML_RPC_API, `unknown method ${method}`);
    }
  }

  private allocate(user: User, templateText: string, datastore: number): number {
    const template = parseTemplate(templateText);
    const name = template.NAME;
    if (!name) throw new Refusal(ERROR.ALLOCATE, '[one.image.allocate] No NAME in template.');
    if (!template.PATH) throw new Refusal(ERROR.ALLOCATE, '[one.image.allocate] No PATH in template.');
    if (datastore < 0)
      throw new Refusal(ERROR.NO_EXISTS, `[one.image.allocate] Error getting datastore [${datastore}].`);
    this.refuseDuplicate(name, user.uid, 'one.image.allocate');
    const id = this.nextId++;
    const rest = { ...template };
    delete rest.NAME;
    const image: ContractImage = {
      id,
      name,
      uid: user.uid,
      gid: user.gid,
      permissions: [1, 1, 0, 0, 0, 0, 0, 0, 0],
      state: STATE.INIT,
      runningVms: 0,
      template: rest,
    };
    this.images.set(id, image);
    const broken = this.failNextAllocation;
    this.failNextAllocation = false;
    setTimeout(() => {
      if (image.state === STATE.INIT) image.state = broken ? STATE.ERROR : STATE.READY;
    }, this.readyDelayMs).unref();
    return id;
  }

  private refuseDuplicate(name: string, uid: number, method: string): void {
    const clash = [...this.images.values()].find((i) => i.name === name && i.uid === uid);
    if (clash) throw new Refusal(ERROR.ACTION, `[${method}] NAME is already taken by IMAGE ${clash.id}.`);
  }

  private rename(user: User, id: number, name: string): number {
    const image = this.get(id);
    if (image.name === name) return id;
    this.authorize(user, image, 1, 'one.image.rename');
    this.refuseDuplicate(name, image.uid, 'one.image.rename');
    image.name = name;
    return id;
  }

  private chown(user: User, id: number, uid: number, gid: number): number {
    const image = this.get(id);
    this.authorize(user, image, 2, 'one.image.chown');
    if (uid >= 0) image.uid = uid;
    if (gid >= 0) image.gid = gid;
    return id;
  }

  private chmod(user: User, id: number, bits: number[]): number {
    const image = this.get(id);
    this.authorize(user, image, 1, 'one.image.chmod');
    // Granting ADMIN bits takes ADMIN rights, as in OpenNebula.
    if (bits.some((b, i) => i % 3 === 2 && b === 1 && image.permissions[i] !== 1))
      this.authorize(user, image, 2, 'one.image.chmod');
    bits.forEach((bit, i) => {
      if (bit !== -1) image.permissions[i] = bit ? 1 : 0;
    });
    return id;
  }

  private enable(user: User, id: number, enable: boolean): number {
    const image = this.get(id);
    this.authorize(user, image, 1, 'one.image.enable');
    const from: number[] = enable
      ? [STATE.DISABLED, STATE.ERROR, STATE.READY]
      : [STATE.READY, STATE.ERROR, STATE.DISABLED];
    if (!from.includes(image.state)) {
      throw new Refusal(
        ERROR.ACTION,
        `[one.image.enable] Image cannot be ${enable ? 'enabled' : 'disabled'} in state ${STATE_NAMES[image.state]}.`,
      );
    }
    image.state = enable ? STATE.READY : STATE.DISABLED;
    return id;
  }

  private updateTemplate(user: User, id: number, templateText: string, type: number): number {
    const image = this.get(id);
    this.authorize(user, image, 1, 'one.image.update');
    if (type !== 0 && type !== 1)
      throw new Refusal(
        ERROR.XML_RPC_API,
        `[one.image.update] update type must be 0 (replace) or 1 (merge), got ${type}`,
      );
    const attributes = parseTemplate(templateText);
    image.template = type === 0 ? attributes : { ...image.template, ...attributes };
    return id;
  }

  private remove(user: User, id: number): number {
    const image = this.get(id);
    this.authorize(user, image, 1, 'one.image.delete');
    if (IN_USE.includes(image.state) || image.runningVms > 0) {
      throw new Refusal(
        ERROR.ACTION,
        `[one.image.delete] Cannot delete image in state ${STATE_NAMES[image.state]}, it is used by ${image.runningVms} VMs.`,
      );
    }
    this.images.delete(id);
    return id;
  }
}
