/**
 * The bridge for existing Rocks clusters: answers the NAS daemon's AMQP requests (direct exchange,
 * one queue per NAS bound by its host name) with imgflow's volume workflows behind them, in the old
 * reply shapes, so a Rocks frontend keeps working unchanged.
 *
 * Each request is checked before it reaches a workflow, answered within a bound, and acked only
 * once its reply is confirmed by the broker: a bridge that dies mid-request leaves the request
 * queued for the next one (the volume updates are idempotent).
 */
import type { Client } from '@temporalio/client';
import amqp, { type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import { checkHost, checkInt, checkName, checkSpeed, InputError } from '../../common/names.js';
import { queues } from '../../common/queues.js';
import type { Logger } from '../../lib/logger.js';
import { deleteUpdate, setAttrsUpdate, unmapUpdate, volumeQuery, type MapRequest, type VolumeAttrs, type VolumeView } from '../../workflows/volume.js';
import { oneLine } from '../output.js';
import { baseVersion, hasWorker, known, listVolumes, mapVolume, volumeHandle } from '../volume-client.js';

const GiB = 1024 ** 3;
/** Who the volume histories name for requests that came through the bridge. */
const BY = 'rocks-bridge';
/** Replies name the request they answer as the NAS daemon did. */
const REPLIES = {
  map_zvol: 'zvol_mapped',
  unmap_zvol: 'zvol_unmapped',
  del_zvol: 'zvol_deleted',
  list_zvols: 'zvol_list',
  get_zvol_attrs: 'get_zvol_attrs',
  set_zvol_attrs: 'set_zvol_attrs',
} as const;
type Action = keyof typeof REPLIES;
const UNSUPPORTED = 'action_unsupported';
const EXCHANGE = /^[A-Za-z0-9._:-]{1,127}$/;
const IQN = /^[A-Za-z0-9.:_-]{1,223}$/;

export interface Reply {
  action: string;
  status: 'success' | 'error';
  error?: string;
  [field: string]: unknown;
}

export interface RocksBridgeOptions {
  url: string;
  nas: string;
  /** `<image>[:tag]` or `<image>@<channel>`: what every `map_zvol` clones (Rocks requests name no image). */
  image: string;
  exchange: string;
  client: Client;
  namespace: string;
  logger: Logger;
  /** Bound on each request; the map's per-step wait stays below it. */
  timeoutSeconds: number;
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
  if (protocol !== 'amqp:' && protocol !== 'amqps:') throw new InputError(field, 'an amqp:// or amqps:// URL', maskUrl(url));
  return url;
}

export function checkExchange(field: string, value: string): string {
  if (!EXCHANGE.test(value)) throw new InputError(field, 'an exchange name of letters, digits, ".", "_", ":" or "-"', value);
  return value;
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

const epochSeconds = (iso: string | undefined) => (iso ? Math.floor(Date.parse(iso) / 1000) : null);

// ---------------------------------------------------------------------------------------------
// Actions

class RocksActions {
  constructor(private readonly o: RocksBridgeOptions) {}

  /** The volume's view, refused when it lives on another NAS (this queue speaks for one NAS only). */
  private async ownView(zvol: string): Promise<VolumeView> {
    const view = await known(zvol, () => volumeHandle(this.o.client, zvol).query(volumeQuery));
    if (view.nas && view.nas !== this.o.nas) throw new InputError('zvol', `a volume on ${this.o.nas} (${zvol} is on ${view.nas})`, zvol);
    return view;
  }

  async map_zvol(m: Request): Promise<Record<string, unknown>> {
    const zvol = checkName('zvol', m.zvol);
    const computeHost = checkHost('remotehost', m.remotehost);
    optionalName('zpool', m.zpool);
    optionalName('remotepool', m.remotepool);
    // imgflow asks the compute host for its initiator itself; a given one is only checked.
    if (given(m.initiator) && (typeof m.initiator !== 'string' || !IQN.test(m.initiator))) throw new InputError('initiator', 'an iSCSI initiator name', m.initiator);
    const sizeGiB = given(m.size) ? checkInt('size', m.size, 1, 65_536) : undefined;
    const sync = checkFlag('sync', m.sync);
    const { client, namespace, nas } = this.o;
    if (!(await hasWorker(client, namespace, queues.compute(computeHost)))) throw new InputError('remotehost', `a compute host whose worker is running (nothing polls ${queues.compute(computeHost)})`, computeHost);
    if (!(await hasWorker(client, namespace, queues.nas(nas)))) throw new Error(`no imgflow worker polls ${queues.nas(nas)}`);
    const request: MapRequest = {
      by: BY,
      base: await baseVersion(client, this.o.image, nas),
      nas,
      computeHost,
      waitSeconds: Math.max(1, Math.min(60, Math.floor(this.o.timeoutSeconds / 4))),
      ...(sizeGiB ? { sizeBytes: sizeGiB * GiB } : {}),
      ...(sync ? { sync: true } : {}),
    };
    const result = await mapVolume(client, zvol, request);
    return { zvol, bdev: result.target };
  }

  async unmap_zvol(m: Request): Promise<Record<string, unknown>> {
    const zvol = checkName('zvol', m.zvol);
    await this.ownView(zvol);
    const waitSeconds = Math.max(0, Math.min(60, Math.floor(this.o.timeoutSeconds / 4)));
    await volumeHandle(this.o.client, zvol).executeUpdate(unmapUpdate, { args: [{ by: BY, waitSeconds }] });
    return { zvol };
  }

  async del_zvol(m: Request): Promise<Record<string, unknown>> {
    const zvol = checkName('zvol', m.zvol);
    optionalName('zpool', m.zpool);
    await this.ownView(zvol);
    await volumeHandle(this.o.client, zvol).executeUpdate(deleteUpdate, { args: [{ by: BY }] });
    return { zvol };
  }

  async list_zvols(): Promise<Record<string, unknown>> {
    const views = await listVolumes(this.o.client, { nas: this.o.nas });
    return { body: views.map(zvolRow) };
  }

  async get_zvol_attrs(m: Request): Promise<Record<string, unknown>> {
    const zvol = checkName('zvol', m.zvol);
    return { body: zvolAttrs(await this.ownView(zvol)) };
  }

  async set_zvol_attrs(m: Request): Promise<Record<string, unknown>> {
    const zvol = checkName('zvol', m.zvol);
    // imgflow schedules the next pull from the frequency; it cannot be set on its own.
    if (given(m.nextsync)) throw new InputError('nextsync', 'no value (the next pull follows from frequency)', m.nextsync);
    const attrs: VolumeAttrs = {
      by: BY,
      ...(given(m.frequency) ? { frequencySeconds: checkInt('frequency', m.frequency, 10, 86_400) } : {}),
      ...(given(m.uploadspeed) ? { uploadSpeed: checkSpeed('uploadspeed', m.uploadspeed) } : {}),
      ...(given(m.downloadspeed) ? { downloadSpeed: checkSpeed('downloadspeed', m.downloadspeed) } : {}),
    };
    await this.ownView(zvol);
    const view = Object.keys(attrs).length > 1 ? await volumeHandle(this.o.client, zvol).executeUpdate(setAttrsUpdate, { args: [attrs] }) : undefined;
    return view ? { body: zvolAttrs(view) } : {};
  }
}

/** A row of the old `zvol_list`: a non-null `iscsi_target` is what the frontend reads as mapped. */
function zvolRow(v: VolumeView): Record<string, unknown> {
  const mapped = v.phase === 'mapped' || v.phase === 'syncing-to-nas';
  return {
    zvol: v.volume,
    zpool: v.storage?.root ?? null,
    iscsi_target: mapped ? (v.export?.target ?? v.target ?? null) : null,
    remotehost: mapped ? (v.computeHost ?? null) : null,
    remotepool: v.sync?.nodeRoot ?? null,
    is_sending: v.phase === 'syncing-to-node' || v.phase === 'syncing-to-nas',
    is_delete_remote: v.phase === 'unmapping' && !!v.sync,
    time: epochSeconds(v.since),
    nextsync: epochSeconds(v.sync?.nextSyncAt),
    frequency: v.sync?.frequencySeconds ?? null,
    locked: v.locked,
    state: v.phase,
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
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${seconds}s; it may still complete (see list_zvols)`)), seconds * 1000);
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
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return { action: UNSUPPORTED, status: 'error', error: 'request: expected a JSON object with "action"' };
  return body as Request;
}

/** The reply to one request body; never throws, always within the bound. */
async function answer(actions: RocksActions, content: Buffer, timeoutSeconds: number): Promise<Reply> {
  const request = parseRequest(content);
  if (typeof request.status === 'string') return request as Reply;
  const action = request.action;
  if (typeof action !== 'string' || !Object.hasOwn(REPLIES, action)) {
    return { action: UNSUPPORTED, status: 'error', error: `action: expected one of ${Object.keys(REPLIES).join(', ')}, got ${JSON.stringify(action ?? null)}` };
  }
  const reply = REPLIES[action as Action];
  try {
    const fields = await withinSeconds(timeoutSeconds, action, actions[action as Action](request));
    return { action: reply, status: 'success', ...fields };
  } catch (err) {
    return { action: reply, status: 'error', error: oneLine(err) };
  }
}

// ---------------------------------------------------------------------------------------------
// The consumer

function publishConfirmed(channel: ConfirmChannel, queue: string, reply: Reply, correlationId: string | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    channel.sendToQueue(queue, Buffer.from(JSON.stringify(reply)), { contentType: 'application/json', ...(correlationId ? { correlationId } : {}) }, (err) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve()));
  });
}

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

/**
 * The exchange as the broker has it: the NAS daemon declared it non-durable, and declaring it
 * again as durable would be refused (PRECONDITION_FAILED), so one that exists is used as it is.
 */
async function ensureExchange(connection: ChannelModel, channel: ConfirmChannel, exchange: string): Promise<void> {
  const probe = await connection.createChannel();
  // A passive declare of a missing exchange closes its channel; that is the answer, not a failure.
  probe.on('error', () => undefined);
  const exists = await probe.checkExchange(exchange).then(
    () => true,
    () => false,
  );
  if (exists) await probe.close();
  else await channel.assertExchange(exchange, 'direct', { durable: true });
}

/** Connects, declares the exchange and this NAS's queue, and consumes until stopped. */
export async function startRocksBridge(o: RocksBridgeOptions): Promise<RocksBridge> {
  const log = o.logger.child({ nas: o.nas, exchange: o.exchange });
  const connection = await connectBroker(o.url);
  const channel = await connection.createConfirmChannel();
  await ensureExchange(connection, channel, o.exchange);
  // Durable and shared: requests wait in the queue while the bridge restarts.
  await channel.assertQueue(o.nas, { durable: true });
  await channel.bindQueue(o.nas, o.exchange, o.nas);
  await channel.prefetch(16);

  const actions = new RocksActions(o);
  const inFlight = new Set<Promise<void>>();
  let stopping = false;

  async function handle(msg: ConsumeMessage): Promise<void> {
    const { replyTo, correlationId } = msg.properties as { replyTo?: string; correlationId?: string };
    const reply = await answer(actions, msg.content, o.timeoutSeconds);
    log.info({ action: reply.action, status: reply.status, correlationId, ...(reply.error ? { error: reply.error } : {}) }, 'request answered');
    if (replyTo) await publishConfirmed(channel, replyTo, reply, correlationId);
    else log.warn({ correlationId }, 'request without reply_to: answer dropped');
    channel.ack(msg);
  }

  const { consumerTag } = await channel.consume(o.nas, (msg) => {
    if (!msg) return;
    const work = handle(msg).catch((err: unknown) => log.error({ err: oneLine(err) }, 'reply not published: the request stays queued'));
    inFlight.add(work);
    void work.finally(() => inFlight.delete(work));
  });

  const closed = new Promise<void>((resolve, reject) => {
    connection.on('error', (err: Error) => log.error({ err: oneLine(err) }, 'broker connection error'));
    connection.on('close', () => (stopping ? resolve() : reject(new Error(`lost the connection to RabbitMQ at ${maskUrl(o.url)}`))));
  });
  closed.catch(() => undefined);
  log.info({ url: maskUrl(o.url), queue: o.nas, image: o.image }, 'bridge ready');

  return {
    closed,
    async stop() {
      if (stopping) return closed;
      stopping = true;
      await channel.cancel(consumerTag).catch(() => undefined);
      await Promise.allSettled([...inFlight]);
      await connection.close().catch(() => undefined);
      log.info('bridge stopped');
      return closed;
    },
  };
}
