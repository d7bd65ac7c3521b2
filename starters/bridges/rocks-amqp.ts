/**
 * The bridge for existing Rocks clusters: answers the img-storage daemons' AMQP requests (direct
 * exchange, one queue per host bound by its host name) with imgflow's volume workflows behind
 * them, in the old reply shapes, so a Rocks frontend keeps working unchanged. It speaks for one NAS
 * and, optionally, for compute hosts (`list_initiator`, `list_dev`), so no old daemon need be left.
 *
 * A request is answered or refused, never run late. As the old daemons' were, each queue is
 * exclusive to the bridge and deleted with its connection: with no bridge, a frontend's mandatory
 * publish comes back at once. A request that waits in a queue longer than its bound (the sender's
 * `expiration`, else the bridge's timeout) is dead-lettered and refused unrun; one whose sender gave
 * up (its exclusive reply queue is gone) is dropped unrun. With no orchestrator polling yet, the
 * bridge still serves: every request is answered with that error until one does.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Client } from '@temporalio/client';
import { WorkflowFailedError } from '@temporalio/client';
import amqp, {
  type Channel,
  type ChannelModel,
  type ConfirmChannel,
  type ConsumeMessage,
  type GetMessage,
} from 'amqplib';
import { checkHost, checkInt, checkName, checkSpeed, InputError } from '../../common/names.js';
import { queues, WORKFLOW_QUEUE } from '../../common/queues.js';
import type { Logger } from '../../lib/logger.js';
import { pingWorkflow } from '../../workflows/ping.js';
import {
  deleteUpdate,
  setAttrsUpdate,
  unmapUpdate,
  volumeQuery,
  type MapRequest,
  type VolumeAttrs,
  type VolumeView,
} from '../../workflows/volume/messages.js';
import { oneLine } from '../output.js';
import { hasWorker } from '../answers.js';
import { baseVersion, known, listVolumes, mapVolume, volumeHandle } from '../volume-client.js';

const GiB = 1024 ** 3;
/** Who the volume histories name for requests that came through the bridge. */
const BY = 'rocks-bridge';
/** Replies name the request they answer as the NAS daemon did. */
const NAS_REPLIES = {
  map_zvol: 'zvol_mapped',
  unmap_zvol: 'zvol_unmapped',
  del_zvol: 'zvol_deleted',
  list_zvols: 'zvol_list',
  get_zvol_attrs: 'get_zvol_attrs',
  set_zvol_attrs: 'set_zvol_attrs',
} as const;
/**
 * ... and as the compute daemon did: `list_initiator` was answered as `zvol_list`. `map_zvol`,
 * `unmap_zvol` and `sync_zvol` came from an old NAS daemon and were answered to it.
 */
const COMPUTE_REPLIES = {
  list_initiator: 'zvol_list',
  list_dev: 'dev_list',
  map_zvol: 'zvol_mapped',
  unmap_zvol: 'zvol_unmapped',
  sync_zvol: 'zvol_synced',
} as const;
type NasAction = keyof typeof NAS_REPLIES;
type ComputeAction = keyof typeof COMPUTE_REPLIES;
/** Requests an old NAS daemon sends a compute host; their replies went back through the exchange. */
const FROM_OLD_NAS = new Set(['map_zvol', 'unmap_zvol', 'sync_zvol']);
/** Requests that change something: run only while their sender still waits. */
const CHANGES = new Set(['map_zvol', 'unmap_zvol', 'del_zvol', 'set_zvol_attrs']);
const UNSUPPORTED = 'action_unsupported';
const EXCHANGE = /^[A-Za-z0-9._:-]{1,127}$/;
const IQN = /^[A-Za-z0-9.:_-]{1,223}$/;
/** The app id of the bridge's routing probe, whose return is expected and not a lost reply. */
const PROBE_APP = 'imgflow-bridge-probe';
/** The dead-letter queue of a host's queue: host names have no ".", so it names no host. */
const expiredQueue = (host: string) => `${host}.expired`;

export interface Reply {
  action: string;
  status: 'success' | 'error';
  error?: string;
  [field: string]: unknown;
}

import { BDEV_MODES, type BdevMode } from './rocks-options.js';

export { BDEV_MODES, type BdevMode };

export interface RocksBridgeOptions {
  url: string;
  nas: string;
  /** `<image>[:tag]` or `<image>@<channel>`: what every `map_zvol` clones (Rocks requests name no image). */
  image: string;
  exchange: string;
  client: Client;
  namespace: string;
  logger: Logger;
  /** Bound on each request: its wait in the queue, and its answer; the map's per-step wait stays below it. */
  timeoutSeconds: number;
  /** Compute hosts answered as the old compute daemon did (their routing keys). */
  computeHosts?: string[];
  bdev?: BdevMode;
  /** Requests handled at once per queue; more wait in the queue (within their bound). */
  concurrency?: number;
}

export interface RocksBridge {
  /** Stops consuming, lets requests in flight finish (each is bounded), then closes. */
  stop(): Promise<void>;
  /** Settles when the bridge is closed; rejects when the broker connection is lost. */
  closed: Promise<void>;
}

/** The URL as it may appear in logs and errors: the password never does. */
export function maskUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '<unparsable URL>';
  }
}

export function checkAmqpUrl(field: string, url: string): string {
  let protocol = '';
  try {
    protocol = new URL(url).protocol;
  } catch {
    // reported below without the URL itself, which may carry a password
  }
  if (protocol !== 'amqp:' && protocol !== 'amqps:')
    throw new InputError(field, 'an amqp:// or amqps:// URL', maskUrl(url));
  return url;
}

export function checkExchange(field: string, value: string): string {
  if (!EXCHANGE.test(value))
    throw new InputError(field, 'an exchange name of letters, digits, ".", "_", ":" or "-"', value);
  return value;
}

export function checkBdevMode(field: string, value: unknown): BdevMode {
  if (!BDEV_MODES.includes(value as BdevMode)) throw new InputError(field, `one of ${BDEV_MODES.join(', ')}`, value);
  return value as BdevMode;
}

// ---------------------------------------------------------------------------------------------
// Request fields

type Request = Record<string, unknown>;

const given = (v: unknown) => v !== undefined && v !== null;

function optionalName(field: string, v: unknown): string | undefined {
  return given(v) ? checkName(field, v) : undefined;
}

/** Rocks sends booleans as JSON booleans, numbers or Python-style strings. */
function checkFlag(field: string, v: unknown): boolean {
  if (!given(v)) return false;
  const text = String(v).toLowerCase();
  if (['true', '1', 'yes'].includes(text)) return true;
  if (['false', '0', 'no'].includes(text)) return false;
  throw new InputError(field, 'true or false', v);
}

const PV_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/**
 * A rate as the NAS daemon handed it to `pv -L`: bytes per second, as a number or with a binary
 * suffix (`512k`, `10M`, `1.5G`).
 */
export function checkRate(field: string, v: unknown): number {
  if (typeof v === 'number') return checkSpeed(field, v);
  const m = typeof v === 'string' ? /^(\d{1,15}(?:\.\d{1,6})?)([kmgt]?)$/i.exec(v.trim()) : null;
  if (!m)
    throw new InputError(
      field,
      'bytes per second as pv -L takes them: a number, or one with k, M, G or T (512k, 10M)',
      v,
    );
  const bytes = Math.floor(Number(m[1]) * PV_UNITS[m[2]!.toLowerCase()]!);
  if (!Number.isSafeInteger(bytes) || bytes < 1 || bytes > 100 * 1024 ** 3)
    throw new InputError(field, 'a rate from 1 byte to 100G per second', v);
  return bytes;
}

const epochSeconds = (iso: string | undefined) => (iso ? Math.floor(Date.parse(iso) / 1000) : null);

/** The volume settings Rocks's attributes name. */
const RESET_FIELDS = { frequency: 'frequency', uploadspeed: 'uploadSpeed', downloadspeed: 'downloadSpeed' } as const;

/** Rocks's `None` (JSON null) asks for the default; a field left out is left as it is. */
const resets = (m: Request, field: string) => Object.hasOwn(m, field) && m[field] === null;

// ---------------------------------------------------------------------------------------------
// Actions

class RocksActions {
  constructor(private readonly o: RocksBridgeOptions) {}

  /** Nothing runs a volume while no orchestrator polls: refused at once rather than left waiting. */
  async orchestrated(): Promise<void> {
    if (!(await hasWorker(this.o.client, this.o.namespace, WORKFLOW_QUEUE, 'workflow'))) {
      throw new Error(
        `no imgflow orchestrator polls task queue ${WORKFLOW_QUEUE} in namespace ${this.o.namespace} yet (start imgflow worker --role orchestrator); nothing was done`,
      );
    }
  }

  /** The volume's view, refused when it lives on another NAS (this queue speaks for one NAS only). */
  private async ownView(zvol: string): Promise<VolumeView> {
    const view = await known(zvol, () => volumeHandle(this.o.client, zvol).query(volumeQuery));
    if (view.nas && view.nas !== this.o.nas)
      throw new InputError('zvol', `a volume on ${this.o.nas} (${zvol} is on ${view.nas})`, zvol);
    return view;
  }

  /** A host's worker's answer about itself (run by the orchestrator, bounded). */
  private async ask(queue: string, ask: 'initiator' | 'export') {
    const waitSeconds = Math.max(1, Math.min(30, Math.floor(this.o.timeoutSeconds / 4)));
    return this.o.client.workflow
      .execute(pingWorkflow, {
        taskQueue: WORKFLOW_QUEUE,
        workflowId: `ping-${queue}-${randomUUID().slice(0, 8)}`,
        args: [{ queue, waitSeconds, ask }],
        workflowExecutionTimeout: `${waitSeconds + 30}s`,
      })
      .catch((err: unknown) => {
        throw err instanceof WorkflowFailedError
          ? new Error(`no imgflow worker answered on ${queue} within ${waitSeconds}s`)
          : err;
      });
  }

  /** A compute host's answer about itself, from its own worker: its initiator name and how it attaches. */
  async computeFacts(host: string): Promise<{ initiator: string; attach: string }> {
    const facts = await this.ask(queues.compute(host), 'initiator');
    if (!facts.initiator || !facts.attach)
      throw new Error(`${queues.compute(host)} is served by a ${facts.role} worker, not a compute host's`);
    return { initiator: facts.initiator, attach: facts.attach };
  }

  /** How the NAS exports volumes, from its own worker. */
  async nasExport(): Promise<string> {
    const facts = await this.ask(queues.nas(this.o.nas), 'export');
    if (!facts.export) throw new Error(`${queues.nas(this.o.nas)} is served by a ${facts.role} worker, not a NAS's`);
    return facts.export;
  }

  /**
   * In `block` mode, a map whose answer would be no block device is refused before anything is
   * made: a NAS that does not export over iSCSI, or a compute host that does not log in through the kernel.
   */
  private async checkBlockDevice(host: string, sync: boolean): Promise<void> {
    if (this.o.bdev === 'any' || sync) return;
    const exported = await this.nasExport();
    if (exported !== 'tgt')
      throw new Error(
        `bdev: ${this.o.nas} exports volumes as ${exported} (${exported === 'none' ? 'a file path' : 'an nbd:// URL'}), not a block device Rocks can use as phy: (set IMGFLOW_NAS_EXPORT=tgt on its worker, or run the bridge with --bdev any)`,
      );
    const { attach } = await this.computeFacts(host);
    if (attach !== 'iscsi-kernel') {
      throw new InputError(
        'remotehost',
        `a compute host that attaches iSCSI as a block device (IMGFLOW_COMPUTE_ATTACH=iscsi-kernel; ${host} attaches ${attach}, whose bdev is a URL Rocks cannot use as phy:)`,
        host,
      );
    }
  }

  async map_zvol(m: Request): Promise<Record<string, unknown>> {
    const zvol = checkName('zvol', m.zvol);
    const computeHost = checkHost('remotehost', m.remotehost);
    const zpool = optionalName('zpool', m.zpool);
    const remotepool = optionalName('remotepool', m.remotepool);
    // imgflow asks the compute host for its initiator itself; a given one is only checked.
    if (given(m.initiator) && (typeof m.initiator !== 'string' || !IQN.test(m.initiator)))
      throw new InputError('initiator', 'an iSCSI initiator name', m.initiator);
    const sizeGiB = given(m.size) ? checkInt('size', m.size, 1, 65_536) : undefined;
    const sync = checkFlag('sync', m.sync);
    const { client, namespace, nas } = this.o;
    await this.orchestrated();
    if (!(await hasWorker(client, namespace, queues.compute(computeHost))))
      throw new InputError(
        'remotehost',
        `a compute host whose worker is running (nothing polls ${queues.compute(computeHost)})`,
        computeHost,
      );
    if (!(await hasWorker(client, namespace, queues.nas(nas))))
      throw new Error(`no imgflow worker polls ${queues.nas(nas)}`);
    await this.checkBlockDevice(computeHost, sync);
    const request: MapRequest = {
      by: BY,
      base: await baseVersion(client, this.o.image, nas),
      nas,
      computeHost,
      waitSeconds: Math.max(1, Math.min(60, Math.floor(this.o.timeoutSeconds / 4))),
      ...(sizeGiB ? { sizeBytes: sizeGiB * GiB } : {}),
      ...(sync ? { sync: true } : {}),
      ...(zpool || remotepool ? { pools: { ...(zpool ? { zpool } : {}), ...(remotepool ? { remotepool } : {}) } } : {}),
    };
    const result = await mapVolume(client, zvol, request);
    return { zvol, bdev: result.target };
  }

  /** Finishes an unmap: of a mapped volume, or of one an earlier unmap left in error (its steps are idempotent). */
  private async finishUnmap(zvol: string): Promise<void> {
    const waitSeconds = Math.max(0, Math.min(60, Math.floor(this.o.timeoutSeconds / 4)));
    await volumeHandle(this.o.client, zvol).executeUpdate(unmapUpdate, { args: [{ by: BY, waitSeconds }] });
  }

  async unmap_zvol(m: Request): Promise<Record<string, unknown>> {
    const zvol = checkName('zvol', m.zvol);
    await this.orchestrated();
    await this.ownView(zvol);
    await this.finishUnmap(zvol);
    return { zvol };
  }

  async del_zvol(m: Request): Promise<Record<string, unknown>> {
    const zvol = checkName('zvol', m.zvol);
    optionalName('zpool', m.zpool);
    await this.orchestrated();
    // Rocks lists a volume in error as unmapped and removes it: the unmap that failed is finished first.
    if ((await this.ownView(zvol)).phase === 'error') await this.finishUnmap(zvol);
    await volumeHandle(this.o.client, zvol).executeUpdate(deleteUpdate, { args: [{ by: BY }] });
    return { zvol };
  }

  async list_zvols(): Promise<Record<string, unknown>> {
    await this.orchestrated();
    const views = await listVolumes(this.o.client, { nas: this.o.nas });
    return { body: views.map(zvolRow) };
  }

  async get_zvol_attrs(m: Request): Promise<Record<string, unknown>> {
    const zvol = checkName('zvol', m.zvol);
    await this.orchestrated();
    return { body: zvolAttrs(await this.ownView(zvol)) };
  }

  async set_zvol_attrs(m: Request): Promise<Record<string, unknown>> {
    const zvol = checkName('zvol', m.zvol);
    // imgflow schedules the next pull from the frequency; it cannot be set on its own (None, the default, is fine).
    if (given(m.nextsync)) throw new InputError('nextsync', 'None (the next pull follows from frequency)', m.nextsync);
    const reset = (Object.keys(RESET_FIELDS) as (keyof typeof RESET_FIELDS)[])
      .filter((f) => resets(m, f))
      .map((f) => RESET_FIELDS[f]);
    const attrs: VolumeAttrs = {
      by: BY,
      ...(given(m.frequency) ? { frequencySeconds: checkInt('frequency', m.frequency, 10, 86_400) } : {}),
      ...(given(m.uploadspeed) ? { uploadSpeed: checkRate('uploadspeed', m.uploadspeed) } : {}),
      ...(given(m.downloadspeed) ? { downloadSpeed: checkRate('downloadspeed', m.downloadspeed) } : {}),
      ...(reset.length ? { reset } : {}),
    };
    if (Object.keys(attrs).length === 1 && !resets(m, 'nextsync'))
      throw new InputError(
        'attrs',
        'one of frequency, uploadspeed, downloadspeed or nextsync (None resets it)',
        Object.keys(m).filter((k) => k !== 'action' && k !== 'zvol'),
      );
    await this.orchestrated();
    await this.ownView(zvol);
    const view =
      Object.keys(attrs).length > 1
        ? await volumeHandle(this.o.client, zvol).executeUpdate(setAttrsUpdate, { args: [attrs] })
        : await this.ownView(zvol);
    return { body: zvolAttrs(view) };
  }
}

/** The compute daemon's side: what a frontend asks a compute host before and after it maps. */
class ComputeActions {
  constructor(
    private readonly o: RocksBridgeOptions,
    private readonly nas: RocksActions,
  ) {}

  async list_initiator(host: string): Promise<Record<string, unknown>> {
    await this.nas.orchestrated();
    return { body: (await this.nas.computeFacts(host)).initiator };
  }

  /** The host's volumes as the compute daemon listed its devices: by volume, its target, device and kind. */
  async list_dev(host: string): Promise<Record<string, unknown>> {
    await this.nas.orchestrated();
    const views = (await listVolumes(this.o.client, { compute: host })).filter(
      (v) => v.computeHost === host && v.phase !== 'unmapped' && v.phase !== 'deleted',
    );
    const body: Record<string, unknown> = {};
    for (const v of views) {
      body[v.volume] = {
        sync: v.sync ? 'sync' : 'iscsi',
        target: v.export?.target ?? null,
        device: v.attachment?.device ?? v.attachment?.url ?? null,
        ...(v.sync ? { bdev: v.attachment?.device ?? null, status: v.phase } : {}),
      };
    }
    return { node_type: 'mixed', body };
  }

  /** What an old NAS daemon asked of a compute host is refused: imgflow maps through its own workflows. */
  private fromOldNas(action: string, host: string, m: Request): Promise<never> {
    const zvol = optionalName('zvol', m.zvol);
    throw new Error(
      `${action}: ${host} is served by imgflow, which an img-storage-nas daemon cannot drive; map ${zvol ?? 'the volume'} through the imgflow bridge of its NAS`,
    );
  }

  map_zvol(host: string, m: Request) {
    return this.fromOldNas('map_zvol', host, m);
  }

  unmap_zvol(host: string, m: Request) {
    return this.fromOldNas('unmap_zvol', host, m);
  }

  sync_zvol(host: string, m: Request) {
    return this.fromOldNas('sync_zvol', host, m);
  }
}

/**
 * A row of the old `zvol_list`. A non-null `remotehost` is what the frontend reads as mapped;
 * `is_sending` / `is_delete_remote` are null unless a sync is under way (Rocks tests them with
 * `== 1` and `== 0`): 1/1 the node's first copy (NAS->VM), 0/0 a scheduled pull (NAS<-VM sched),
 * 0/1 the final pull and removal of the node's copy (NAS<-VM).
 */
export function zvolRow(v: VolumeView): Record<string, unknown> {
  const onHost = v.phase !== 'unmapped' && v.phase !== 'deleted';
  const [sending, deleteRemote] =
    v.phase === 'syncing-to-node'
      ? [1, 1]
      : v.phase === 'syncing-to-nas'
        ? [0, 0]
        : v.phase === 'unmapping' && v.sync
          ? [0, 1]
          : [null, null];
  return {
    zvol: v.volume,
    zpool: v.pools?.zpool ?? v.storage?.root ?? null,
    iscsi_target: onHost ? (v.export?.target ?? v.target ?? null) : null,
    remotehost: onHost ? (v.computeHost ?? null) : null,
    remotepool: v.pools?.remotepool ?? v.sync?.nodeRoot ?? null,
    is_sending: sending,
    is_delete_remote: deleteRemote,
    time: epochSeconds(v.since),
    nextsync: epochSeconds(v.sync?.nextSyncAt),
    frequency: v.sync?.frequencySeconds ?? null,
    locked: v.locked,
    state: v.phase,
    ...(v.phase === 'error' && v.reason ? { error: v.reason } : {}),
  };
}

function zvolAttrs(v: VolumeView): Record<string, unknown> {
  return {
    zvol: v.volume,
    frequency: v.sync?.frequencySeconds ?? null,
    nextsync: epochSeconds(v.sync?.nextSyncAt),
    uploadspeed: v.speeds.upload ?? null,
    downloadspeed: v.speeds.download ?? null,
  };
}

// ---------------------------------------------------------------------------------------------
// Requests to replies

function withinSeconds<T>(seconds: number, what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: no answer within ${seconds}s; it may still complete (see list_zvols)`)),
      seconds * 1000,
    );
  });
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}

function parseRequest(content: Buffer): Request | Reply {
  let body: unknown;
  try {
    body = JSON.parse(content.toString('utf8'));
  } catch {
    return { action: UNSUPPORTED, status: 'error', error: 'request: expected a JSON object, got malformed JSON' };
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    return { action: UNSUPPORTED, status: 'error', error: 'request: expected a JSON object with "action"' };
  return body as Request;
}

type Role = { kind: 'nas' } | { kind: 'compute'; host: string };

function repliesOf(role: Role): Record<string, string> {
  return role.kind === 'nas' ? NAS_REPLIES : COMPUTE_REPLIES;
}

/** The request's action if this queue answers it, else the refusal. */
function actionOf(role: Role, request: Request): string | Reply {
  const action = request.action;
  const replies = repliesOf(role);
  if (typeof action === 'string' && Object.hasOwn(replies, action)) return action;
  return {
    action: UNSUPPORTED,
    status: 'error',
    error: `action: expected one of ${Object.keys(replies).join(', ')}, got ${JSON.stringify(action ?? null)}`,
  };
}

/** The reply to one request; never throws, always within the bound. */
async function answer(
  nas: RocksActions,
  compute: ComputeActions,
  role: Role,
  request: Request,
  action: string,
  timeoutSeconds: number,
): Promise<Reply> {
  const reply = repliesOf(role)[action]!;
  // The compute daemon's replies to an old NAS daemon named the target they were about.
  const echo =
    role.kind === 'compute' && FROM_OLD_NAS.has(action)
      ? { target: request.target ?? null, zvol: request.zvol ?? null }
      : {};
  try {
    const work =
      role.kind === 'nas' ? nas[action as NasAction](request) : compute[action as ComputeAction](role.host, request);
    const fields = await withinSeconds(timeoutSeconds, action, work);
    return { action: reply, status: 'success', ...echo, ...fields };
  } catch (err) {
    return { action: reply, status: 'error', ...echo, error: oneLine(err) };
  }
}

// ---------------------------------------------------------------------------------------------
// The consumer

async function connectBroker(url: string): Promise<ChannelModel> {
  const password = (() => {
    try {
      return decodeURIComponent(new URL(url).password);
    } catch {
      return '';
    }
  })();
  try {
    return await amqp.connect(url);
  } catch (err) {
    const text = oneLine(err);
    throw new Error(`cannot reach RabbitMQ at ${maskUrl(url)}: ${password ? text.split(password).join('***') : text}`);
  }
}

/** Runs a passive check on a channel of its own: a failed check closes its channel, and that is an answer. */
async function probe<T>(
  connection: ChannelModel,
  check: (channel: Channel) => Promise<T>,
): Promise<{ ok: true; value: T } | { ok: false; code?: number }> {
  const channel = await connection.createChannel();
  channel.on('error', () => undefined);
  try {
    const value = await check(channel);
    await channel.close().catch(() => undefined);
    return { ok: true, value };
  } catch (err) {
    return { ok: false, code: (err as { code?: number }).code };
  }
}

/**
 * The exchange as the broker has it: the NAS daemon declared it non-durable, and declaring it
 * again as durable would be refused (PRECONDITION_FAILED), so one that exists is used as it is.
 */
async function ensureExchange(connection: ChannelModel, channel: ConfirmChannel, exchange: string): Promise<void> {
  const found = await probe(connection, (c) => c.checkExchange(exchange));
  if (!found.ok) await channel.assertExchange(exchange, 'direct', { durable: true });
}

/**
 * Whether requests to `key` already reach a queue: the old daemons consumed from a server-named
 * queue bound by their host name, which no queue name reveals. A mandatory probe (a read-only
 * request with no reply_to) that the broker routes means someone else serves the host.
 */
function routed(channel: ConfirmChannel, exchange: string, key: string, action: string): Promise<boolean> {
  const id = randomUUID();
  let returned = false;
  const onReturn = (m: ConsumeMessage) => {
    if (m.properties.messageId === id) returned = true;
  };
  channel.on('return', onReturn);
  return new Promise<boolean>((resolve, reject) => {
    // The broker sends a return before the confirm of the same message.
    channel.publish(
      exchange,
      key,
      Buffer.from(JSON.stringify({ action })),
      { mandatory: true, messageId: id, appId: PROBE_APP },
      (err) => {
        channel.off('return', onReturn);
        if (err) reject(err instanceof Error ? err : new Error(String(err)));
        else resolve(!returned);
      },
    );
  });
}

export interface QueueClaim {
  queue: string;
  /** Requests found waiting in a shared queue an earlier bridge left, refused unrun. */
  stale: GetMessage[];
}

/**
 * Claims a host's queue as the old daemons had it: exclusive to this connection and gone with it.
 * A queue another connection holds (an old daemon or another bridge) stops the bridge from
 * starting; a shared durable one that an earlier bridge left is emptied (its requests are handed
 * back to be refused, not run) and replaced.
 */
async function claimQueue(
  connection: ChannelModel,
  channel: ConfirmChannel,
  host: string,
  exchange: string,
  ttlMs: number,
  probeAction: string,
): Promise<QueueClaim> {
  const stale: GetMessage[] = [];
  const existing = await probe(connection, (c) => c.checkQueue(host));
  if (existing.ok) {
    if (existing.value.consumerCount > 0)
      throw new Error(
        `queue ${host} has ${existing.value.consumerCount} consumer(s): another bridge or an img-storage daemon serves ${host}; stop it first`,
      );
    for (let m = await channel.get(host); m; m = await channel.get(host)) stale.push(m);
    await channel.deleteQueue(host);
  } else if (existing.code === 405) {
    throw new Error(
      `queue ${host} is held by another connection: an img-storage daemon or another bridge serves ${host}; stop it first`,
    );
  }
  if (await routed(channel, exchange, host, probeAction))
    throw new Error(
      `requests to ${host} on ${exchange} already reach a queue: an img-storage daemon or another bridge serves ${host}; stop it first`,
    );
  await channel.assertQueue(expiredQueue(host), { exclusive: true, autoDelete: true, durable: false });
  await channel.assertQueue(host, {
    exclusive: true,
    autoDelete: true,
    durable: false,
    arguments: {
      'x-message-ttl': ttlMs,
      'x-dead-letter-exchange': '',
      'x-dead-letter-routing-key': expiredQueue(host),
    },
  });
  await channel.bindQueue(host, exchange, host);
  return { queue: host, stale };
}

/**
 * In `block` mode a NAS or compute host whose maps would answer a file or URL for `bdev` stops the
 * bridge from starting (asked of its worker, when an orchestrator and that worker run; each map is
 * checked again anyway).
 */
async function checkComputeHosts(
  o: RocksBridgeOptions,
  nas: RocksActions,
  hosts: string[],
  log: Logger,
): Promise<void> {
  if ((o.bdev ?? 'block') !== 'block') return;
  if (!(await hasWorker(o.client, o.namespace, WORKFLOW_QUEUE, 'workflow'))) {
    log.warn(
      { compute: hosts },
      "no orchestrator polls yet: the hosts' export and attach modes are checked at each map",
    );
    return;
  }
  if (await hasWorker(o.client, o.namespace, queues.nas(o.nas))) {
    const exported = await nas.nasExport();
    if (exported !== 'tgt')
      throw new InputError(
        '--bdev',
        `any, or a NAS that exports over iSCSI (${o.nas} exports ${exported}: its bdev would be ${exported === 'none' ? 'a file path' : 'an nbd:// URL'}, which Rocks cannot use as phy:; set IMGFLOW_NAS_EXPORT=tgt on its worker)`,
        'block',
      );
  }
  for (const host of hosts) {
    if (!(await hasWorker(o.client, o.namespace, queues.compute(host)))) continue;
    const { attach } = await nas.computeFacts(host);
    if (attach !== 'iscsi-kernel') {
      throw new InputError(
        '--bdev',
        `any, or compute hosts that attach iSCSI as block devices (${host} attaches ${attach}: its bdev would be a URL Rocks cannot use as phy:; run its worker with IMGFLOW_COMPUTE_ATTACH=iscsi-kernel)`,
        'block',
      );
    }
  }
}

/** Connects, claims the NAS's queue (and the compute hosts'), and consumes until stopped. */
export async function startRocksBridge(o: RocksBridgeOptions): Promise<RocksBridge> {
  const log = o.logger.child({ nas: o.nas, exchange: o.exchange });
  const computeHosts = [...new Set((o.computeHosts ?? []).map((h) => checkHost('--compute', h)))];
  if (computeHosts.includes(o.nas)) throw new InputError('--compute', `a host other than the NAS (${o.nas})`, o.nas);
  const nas = new RocksActions(o);
  await checkComputeHosts(o, nas, computeHosts, log);
  const connection = await connectBroker(o.url);
  const channel = await connection.createConfirmChannel();
  const compute = new ComputeActions(o, nas);
  const inFlight = new Set<Promise<void>>();
  const consumers: string[] = [];
  let stopping = false;
  const roles: [string, Role][] = [
    [o.nas, { kind: 'nas' }],
    ...computeHosts.map((h): [string, Role] => [h, { kind: 'compute', host: h }]),
  ];

  try {
    await ensureExchange(connection, channel, o.exchange);
    await channel.prefetch(o.concurrency ?? 16);

    // A reply nobody can take (its queue is gone: the sender gave up) comes back: a warning, never silence.
    channel.on('return', (msg: ConsumeMessage) => {
      if (msg.properties.appId === PROBE_APP) return;
      let action: unknown;
      try {
        action = (JSON.parse(msg.content.toString('utf8')) as Reply).action;
      } catch {
        action = undefined;
      }
      log.warn(
        { replyTo: msg.fields.routingKey, action, correlationId: msg.properties.correlationId as unknown },
        'reply not delivered: nobody waits on its reply queue',
      );
    });

    const publish = (exchange: string, routingKey: string, reply: Reply, correlationId: string | undefined) =>
      new Promise<void>((resolve, reject) => {
        channel.publish(
          exchange,
          routingKey,
          Buffer.from(JSON.stringify(reply)),
          { contentType: 'application/json', mandatory: true, ...(correlationId ? { correlationId } : {}) },
          (err) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve()),
        );
      });

    /** Whether the sender still waits: its reply queue (exclusive to its connection) is still there. */
    const senderWaits = async (replyTo: string) => {
      const found = await probe(connection, (c) => c.checkQueue(replyTo));
      return found.ok || found.code === 405;
    };

    const reply = async (role: Role, msg: ConsumeMessage | GetMessage, action: string, r: Reply) => {
      const { replyTo, correlationId, messageId } = msg.properties as {
        replyTo?: string;
        correlationId?: string;
        messageId?: string;
      };
      if (!replyTo) return;
      // The compute daemon answered an old NAS daemon through the exchange, with its host name as the key.
      const viaExchange = role.kind === 'compute' && FROM_OLD_NAS.has(action);
      await publish(viaExchange ? o.exchange : '', replyTo, r, correlationId ?? messageId);
    };

    /** A request that outlived its bound or its sender: refused, or dropped, and never run. */
    const refuse = async (role: Role, msg: ConsumeMessage | GetMessage, why: string) => {
      const request = parseRequest(msg.content);
      const action = typeof request.status === 'string' ? UNSUPPORTED : actionOf(role, request);
      const name = typeof action === 'string' ? action : UNSUPPORTED;
      const replyName = typeof action === 'string' ? repliesOf(role)[action]! : UNSUPPORTED;
      log.warn({ action: name, replyTo: msg.properties.replyTo as unknown }, `request refused unrun: ${why}`);
      await reply(role, msg, name, { action: replyName, status: 'error', error: `${name}: ${why}; nothing was done` });
    };

    async function handle(role: Role, msg: ConsumeMessage): Promise<void> {
      if (stopping) {
        await refuse(role, msg, 'the bridge is stopping');
        channel.ack(msg);
        return;
      }
      const { replyTo, correlationId, messageId } = msg.properties as {
        replyTo?: string;
        correlationId?: string;
        messageId?: string;
      };
      const parsed = parseRequest(msg.content);
      const action = typeof parsed.status === 'string' ? (parsed as Reply) : actionOf(role, parsed);
      if (!replyTo) {
        log.warn(
          { action: typeof action === 'string' ? action : undefined, messageId },
          'request without reply_to dropped unrun: nobody could be answered',
        );
      } else if (typeof action !== 'string') {
        await reply(role, msg, UNSUPPORTED, action);
      } else if (
        CHANGES.has(action) &&
        !(role.kind === 'compute' && FROM_OLD_NAS.has(action)) &&
        !(await senderWaits(replyTo))
      ) {
        log.warn(
          { action, replyTo, correlationId },
          'request dropped unrun: its sender gave up (its reply queue is gone)',
        );
      } else {
        const r = await answer(nas, compute, role, parsed, action, o.timeoutSeconds);
        log.info(
          {
            action: r.action,
            status: r.status,
            correlationId,
            ...(role.kind === 'compute' ? { host: role.host } : {}),
            ...(r.error ? { error: r.error } : {}),
          },
          'request answered',
        );
        await reply(role, msg, action, r);
      }
      channel.ack(msg);
    }

    const track = (work: Promise<void>) => {
      const w = work.catch((err: unknown) => log.error({ err: oneLine(err) }, 'request not answered'));
      inFlight.add(w);
      void w.finally(() => inFlight.delete(w));
    };

    for (const [host, role] of roles) {
      const { queue, stale } = await claimQueue(
        connection,
        channel,
        host,
        o.exchange,
        o.timeoutSeconds * 1000,
        role.kind === 'nas' ? 'list_zvols' : 'list_dev',
      );
      for (const m of stale) {
        await refuse(role, m, `it waited in a shared queue ${host} with nobody consuming`);
        channel.ack(m);
      }
      consumers.push((await channel.consume(queue, (msg) => msg && track(handle(role, msg)))).consumerTag);
      consumers.push(
        (
          await channel.consume(expiredQueue(host), (msg) => {
            if (!msg) return;
            track(
              refuse(
                role,
                msg,
                `it waited in queue ${host} past its bound (the sender's expiration, else ${o.timeoutSeconds}s)`,
              ).then(() => channel.ack(msg)),
            );
          })
        ).consumerTag,
      );
    }
  } catch (err) {
    await connection.close().catch(() => undefined);
    throw err;
  }

  const closed = new Promise<void>((resolve, reject) => {
    connection.on('error', (err: Error) => log.error({ err: oneLine(err) }, 'broker connection error'));
    connection.on('close', () =>
      stopping ? resolve() : reject(new Error(`lost the connection to RabbitMQ at ${maskUrl(o.url)}`)),
    );
  });
  closed.catch(() => undefined);
  log.info(
    { url: maskUrl(o.url), queue: o.nas, compute: computeHosts, image: o.image, bdev: o.bdev ?? 'block' },
    'bridge ready',
  );

  return {
    closed,
    async stop() {
      if (stopping) return closed;
      stopping = true;
      // New requests come back to their senders at once; those already queued are refused as they
      // come (not run), rather than left to vanish with the queues; then the consumers go.
      for (const [host] of roles) await channel.unbindQueue(host, o.exchange, host).catch(() => undefined);
      const deadline = Date.now() + (o.timeoutSeconds + 30) * 1000;
      for (;;) {
        await Promise.allSettled([...inFlight]);
        let waiting = 0;
        for (const [host] of roles)
          for (const queue of [host, expiredQueue(host)])
            waiting += await channel.checkQueue(queue).then(
              (q) => q.messageCount,
              () => 0,
            );
        if ((waiting === 0 && inFlight.size === 0) || Date.now() > deadline) break;
        await sleep(100);
      }
      for (const tag of consumers) await channel.cancel(tag).catch(() => undefined);
      await Promise.allSettled([...inFlight]);
      await connection.close().catch(() => undefined);
      log.info('bridge stopped');
      return closed;
    },
  };
}
