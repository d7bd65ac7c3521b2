/**
 * Image recipes: YAML checked against a fixed schema before anything reaches a path or a command.
 * Unknown keys are errors; every error is one line naming the field and what was expected.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseDocument } from 'yaml';
import { ARCHES, InputError, checkHost, checkImageName, checkName, type Arch } from '../../common/names.js';
import { digestOf } from './digest.js';

export type Variant = 'minbase' | 'buildd' | 'default';
export type OutputFormat = 'qcow2' | 'raw' | 'squashfs';
export type HookLayer = 'site' | 'family' | 'os' | 'image';

export interface DebootstrapSource {
  kind: 'debootstrap';
  suite: string;
  variant: Variant;
  components: string[];
  /** Extra packages debootstrap includes. */
  packages: string[];
  mirror: string;
}

export interface CaptureSource {
  kind: 'capture';
  /** Set for a remote host; absent for a local path. */
  user?: string;
  host?: string;
  port?: number;
  path: string;
  excludes: string[];
  /** The recipe allows capturing the builder host's own root filesystem (never by default). */
  allowBuilderRoot?: boolean;
}

export interface TarballSource {
  kind: 'tarball';
  url?: string;
  /** Absolute, resolved against the recipe's directory. */
  path?: string;
  sha256: string;
}

export type Source = DebootstrapSource | CaptureSource | TarballSource;

export interface Hook {
  name: string;
  layer: HookLayer;
  /** argv run chrooted in the image root; for a file hook, the arguments after the file. */
  argv: string[];
  /** A script from the recipe's directory, copied into the root and run there. */
  file?: { path: string; sha256: string };
}

export interface PrivateDir {
  dir: string;
  exclude: string[];
}

export interface PrepareOptions {
  hostname?: string;
  network: 'keep' | 'remove';
  removeServices: string[];
  private: PrivateDir[];
  shared: boolean;
  allowPasswordHashes: boolean;
}

export interface Recipe {
  image: string;
  arch: Arch;
  os: string;
  source: Source;
  packages: string[];
  /** In the order they run: site-wide, OS family, OS, image. */
  hooks: Hook[];
  prepare: PrepareOptions;
  outputs: OutputFormat[];
}

/** All of a recipe's errors at once, one line each; `field` and `expected` are the first's. */
export class RecipeError extends InputError {
  constructor(readonly errors: InputError[]) {
    super(errors[0]!.field, errors[0]!.expected, errors[0]!.got);
    this.message = errors.map((e) => e.message).join('\n');
  }
}

export interface ParseOptions {
  /** Mirror for debootstrap when the recipe names none; defaults to the machine's Debian source. */
  defaultMirror?: string;
}

const HOOK_LAYERS: readonly HookLayer[] = ['site', 'family', 'os', 'image'];
const OUTPUTS: readonly OutputFormat[] = ['qcow2', 'raw', 'squashfs'];
const VARIANTS: readonly Variant[] = ['minbase', 'buildd', 'default'];
const PACKAGE = /^[a-z0-9][a-z0-9+.-]{1,99}$/;
const SUITE = /^[a-z][a-z0-9-]{0,31}$/;
const COMPONENT = /^[a-z][a-z0-9-]{0,31}$/;
const MIRROR = /^(https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?|file:\/\/)(\/[A-Za-z0-9._~+\/-]*)?$/;
const SHA256 = /^[0-9a-f]{64}$/;
/** Paths that reach rsync, tar and the image: no spaces, quotes, globs or shell characters. */
const SAFE_PATH = /^\/[A-Za-z0-9._+@\/-]*$/;
const USER = /^[a-z_][a-z0-9_-]{0,31}$/;
const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;
const UNIT = /^[A-Za-z0-9][A-Za-z0-9@._:-]{0,254}$/;
const EXCLUDE = /^[^\0\n\r]{1,255}$/;
const ARG = /^[^\0\n\r]{0,4096}$/;

/** Collects errors by field path instead of stopping at the first. */
class Checker {
  readonly errors: InputError[] = [];

  fail(field: string, expected: string, got?: unknown): undefined {
    this.errors.push(new InputError(field, expected, got));
    return undefined;
  }

  object(
    field: string,
    value: unknown,
    allowed: readonly string[],
    required: readonly string[] = [],
  ): Record<string, unknown> | undefined {
    if (value === null || typeof value !== 'object' || Array.isArray(value))
      return this.fail(field, 'a mapping', value);
    const record = value as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      if (!allowed.includes(key)) this.fail(join(field, key), `a known key (${allowed.join(', ')})`);
    }
    for (const key of required) if (record[key] === undefined) this.fail(join(field, key), 'a value (required)');
    return record;
  }

  string(field: string, value: unknown, pattern: RegExp, expected: string): string | undefined {
    if (typeof value !== 'string' || !pattern.test(value) || value.split('/').includes('..'))
      return this.fail(field, expected, value);
    return value;
  }

  list<T>(field: string, value: unknown, each: (field: string, item: unknown) => T | undefined): T[] {
    if (value === undefined) return [];
    if (!Array.isArray(value)) {
      this.fail(field, 'a list', value);
      return [];
    }
    return value.map((item, i) => each(`${field}[${i}]`, item)).filter((x): x is T => x !== undefined);
  }

  oneOf<T extends string>(field: string, value: unknown, options: readonly T[]): T | undefined {
    if (!options.includes(value as T)) return this.fail(field, `one of ${options.join(', ')}`, value);
    return value as T;
  }

  boolean(field: string, value: unknown, fallback: boolean): boolean {
    if (value === undefined) return fallback;
    if (typeof value !== 'boolean') return this.fail(field, 'true or false', value) ?? fallback;
    return value;
  }

  /** Wraps the project's own name checks so their errors join the list. */
  named<T>(field: string, value: unknown, check: (field: string, value: unknown) => T): T | undefined {
    try {
      return check(field, value);
    } catch (error) {
      if (error instanceof InputError) {
        this.errors.push(error);
        return undefined;
      }
      throw error;
    }
  }
}

function join(field: string, key: string): string {
  return field ? `${field}.${key}` : key;
}

/** The first `deb` URI of the machine's Debian source, which is the mirror this host can reach. */
export function machineMirror(sourcesFile = '/etc/apt/sources.list.d/debian.sources'): string | undefined {
  let text: string;
  try {
    text = fs.readFileSync(sourcesFile, 'utf8');
  } catch {
    return undefined;
  }
  for (const stanza of text.split(/\n\s*\n/)) {
    const types = /^Types:\s*(.+)$/im.exec(stanza)?.[1]?.split(/\s+/) ?? [];
    const uri = /^URIs:\s*(\S+)/im.exec(stanza)?.[1];
    if (types.includes('deb') && uri) return uri;
  }
  return undefined;
}

function checkDebootstrap(
  c: Checker,
  field: string,
  value: unknown,
  options: ParseOptions,
): DebootstrapSource | undefined {
  const o = c.object(field, value, ['suite', 'variant', 'components', 'packages', 'mirror'], ['suite']);
  if (!o) return undefined;
  const suite = c.string(join(field, 'suite'), o.suite, SUITE, 'a Debian suite name such as bookworm');
  const variant = o.variant === undefined ? 'minbase' : c.oneOf(join(field, 'variant'), o.variant, VARIANTS);
  const components =
    o.components === undefined
      ? ['main']
      : c.list(join(field, 'components'), o.components, (f, v) =>
          c.string(f, v, COMPONENT, 'an archive component such as main'),
        );
  const packages = c.list(join(field, 'packages'), o.packages, (f, v) =>
    c.string(f, v, PACKAGE, 'a Debian package name'),
  );
  const mirrorValue = o.mirror ?? options.defaultMirror ?? machineMirror();
  const mirror =
    mirrorValue === undefined
      ? c.fail(
          join(field, 'mirror'),
          'a mirror URI (none given and none found in /etc/apt/sources.list.d/debian.sources)',
        )
      : c.string(join(field, 'mirror'), mirrorValue, MIRROR, 'an http(s):// or file:// mirror URI');
  if (!suite || !variant || !mirror || components.length === 0) return undefined;
  return { kind: 'debootstrap', suite, variant, components, packages: [...new Set(packages)].sort(), mirror };
}

/** Host names that always mean the machine the command runs on. */
export const isLoopbackHost = (host: string) => host === 'localhost' || /^127\./.test(host);

/**
 * A capture of the builder's own root would copy the build host, its imgflow state and its
 * secrets included, into an image: only a recipe that says so may do it. The literal `/` is
 * refused here; the builder checks again where the path resolves (symlinks) before it copies.
 */
export function builderRootRefusal(from: string, how = 'is'): InputError {
  return new InputError(
    'source.capture.allowBuilderRoot',
    `true to capture the builder host itself (source.capture.from ${JSON.stringify(from)} ${how} its root filesystem)`,
  );
}

/** `[user@]host:/path` for a remote host, or an absolute local path. */
function checkCapture(c: Checker, field: string, value: unknown): CaptureSource | undefined {
  const o = c.object(field, value, ['from', 'port', 'excludes', 'allowBuilderRoot'], ['from']);
  if (!o) return undefined;
  const excludes = c.list(join(field, 'excludes'), o.excludes, (f, v) =>
    c.string(f, v, EXCLUDE, 'an rsync exclude pattern on one line'),
  );
  const port =
    o.port === undefined
      ? undefined
      : Number.isInteger(o.port) && (o.port as number) >= 1 && (o.port as number) <= 65535
        ? (o.port as number)
        : c.fail(join(field, 'port'), 'a port from 1 to 65535', o.port);
  const allowBuilderRoot = c.boolean(join(field, 'allowBuilderRoot'), o.allowBuilderRoot, false);
  const allow = allowBuilderRoot ? { allowBuilderRoot } : {};
  const from = o.from;
  const fromField = join(field, 'from');
  if (typeof from !== 'string') return c.fail(fromField, '"[user@]host:/path" or an absolute local path', from);
  const remote = /^(?:([^@:]+)@)?([^@:/]+):(.*)$/.exec(from);
  const refuseRoot = (p: string) => {
    if (!allowBuilderRoot && path.posix.normalize(p) === '/') c.errors.push(builderRootRefusal(from));
  };
  if (!remote) {
    const local = c.string(
      fromField,
      from,
      SAFE_PATH,
      'an absolute local path of letters, digits and ._+@-/ (or "[user@]host:/path")',
    );
    if (local) refuseRoot(local);
    return local ? { kind: 'capture', path: local, excludes, ...(port ? { port } : {}), ...allow } : undefined;
  }
  const [, user, host, remotePath] = remote;
  const okUser =
    user === undefined
      ? 'root'
      : c.string(fromField, user, USER, 'a user name of lower-case letters, digits, "_" or "-" before "@"');
  const okHost = IPV4.test(host!) ? host : c.named(fromField, host, checkHost);
  const okPath = c.string(
    fromField,
    remotePath,
    SAFE_PATH,
    'an absolute path after "host:" of letters, digits and ._+@-/',
  );
  if (okHost && okPath && isLoopbackHost(okHost)) refuseRoot(okPath);
  if (!okUser || !okHost || !okPath) return undefined;
  return { kind: 'capture', user: okUser, host: okHost, path: okPath, excludes, ...(port ? { port } : {}), ...allow };
}

function checkTarball(c: Checker, field: string, value: unknown, recipeDir: string): TarballSource | undefined {
  const o = c.object(field, value, ['url', 'path', 'sha256'], ['sha256']);
  if (!o) return undefined;
  const sha256 = c.string(join(field, 'sha256'), o.sha256, SHA256, '64 lower-case hex digits');
  if ((o.url === undefined) === (o.path === undefined)) return c.fail(field, 'exactly one of url or path');
  if (o.url !== undefined) {
    const url = c.string(
      join(field, 'url'),
      o.url,
      /^https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?\/[A-Za-z0-9._~+\/-]*$/,
      'an http(s) URL without query or spaces',
    );
    return url && sha256 ? { kind: 'tarball', url, sha256 } : undefined;
  }
  const raw = typeof o.path === 'string' ? path.resolve(recipeDir, o.path) : o.path;
  const file = c.string(join(field, 'path'), raw, SAFE_PATH, 'a tarball path of letters, digits and ._+@-/');
  return file && sha256 ? { kind: 'tarball', path: file, sha256 } : undefined;
}

function checkSource(c: Checker, value: unknown, recipeDir: string, options: ParseOptions): Source | undefined {
  const kinds = ['debootstrap', 'capture', 'tarball'] as const;
  const o = c.object('source', value, kinds);
  if (!o) return undefined;
  const given = kinds.filter((k) => o[k] !== undefined);
  if (given.length !== 1) return c.fail('source', `exactly one of ${kinds.join(', ')}`, given);
  switch (given[0]!) {
    case 'debootstrap':
      return checkDebootstrap(c, 'source.debootstrap', o.debootstrap, options);
    case 'capture':
      return checkCapture(c, 'source.capture', o.capture);
    case 'tarball':
      return checkTarball(c, 'source.tarball', o.tarball, recipeDir);
  }
}

/** A hook script must resolve (symlinks followed) inside the recipe's directory. */
function hookFile(c: Checker, field: string, value: unknown, recipeDir: string): Hook['file'] {
  if (typeof value !== 'string' || value.length === 0)
    return c.fail(field, 'a script path relative to the recipe', value);
  let real: string;
  let base: string;
  try {
    base = fs.realpathSync(recipeDir);
    real = fs.realpathSync(path.resolve(recipeDir, value));
  } catch {
    return c.fail(field, 'an existing script inside the recipe directory', value);
  }
  if (!real.startsWith(base + path.sep)) return c.fail(field, 'a path inside the recipe directory', value);
  if (!fs.statSync(real).isFile()) return c.fail(field, 'a regular file', value);
  return { path: real, sha256: createHash('sha256').update(fs.readFileSync(real)).digest('hex') };
}

function checkHook(c: Checker, field: string, value: unknown, layer: HookLayer, recipeDir: string): Hook | undefined {
  const o = c.object(field, value, ['name', 'run', 'file', 'args'], ['name']);
  if (!o) return undefined;
  const name = c.named(join(field, 'name'), o.name, checkName);
  const args = c.list(join(field, 'args'), o.args, (f, v) => c.string(f, v, ARG, 'an argument string on one line'));
  if ((o.run === undefined) === (o.file === undefined))
    return c.fail(field, 'exactly one of run (an argv list) or file');
  if (o.run !== undefined) {
    if (typeof o.run === 'string') return c.fail(join(field, 'run'), 'an argv list, not a shell string', o.run);
    const argv = c.list(join(field, 'run'), o.run, (f, v) => c.string(f, v, ARG, 'an argument string on one line'));
    if (argv.length === 0) return c.fail(join(field, 'run'), 'a non-empty argv list');
    return name ? { name, layer, argv: [...argv, ...args] } : undefined;
  }
  const file = hookFile(c, join(field, 'file'), o.file, recipeDir);
  return name && file ? { name, layer, argv: args, file } : undefined;
}

function checkHooks(c: Checker, value: unknown, recipeDir: string): Hook[] {
  if (value === undefined) return [];
  const o = c.object('hooks', value, HOOK_LAYERS);
  if (!o) return [];
  const hooks = HOOK_LAYERS.flatMap((layer) =>
    c.list(`hooks.${layer}`, o[layer], (f, v) => checkHook(c, f, v, layer, recipeDir)),
  );
  const seen = new Set<string>();
  for (const hook of hooks) {
    if (seen.has(hook.name)) c.fail(`hooks.${hook.layer}`, 'hook names unique across layers', hook.name);
    seen.add(hook.name);
  }
  return hooks;
}

function checkPrivate(c: Checker, field: string, value: unknown): PrivateDir | undefined {
  const o = c.object(field, value, ['dir', 'exclude'], ['dir']);
  if (!o) return undefined;
  const dir = c.string(join(field, 'dir'), o.dir, SAFE_PATH, 'an absolute directory in the image');
  const exclude = c.list(join(field, 'exclude'), o.exclude, (f, v) => c.string(f, v, EXCLUDE, 'a pattern on one line'));
  return dir ? { dir: path.posix.normalize(dir), exclude } : undefined;
}

function checkPrepare(c: Checker, value: unknown, allowPasswordHashes: boolean): PrepareOptions {
  const o =
    value === undefined
      ? {}
      : (c.object('prepare', value, ['hostname', 'network', 'removeServices', 'private', 'shared']) ?? {});
  const hostname = o.hostname === undefined ? undefined : c.named('prepare.hostname', o.hostname, checkHost);
  return {
    ...(hostname ? { hostname } : {}),
    network:
      o.network === undefined ? 'keep' : (c.oneOf('prepare.network', o.network, ['keep', 'remove'] as const) ?? 'keep'),
    removeServices: c.list('prepare.removeServices', o.removeServices, (f, v) =>
      c.string(f, v, UNIT, 'a systemd unit name such as cron or cron.service'),
    ),
    private: c.list('prepare.private', o.private, (f, v) => checkPrivate(c, f, v)),
    shared: c.boolean('prepare.shared', o.shared, false),
    allowPasswordHashes,
  };
}

const TOP_KEYS = ['image', 'arch', 'os', 'source', 'packages', 'hooks', 'prepare', 'outputs', 'allowPasswordHashes'];

/** Parses and checks a recipe; throws RecipeError listing every problem, one line each. */
export function parseRecipe(text: string, recipeDir: string, options: ParseOptions = {}): Recipe {
  const doc = parseDocument(text, { uniqueKeys: true });
  // An unknown tag (`!!python/object`, `!include`) would be read as plain text: refused like an error.
  const problems = [...doc.errors, ...doc.warnings];
  if (problems.length)
    throw new RecipeError(
      problems.map((e) => new InputError('recipe', 'valid YAML with no unknown tags', e.message.split('\n')[0])),
    );
  let value: unknown;
  try {
    // Aliases past the limit are refused (a "billion laughs" document would expand without end).
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new RecipeError([
      new InputError('recipe', 'YAML whose aliases expand to a reasonable size', (err as Error).message.split('\n')[0]),
    ]);
  }
  const c = new Checker();
  const o = c.object('', value, TOP_KEYS, ['image', 'arch', 'os', 'source']);
  if (!o) throw new RecipeError([new InputError('recipe', 'a mapping of image, arch, os, source, ...')]);
  const image = c.named('image', o.image, checkImageName);
  const arch = c.oneOf('arch', o.arch, ARCHES);
  const os = c.named('os', o.os, checkName);
  const source = o.source === undefined ? undefined : checkSource(c, o.source, recipeDir, options);
  const packages = c.list('packages', o.packages, (f, v) => c.string(f, v, PACKAGE, 'a Debian package name'));
  const hooks = checkHooks(c, o.hooks, recipeDir);
  const prepare = checkPrepare(c, o.prepare, c.boolean('allowPasswordHashes', o.allowPasswordHashes, false));
  const outputs =
    o.outputs === undefined
      ? (['qcow2'] as OutputFormat[])
      : c.list('outputs', o.outputs, (f, v) => c.oneOf(f, v, OUTPUTS));
  if (o.outputs !== undefined && outputs.length === 0 && Array.isArray(o.outputs))
    c.fail('outputs', `at least one of ${OUTPUTS.join(', ')}`);
  if (c.errors.length || !image || !arch || !os || !source)
    throw new RecipeError(c.errors.length ? c.errors : [new InputError('recipe', 'image, arch, os and source')]);
  return { image, arch, os, source, packages: [...new Set(packages)], hooks, prepare, outputs: [...new Set(outputs)] };
}

export function readRecipe(file: string, options: ParseOptions = {}): Recipe {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new InputError(
      'recipe',
      `a readable recipe file (${(err as NodeJS.ErrnoException).code === 'EISDIR' ? 'it is a directory' : 'it cannot be read'})`,
      file,
    );
  }
  return parseRecipe(text, path.dirname(path.resolve(file)), options);
}

/** Digest of everything the recipe decides, hook scripts' contents included (via their sha256). */
export function recipeDigest(recipe: Recipe): string {
  return digestOf(recipe);
}

/** Digest of the inputs that decide a debootstrap tree; equal keys may share one cached tree. */
export function bootstrapKey(arch: string, source: DebootstrapSource): string {
  const { suite, variant, components, packages, mirror } = source;
  return digestOf({ kind: 'debootstrap', arch, suite, variant, components, packages: [...packages].sort(), mirror });
}

/*
 * Activity inputs arrive as JSON from a workflow: they are checked again with the same rules
 * before any of them reaches a path or a command.
 */

function throwIfErrors(c: Checker): void {
  if (c.errors.length) throw new RecipeError(c.errors);
}

function sourceAsYaml(source: Source): Record<string, unknown> {
  switch (source.kind) {
    case 'debootstrap': {
      const { suite, variant, components, packages, mirror } = source;
      return { debootstrap: { suite, variant, components, packages, mirror } };
    }
    case 'capture': {
      const from = source.host ? `${source.user ?? 'root'}@${source.host}:${source.path}` : source.path;
      return {
        capture: {
          from,
          excludes: source.excludes,
          ...(source.port ? { port: source.port } : {}),
          ...(source.allowBuilderRoot ? { allowBuilderRoot: true } : {}),
        },
      };
    }
    case 'tarball':
      return {
        tarball: source.url ? { url: source.url, sha256: source.sha256 } : { path: source.path, sha256: source.sha256 },
      };
  }
}

export function checkSourceInput<K extends Source['kind']>(kind: K, source: Source): Extract<Source, { kind: K }> {
  const c = new Checker();
  if (source?.kind !== kind) c.fail('source.kind', kind, source?.kind);
  throwIfErrors(c);
  const checked = checkSource(c, sourceAsYaml(source), '/', {});
  throwIfErrors(c);
  return checked as Extract<Source, { kind: K }>;
}

export function checkPackagesInput(packages: unknown): string[] {
  const c = new Checker();
  const checked = c.list('packages', packages, (f, v) => c.string(f, v, PACKAGE, 'a Debian package name'));
  throwIfErrors(c);
  return checked;
}

export function checkHookInput(hook: Hook): Hook {
  const c = new Checker();
  const layer = c.oneOf('hook.layer', hook?.layer, HOOK_LAYERS);
  const name = c.named('hook.name', hook?.name, checkName);
  const argv = c.list('hook.argv', hook?.argv, (f, v) => c.string(f, v, ARG, 'an argument string on one line'));
  if (!hook?.file && argv.length === 0) c.fail('hook.argv', 'a non-empty argv list for a hook without a file');
  if (hook?.file) {
    c.string('hook.file.path', hook.file.path, SAFE_PATH, 'an absolute script path');
    c.string('hook.file.sha256', hook.file.sha256, SHA256, '64 lower-case hex digits');
  }
  throwIfErrors(c);
  return { name: name!, layer: layer!, argv, ...(hook.file ? { file: hook.file } : {}) };
}

export function checkPrepareInput(options: PrepareOptions): PrepareOptions {
  const c = new Checker();
  const { allowPasswordHashes, ...rest } = options ?? {};
  const checked = checkPrepare(c, rest, c.boolean('allowPasswordHashes', allowPasswordHashes, false));
  throwIfErrors(c);
  return checked;
}

export function checkOutputsInput(outputs: unknown): OutputFormat[] {
  const c = new Checker();
  const checked = c.list('outputs', outputs, (f, v) => c.oneOf(f, v, OUTPUTS));
  if (checked.length === 0) c.fail('outputs', `at least one of ${OUTPUTS.join(', ')}`, outputs);
  throwIfErrors(c);
  return [...new Set(checked)];
}
