import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../common/names.js';
import {
  RecipeError,
  bootstrapKey,
  machineMirror,
  parseRecipe,
  readRecipe,
  recipeDigest,
  type DebootstrapSource,
} from '../../activities/builder/recipe.js';
import { tempDir } from '../support/dirs.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'recipes');
const MIRROR = 'http://mirror.example/debian';

const base = `
image: node
arch: x86_64
os: debian-12
source:
  debootstrap:
    suite: bookworm
`;

/** Parses and returns the error lines, failing if the recipe was accepted. */
function errorsOf(text: string, dir = FIXTURES): string[] {
  try {
    parseRecipe(text, dir, { defaultMirror: MIRROR });
  } catch (error) {
    expect(error).toBeInstanceOf(RecipeError);
    expect(error).toBeInstanceOf(InputError);
    const lines = (error as Error).message.split('\n');
    expect(lines).toEqual((error as RecipeError).errors.map((e) => e.message));
    for (const line of lines) expect(line).toMatch(/^[A-Za-z0-9_.[\]]+: expected .+/);
    return lines;
  }
  throw new Error('the recipe was accepted');
}

describe('recipe parsing', () => {
  it('reads the example recipe: defaults, hooks in layer order, checked hook scripts', () => {
    const recipe = readRecipe(path.join(FIXTURES, 'minbase.yaml'));
    expect(recipe.source).toEqual({
      kind: 'debootstrap',
      suite: 'bookworm',
      variant: 'minbase',
      components: ['main'],
      packages: [],
      mirror: machineMirror(),
    });
    expect(machineMirror()).toMatch(/^https?:\/\//);
    expect(recipe.hooks.map((h) => [h.layer, h.name])).toEqual([
      ['site', 'site-motd'],
      ['image', 'image-marker'],
    ]);
    expect(recipe.hooks[0]!.file?.path).toBe(fs.realpathSync(path.join(FIXTURES, 'hooks/motd.sh')));
    expect(recipe.hooks[0]!.file?.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(recipe.hooks[0]!.argv).toEqual(['imgflow test site']);
    expect(recipe.prepare).toEqual({
      hostname: 'node',
      network: 'remove',
      removeServices: ['cron'],
      private: [{ dir: '/var/lib/private', exclude: ['*.tmp'] }],
      shared: true,
      allowPasswordHashes: false,
    });
    expect(recipe.outputs).toEqual(['qcow2']);
  });

  it('reads remote capture and tarball sources', () => {
    expect(readRecipe(path.join(FIXTURES, 'capture.yaml')).source).toEqual({
      kind: 'capture',
      user: 'root',
      host: 'node001',
      port: 2222,
      path: '/',
      excludes: ['/var/cache/*', '*.swp'],
    });
    expect(readRecipe(path.join(FIXTURES, 'tarball.yaml')).source).toEqual({
      kind: 'tarball',
      path: path.join(FIXTURES, 'rootfs.tar'),
      sha256: '0'.repeat(64),
    });
  });

  it('defaults outputs to qcow2 and the mirror to the one given', () => {
    const recipe = parseRecipe(base, FIXTURES, { defaultMirror: MIRROR });
    expect(recipe.outputs).toEqual(['qcow2']);
    expect((recipe.source as DebootstrapSource).mirror).toBe(MIRROR);
  });
});

describe('recipe errors: one line each, naming the field', () => {
  it('refuses unknown YAML tags and aliases that expand without end', () => {
    expect(errorsOf(`${base}prepare: !!python/object:os.system {}\n`)).toEqual([
      expect.stringMatching(/^recipe: expected valid YAML with no unknown tags, got ".*python\/object/),
    ]);
    const bomb = [
      'a: &a ["x","x","x","x","x","x","x","x","x","x"]',
      ...Array.from(
        { length: 8 },
        (_, i) =>
          `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10)
            .fill(`*${String.fromCharCode(97 + i)}`)
            .join(',')}]`,
      ),
    ].join('\n');
    expect(errorsOf(`${bomb}\n${base}`)).toEqual([
      expect.stringMatching(/^recipe: expected YAML whose aliases expand to a reasonable size/),
    ]);
  });

  it('refuses a recipe path that is missing or a directory, naming it', () => {
    expect(() => readRecipe(path.join(FIXTURES, 'nowhere.yaml'))).toThrow(
      /^recipe: expected a readable recipe file \(it cannot be read\), got ".*nowhere\.yaml"$/,
    );
    expect(() => readRecipe(FIXTURES)).toThrow(/^recipe: expected a readable recipe file \(it is a directory\)/);
  });

  it('rejects unknown keys at every level', () => {
    expect(errorsOf(`${base}colour: blue\n`)).toEqual([
      expect.stringMatching(/^colour: expected a known key \(image, arch/),
    ]);
    expect(errorsOf(`${base}    sute: bookworm\n`)).toEqual([
      expect.stringMatching(/^source\.debootstrap\.sute: expected a known key \(suite, variant/),
    ]);
    expect(errorsOf(`${base}prepare:\n  network: remove\n  netwrok: keep\n`)).toEqual([
      expect.stringMatching(/^prepare\.netwrok: expected a known key/),
    ]);
  });

  it('rejects an unknown architecture', () => {
    expect(errorsOf(base.replace('x86_64', 'amd65'))).toEqual([
      expect.stringMatching(/^arch: expected one of x86_64, aarch64.*, got "amd65"$/),
    ]);
  });

  it.each([
    ['a slash', 'a/b'],
    ['dot-dot', 'a..b'],
    ['a space', '"a b"'],
    ['shell characters', '"a;rm -rf"'],
    ['a command substitution', '"$(id)"'],
    ['more than 64 characters', 'a'.repeat(65)],
    ['upper case', 'Node'],
  ])('rejects an image name with %s', (_, name) => {
    expect(errorsOf(base.replace('image: node', `image: ${name}`))).toEqual([
      expect.stringMatching(/^image: expected a name of 1-64 lower-case letters/),
    ]);
  });

  const scratch = tempDir();

  it('rejects a hook script outside the recipe directory, also through a symlink', () => {
    const dir = fs.mkdtempSync(path.join(scratch, 'recipe-'));
    fs.writeFileSync(path.join(dir, 'ok.sh'), '#!/bin/sh\n');
    fs.symlinkSync('/etc/passwd', path.join(dir, 'sneaky.sh'));
    const hooks = (file: string) => `${base}hooks:\n  image:\n    - name: h\n      file: ${file}\n`;
    expect(errorsOf(hooks('../../../etc/passwd'), dir)).toEqual([
      expect.stringMatching(/^hooks\.image\[0\]\.file: expected a path inside the recipe directory/),
    ]);
    expect(errorsOf(hooks('sneaky.sh'), dir)).toEqual([
      expect.stringMatching(/^hooks\.image\[0\]\.file: expected a path inside the recipe directory/),
    ]);
    expect(errorsOf(hooks('missing.sh'), dir)).toEqual([
      expect.stringMatching(/^hooks\.image\[0\]\.file: expected an existing script/),
    ]);
    expect(parseRecipe(hooks('ok.sh'), dir, { defaultMirror: MIRROR }).hooks[0]!.file?.path).toBe(
      path.join(fs.realpathSync(dir), 'ok.sh'),
    );
  });

  it('rejects a hook given as a shell string', () => {
    expect(errorsOf(`${base}hooks:\n  os:\n    - name: h\n      run: "apt-get update && reboot"\n`)).toEqual([
      expect.stringMatching(/^hooks\.os\[0\]\.run: expected an argv list, not a shell string/),
    ]);
  });

  it('rejects a missing source, two sources and bad source fields', () => {
    expect(errorsOf('image: node\narch: x86_64\nos: debian-12\n')).toEqual(['source: expected a value (required)']);
    expect(errorsOf(`${base}  tarball: {path: x.tar, sha256: "${'a'.repeat(64)}"}\n`)).toEqual([
      expect.stringMatching(/^source: expected exactly one of debootstrap, capture, tarball/),
    ]);
    expect(errorsOf(`${base}    variant: fat\n`)).toEqual([
      expect.stringMatching(/^source\.debootstrap\.variant: expected one of minbase, buildd, default/),
    ]);
    expect(errorsOf(`${base}    mirror: "http://x/debian; rm -rf /"\n`)).toEqual([
      expect.stringMatching(/^source\.debootstrap\.mirror: expected an http\(s\):\/\/ or file:\/\/ mirror URI/),
    ]);
    expect(errorsOf(`${base}    packages: ["vim; rm"]\n`)).toEqual([
      expect.stringMatching(/^source\.debootstrap\.packages\[0\]: expected a Debian package name/),
    ]);
  });

  it('rejects bad capture and tarball sources', () => {
    const top = 'image: node\narch: x86_64\nos: debian-12\nsource:\n';
    expect(errorsOf(`${top}  capture: {from: "root@node;reboot:/"}\n`)).toEqual([
      expect.stringMatching(/^source\.capture\.from: expected a host name/),
    ]);
    expect(errorsOf(`${top}  capture: {from: "node001:/srv/../etc"}\n`)).toEqual([
      expect.stringMatching(/^source\.capture\.from: expected an absolute path/),
    ]);
    expect(errorsOf(`${top}  capture: {from: "relative/dir"}\n`)).toEqual([
      expect.stringMatching(/^source\.capture\.from: expected an absolute local path/),
    ]);
    expect(errorsOf(`${top}  tarball: {path: rootfs.tar, sha256: abc}\n`)).toEqual([
      expect.stringMatching(/^source\.tarball\.sha256: expected 64 lower-case hex digits/),
    ]);
    expect(errorsOf(`${top}  tarball: {sha256: "${'a'.repeat(64)}"}\n`)).toEqual([
      'source.tarball: expected exactly one of url or path',
    ]);
  });

  it('refuses capturing the builder itself unless the recipe says so with allowBuilderRoot', () => {
    const top = 'image: node\narch: x86_64\nos: debian-12\nsource:\n';
    for (const from of ['/', '/./', '//', '/.', 'localhost:/', 'root@127.0.0.1:/./']) {
      expect(errorsOf(`${top}  capture: {from: "${from}"}\n`)).toEqual([
        `source.capture.allowBuilderRoot: expected true to capture the builder host itself (source.capture.from ${JSON.stringify(from)} is its root filesystem)`,
      ]);
    }
    expect(parseRecipe(`${top}  capture: {from: /, allowBuilderRoot: true}\n`, FIXTURES).source).toEqual({
      kind: 'capture',
      path: '/',
      excludes: [],
      allowBuilderRoot: true,
    });
    expect(errorsOf(`${top}  capture: {from: /, allowBuilderRoot: "yes"}\n`)).toEqual([
      'source.capture.allowBuilderRoot: expected true or false, got "yes"',
      expect.stringMatching(/^source\.capture\.allowBuilderRoot: expected true to capture/),
    ]);
    // Another host's root is what a capture is for; a path below the builder's root is not the builder.
    expect(parseRecipe(`${top}  capture: {from: "node001:/"}\n`, FIXTURES).source).toMatchObject({
      host: 'node001',
      path: '/',
    });
    expect(parseRecipe(`${top}  capture: {from: /srv/golden}\n`, FIXTURES).source).toMatchObject({
      path: '/srv/golden',
    });
  });

  it('rejects bad prepare and output settings', () => {
    expect(errorsOf(`${base}prepare: {network: drop}\n`)).toEqual([
      expect.stringMatching(/^prepare\.network: expected one of keep, remove/),
    ]);
    expect(errorsOf(`${base}prepare: {private: [{dir: relative}]}\n`)).toEqual([
      expect.stringMatching(/^prepare\.private\[0\]\.dir: expected an absolute directory/),
    ]);
    expect(errorsOf(`${base}outputs: [qcow2, vmdk]\n`)).toEqual([
      expect.stringMatching(/^outputs\[1\]: expected one of qcow2, raw, squashfs, got "vmdk"$/),
    ]);
    expect(errorsOf(`${base}allowPasswordHashes: yes please\n`)).toEqual([
      'allowPasswordHashes: expected true or false, got "yes please"',
    ]);
    expect(
      parseRecipe(`${base}allowPasswordHashes: true\n`, FIXTURES, { defaultMirror: MIRROR }).prepare
        .allowPasswordHashes,
    ).toBe(true);
  });

  it('reports every error at once, one per line', () => {
    const lines = errorsOf(
      'image: a/b\narch: sparc\nos: debian-12\nsource:\n  debootstrap: {suite: bookworm}\ncolour: blue\n',
    );
    expect(lines.map((l) => l.split(':')[0])).toEqual(['colour', 'image', 'arch']);
  });

  it('rejects malformed YAML with one line', () => {
    expect(errorsOf('image: [unclosed\n')).toEqual([expect.stringMatching(/^recipe: expected valid YAML/)]);
  });
});

describe('recipe digests', () => {
  it('do not depend on key order', () => {
    const reordered = `os: debian-12\nsource:\n  debootstrap:\n    suite: bookworm\narch: x86_64\nimage: node\n`;
    expect(recipeDigest(parseRecipe(reordered, FIXTURES, { defaultMirror: MIRROR }))).toBe(
      recipeDigest(parseRecipe(base, FIXTURES, { defaultMirror: MIRROR })),
    );
  });

  it('key the bootstrap by what decides it, not by later phases', () => {
    const recipe = (extra: string) => parseRecipe(base + extra, FIXTURES, { defaultMirror: MIRROR });
    const key = (extra: string) => bootstrapKey('x86_64', recipe(extra).source as DebootstrapSource);
    expect(key('prepare: {network: remove}\npackages: [vim]\n')).toBe(key(''));
    expect(recipeDigest(recipe('prepare: {network: remove}\n'))).not.toBe(recipeDigest(recipe('')));
    expect(key('    packages: [less]\n')).not.toBe(key(''));
    expect(key('    mirror: http://other.example/debian\n')).not.toBe(key(''));
    expect(key('    variant: buildd\n')).not.toBe(key(''));
    expect(bootstrapKey('aarch64', recipe('').source as DebootstrapSource)).not.toBe(key(''));
  });
});
