/**
 * Cloud activities for image-list subscriptions, on queue `cloud.<site>`: fetch and verify a list,
 * plan what changes, download and convert images, and the registry steps of a swap (remember, lock,
 * disable, rename, register, wait, re-apply, undo). The workflow decides the order and the undo;
 * every activity here is safe to retry. Registry credentials stay in the registry object built at
 * worker start: nothing secret travels in activity inputs, which Temporal records in history.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { checkName, InputError } from '../../common/names.js';
import type { Config } from '../../lib/config.js';
import type { Logger } from '../../lib/logger.js';
import type { Run } from '../runner.js';
import { isOciUrl, listOciRepository, pullOciImage, type OciSourceSettings } from '../oci/source.js';
import { convertImage, type ConvertResult } from './convert.js';
import { download, type DownloadOptions, type DownloadResult } from './download.js';
import {
  diffList,
  ImageListError,
  imageTemplate,
  isListAttribute,
  ownedBy,
  type ImageList,
  type ListDiff,
  type ListedImage,
  type ListOwner,
} from './imagelist.js';
import {
  checkImageName,
  RegistryError,
  TEMPLATE,
  type ImageRegistry,
  type Ownership,
  type RegistryImage,
} from './registry/types.js';
import { verifyImageList, type TrustAnchors, type VerifiedImageList } from './smime.js';

export interface CloudDeps {
  run: Run;
  config: Pick<Config, 'home' | 'site'>;
  registry: ImageRegistry;
  trust: TrustAnchors;
  /** Owner and group a locked image is handed to; OpenNebula's oneadmin/oneadmin by default. */
  admin?: Ownership;
  download?: Pick<DownloadOptions, 'retries' | 'stallTimeoutMs' | 'retryDelayMs'>;
  logger?: Logger;
}

/** What a swap remembers of an image before locking it, to re-apply or to undo. */
export interface ImageSnapshot {
  id: number;
  name: string;
  ownerId: number;
  groupId: number;
  mode: string;
  enabled: boolean;
}

export interface FetchListInput {
  subscription: string;
  url: string;
  /** The list's dc:identifier; absent until a subscription's first list fixed it. */
  expectedIdentifier?: string;
  lastAppliedVersion?: string;
  /** The endorser the subscription trusts: the signer must be this subject under this CA. */
  endorser?: { dn: string; ca: string };
  /** The subscription's own hashed CA directory, instead of the worker's. */
  caDir?: string;
  insecure?: boolean;
  /** Return an expired list instead of refusing it: the caller expires its images, nothing more. */
  allowExpired?: boolean;
  /** The file holding `user:token` for the list's host (read here, never carried in a payload). */
  credentialsFile?: string;
  /** An `oci://` source's settings: its tags are the list (activities/oci/source.ts). */
  oci?: OciSourceSettings;
}

/** Where a subscription's credentials are, and the list whose host they are for. */
export interface ListCredentials {
  file: string;
  listUrl: string;
}

/**
 * Basic authorization for the list's host from the credentials file: `user:token` on its first
 * line, as image-list services hand them out in URLs (TOKEN:x-oauth-basic). Errors name the file,
 * never what it holds.
 */
async function authorizationFor(credentials: ListCredentials | undefined): Promise<DownloadOptions['authorization']> {
  if (!credentials) return undefined;
  const file = checkAbsolute('credentials-file', credentials.file);
  const line = await fs.readFile(file, 'utf8').then(
    (text) => text.split('\n')[0]!.trim(),
    () => {
      throw new InputError('credentials-file', 'a file this worker can read', file);
    },
  );
  if (!/^[^\s:]+:\S*$/.test(line))
    throw new InputError('credentials-file', 'a file whose first line is user:token', file);
  return { origin: new URL(credentials.listUrl).origin, header: `Basic ${Buffer.from(line).toString('base64')}` };
}

/** The list names its endorser; the subscription names the one it trusts: they must agree. */
function checkEndorser(list: ImageList, endorser: { dn: string; ca: string }): void {
  if (list.endorser.dn !== endorser.dn)
    throw new ImageListError(
      'endorser',
      `the list is endorsed by ${list.endorser.dn}, the subscription trusts ${endorser.dn}`,
    );
  if (list.endorser.ca !== endorser.ca)
    throw new ImageListError(
      'endorser-ca',
      `the list's endorser is under ${list.endorser.ca}, the subscription trusts ${endorser.ca}`,
    );
}

/** Paths come from a subscription: absolute, nothing that climbs out. */
function checkAbsolute(field: string, file: string): string {
  if (typeof file !== 'string' || !path.isAbsolute(file) || file.split('/').includes('..') || /[\0\n]/.test(file)) {
    throw new InputError(field, 'an absolute path', file);
  }
  return file;
}

/** OpenNebula's code for a missing object; the catalog uses it too. */
const NO_EXISTS = 0x400;
const LOCKED_MODE = '700';

/** `name`, else the first of `name.2`, `name.3`... that no other image holds. */
function freeName(name: string, taken: Set<string>): string {
  let candidate = name;
  for (let n = 2; taken.has(candidate); n++) candidate = `${name}.${n}`;
  return candidate;
}

export function cloudPaths(config: Pick<Config, 'home'>) {
  const root = path.join(config.home, 'cloud');
  return { cache: path.join(root, 'cache'), work: path.join(root, 'work'), converted: path.join(root, 'converted') };
}

export function createCloudActivities(deps: CloudDeps) {
  const { run, registry } = deps;
  const dirs = cloudPaths(deps.config);
  const admin = deps.admin ?? { userId: 0, groupId: 0 };
  const ociDeps = { stateDir: path.join(dirs.work, 'oci'), cacheDir: dirs.cache };
  const fetchOptions = async (credentials?: ListCredentials): Promise<DownloadOptions> => {
    const authorization = await authorizationFor(credentials);
    return {
      cacheDir: dirs.cache,
      logger: deps.logger,
      run,
      ...deps.download,
      ...(authorization ? { authorization } : {}),
    };
  };

  /** Enables or disables unless it already is; OpenNebula refuses a change from USED either way. */
  async function setEnabled(id: number, enabled: boolean): Promise<void> {
    const { state } = await registry.info(id);
    if ((state === 'DISABLED') !== enabled) return;
    await registry.setEnabled(id, enabled);
  }

  /** The image registered for this entry under `name` (default: its identifier), by owner and digest. */
  async function findRegistered(
    owner: ListOwner,
    image: ListedImage,
    name = image.identifier,
  ): Promise<number | undefined> {
    const found = (await registry.list({ imageList: owner.identifier })).find(
      (candidate: RegistryImage) =>
        candidate.name === name && candidate.template[TEMPLATE.sha512] === image.sha512 && ownedBy(owner, candidate),
    );
    return found?.id;
  }

  return {
    /** Downloads the subscription's list and verifies signature, signer, identifier, dates and version. */
    async fetchImageList(input: FetchListInput): Promise<VerifiedImageList> {
      if (isOciUrl(input.url)) return listOciRepository({ ...input, oci: input.oci as OciSourceSettings }, ociDeps);
      const subscription = checkName('subscription', input.subscription);
      const trust = input.caDir === undefined ? deps.trust : { caDir: checkAbsolute('caDir', input.caDir) };
      const credentials =
        input.credentialsFile === undefined ? undefined : { file: input.credentialsFile, listUrl: input.url };
      const file = await download({ url: input.url }, await fetchOptions(credentials));
      const verified = await verifyImageList(run, file.path, path.join(dirs.work, subscription), {
        ...trust,
        insecure: input.insecure === true,
        expect: {
          identifier: input.expectedIdentifier,
          lastAppliedVersion: input.lastAppliedVersion,
          allowExpired: input.allowExpired === true,
        },
      });
      if (input.endorser) checkEndorser(verified.list, input.endorser);
      return verified;
    },

    /** What the registry must do to match the list, touching only what `owner` registered. */
    async planListUpdate(input: { list: ImageList; owner?: ListOwner }): Promise<ListDiff> {
      return diffList(
        input.list,
        await registry.list(),
        new Date(),
        input.owner ?? { identifier: input.list.identifier },
      );
    },

    /** Every image the registry holds for a list, under any name (current, parked, staged); only its owner's when given. */
    async listImagesOf(input: { listIdentifier: string; owner?: ListOwner }): Promise<RegistryImage[]> {
      const owner = input.owner ?? { identifier: input.listIdentifier };
      return (await registry.list({ imageList: input.listIdentifier })).filter((image) => ownedBy(owner, image));
    },

    /** The listed image, checked against its size and sha512, from the cache when already there. */
    async downloadImage(input: {
      image: ListedImage;
      credentials?: ListCredentials;
      oci?: OciSourceSettings;
    }): Promise<DownloadResult> {
      if (input.oci && isOciUrl(input.image.uri)) return pullOciImage({ image: input.image, oci: input.oci }, ociDeps);
      return download(
        { url: input.image.uri, sha512: input.image.sha512, size: input.image.size },
        await fetchOptions(input.credentials),
      );
    },

    /** Converts a downloaded image to the registry's format, keyed by its digest. */
    async convertForRegistry(input: { sha512: string; path: string; declared?: string }): Promise<ConvertResult> {
      if (!/^[0-9a-f]{128}$/.test(input.sha512)) throw new RegistryError('convert', 'sha512 must be 128 hex digits');
      const target = path.join(dirs.converted, `${input.sha512}.${registry.format}`);
      const converted = await convertImage(run, {
        source: input.path,
        target,
        format: registry.format,
        workDir: dirs.work,
        ...(input.declared ? { declared: input.declared } : {}),
      });
      if (converted.formatNote)
        deps.logger?.warn({ sha512: input.sha512, note: converted.formatNote }, 'declared format differs');
      return converted;
    },

    /** Remembers owner, group, mode and enabled state before a swap touches the image. */
    async snapshotImage(input: { id: number }): Promise<ImageSnapshot> {
      const image = await registry.info(input.id);
      return {
        id: image.id,
        name: image.name,
        ownerId: image.ownerId,
        groupId: image.groupId,
        mode: image.mode,
        enabled: image.state !== 'DISABLED',
      };
    },

    /** Hands the image to the admin user and group with mode 700, so no one else can use or change it. */
    async lockImage(input: { id: number }): Promise<void> {
      await registry.chown(input.id, admin);
      await registry.chmod(input.id, LOCKED_MODE);
    },

    async setImageEnabled(input: { id: number; enabled: boolean }): Promise<void> {
      await setEnabled(input.id, input.enabled);
    },

    /**
     * Renames the image and returns the name it now has. With `free`, a name another image holds
     * (two images parked within one second) gets a counter: `<name>.2`, `<name>.3`...; the image's
     * own name counts as free, so a retry lands on the name the first attempt took.
     */
    async renameImage(input: { id: number; name: string; free?: boolean }): Promise<string> {
      const wanted = checkImageName(input.name);
      const name = input.free
        ? freeName(wanted, new Set((await registry.list()).filter((i) => i.id !== input.id).map((i) => i.name)))
        : wanted;
      await registry.rename(input.id, name);
      return name;
    },

    /**
     * Registers the converted disk as `<identifier>` (or `name`, for a staged image) with the list's
     * metadata. A retry after a lost answer finds the image it already registered (same name, list
     * and digest) and returns it.
     */
    async registerImage(input: { list: ListOwner; image: ListedImage; path: string; name?: string }): Promise<number> {
      const name = checkImageName(input.name ?? input.image.identifier);
      const existing = await findRegistered(input.list, input.image, name);
      if (existing !== undefined) {
        // A registration that failed (or whose copier died) is redone, never waited for.
        if ((await registry.info(existing)).state !== 'ERROR') return existing;
        await registry.delete(existing);
      }
      const template = imageTemplate(input.list, input.image);
      return registry.register({ name, path: input.path, format: registry.format, template });
    },

    /**
     * The image `registerImage` made (or half made) for this entry, if any: what a swap that failed
     * after asking for a registration must remove, even when the answer never came back.
     */
    async findRegisteredImage(input: { list: ListOwner; image: ListedImage; name?: string }): Promise<number | null> {
      return (await findRegistered(input.list, input.image, input.name)) ?? null;
    },

    /**
     * Attaches the list's metadata for this entry to the image in place: no download, no new
     * image; owner, group, mode and state untouched. Attributes imgflow set before and the list no
     * longer gives are blanked. Doing it twice is harmless.
     */
    async updateImageMetadata(input: { id: number; list: ListOwner; image: ListedImage }): Promise<void> {
      const current = await registry.info(input.id);
      if (current.template[TEMPLATE.sha512] !== input.image.sha512) {
        throw new RegistryError(
          'updateImageMetadata',
          `image ${input.id} holds other bytes (sha512 ${current.template[TEMPLATE.sha512]?.slice(0, 16) ?? 'none'}...) than ${input.image.identifier} ${input.image.version}`,
        );
      }
      const wanted = imageTemplate(input.list, input.image);
      const dropped = Object.keys(current.template).filter(
        (key) => isListAttribute(key) && !(key in wanted) && current.template[key] !== '',
      );
      await registry.updateTemplate(input.id, { ...wanted, ...Object.fromEntries(dropped.map((key) => [key, ''])) });
    },

    async waitImageReady(input: { id: number; timeoutMs?: number }): Promise<RegistryImage> {
      return registry.waitReady(input.id, { timeoutMs: input.timeoutMs });
    },

    /**
     * Re-applies what a snapshot remembered: to the new image after a swap, or to the old one when
     * undoing (then with `name`, its name before the swap).
     */
    async applySnapshot(input: { id: number; snapshot: ImageSnapshot; name?: string }): Promise<void> {
      const { snapshot } = input;
      if (input.name !== undefined) await registry.rename(input.id, checkImageName(input.name));
      await registry.chown(input.id, { userId: snapshot.ownerId, groupId: snapshot.groupId });
      await registry.chmod(input.id, snapshot.mode);
      await setEnabled(input.id, snapshot.enabled);
    },

    /** Deletes an image; one already gone counts as deleted. */
    async deleteImage(input: { id: number }): Promise<void> {
      try {
        await registry.delete(input.id);
      } catch (error) {
        if (error instanceof RegistryError && error.code === NO_EXISTS) return;
        throw error;
      }
    },
  };
}

export type CloudActivities = ReturnType<typeof createCloudActivities>;
