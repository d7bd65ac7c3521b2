/**
 * Bad input at the command line: one line on stderr naming what was wrong, a non-zero exit, and
 * nothing started.
 */
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { imgflow } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';
import { freePort } from '../support/ports.js';

function expectOneLineError(result: ReturnType<typeof imgflow>, pattern: RegExp, status = 2): void {
  expect(result.status).toBe(status);
  expect(result.stdout).toBe('');
  const lines = result.stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^imgflow: /);
  expect(lines[0]).toMatch(pattern);
}

describe('imgflow worker: bad input', () => {
  const home = tempDir();
  const base = ['--home', home, '--address', '127.0.0.1:1'];

  it('refuses an unknown role', () => {
    expectOneLineError(
      imgflow([...base, 'worker', '--role', 'janitor']),
      /role: expected one of orchestrator, builder, nas, compute, cloud, control, got "janitor"/,
    );
  });

  it.each(['nas/1', '..', 'my host', 'a;rm -rf /', '$(id)', 'a`b`', 'UPPER_case'])(
    'refuses the host name %j',
    (host) => {
      expectOneLineError(imgflow([...base, 'worker', '--role', 'nas', '--host', host]), /host: expected a host name/);
    },
  );

  it('refuses an unknown arch', () => {
    expectOneLineError(
      imgflow([...base, 'worker', '--role', 'builder', '--arch', 'pdp11']),
      /arch: expected one of x86_64/,
    );
  });

  it('refuses a malformed server address', () => {
    expectOneLineError(
      imgflow(['--home', home, '--address', 'not an address', 'worker', '--role', 'nas']),
      /address: expected host:port/,
    );
  });

  it('fails in one line naming its bound when the server is unreachable, and starts nothing', () => {
    const result = imgflow([...base, 'worker', '--role', 'nas', '--host', 'nas1'], { IMGFLOW_CONNECT_TIMEOUT: '1' });
    expectOneLineError(
      result,
      /^imgflow: --address: expected a Temporal server answering within 1s, the --connect-timeout bound \(.*\), got "127\.0\.0\.1:1"/,
    );
  });

  it('refuses an unknown command', () => {
    expectOneLineError(imgflow([...base, 'frobnicate']), /unknown command 'frobnicate'/);
  });

  it('refuses a bad demo size', () => {
    expectOneLineError(
      imgflow([...base, 'demo', '--size-mib', '0']),
      /--size-mib: expected a whole number from 1 to 65536/,
    );
  });
});

describe('imgflow lineage commands: free text is bounded before anything connects', () => {
  const home = tempDir();
  // Nothing listens here: a refusal proves the check ran before any connection.
  const base = ['--home', home, '--address', '127.0.0.1:1'];
  const huge = 'x'.repeat(130_000);

  it.each([
    [
      'promote --reason <130,000 characters>',
      ['promote', 'img', '--tag', 't1', '--to', 'test', '--reason', huge],
      /--reason: expected a reason of 1-500 characters, got "x+\.\.\. \(130000 characters\)$/,
    ],
    [
      'promote --reason ""',
      ['promote', 'img', '--tag', 't1', '--to', 'test', '--reason', ''],
      /--reason: expected a reason of 1-500 characters, got ""$/,
    ],
    [
      'rollback --reason <huge>',
      ['rollback', 'img', '--channel', 'test', '--reason', huge],
      /--reason: expected a reason of 1-500 characters/,
    ],
    [
      'revoke --reason <huge>',
      ['revoke', 'img', '--version', 'v1', '--reason', huge],
      /--reason: expected a reason of 1-500 characters/,
    ],
    [
      'test-result --note <huge>',
      ['test-result', 'img', '--tag', 't1', '--passed', '--note', huge],
      /--note: expected a note of 1-500 characters/,
    ],
    ['tag --name ""', ['tag', 'img', '--name', ''], /--name: expected a tag of 1-128/],
    ['pack --as ""', ['pack', 'img', '--tag', 't1', '--as', ''], /--as: expected a name of 1-64/],
    [
      'build -m <huge>',
      ['build', 'test/fixtures/recipes/minbase.yaml', '-m', huge],
      /--message: expected a message of 1-1000 characters/,
    ],
  ] as [string, string[], RegExp][])('imgflow %s is refused in one line', (_label, args, pattern) => {
    const result = imgflow([...base, ...args]);
    expectOneLineError(result, pattern);
    expect(result.stderr.length).toBeLessThan(300);
  });
});

describe('imgflow dev: loopback addresses the dev server cannot serve', () => {
  // A port nothing listens on: on 7233 a dev server the user started (npm run demo) would answer.
  let port: number;
  beforeAll(async () => void (port = await freePort()));
  it.each(['127.5.5.5:PORT', '[::1]:PORT', 'localhost:PORT', '127.0.0.1:65000'])(
    'refuses %s up front and leaves no server behind',
    (pattern) => {
      const home = tempDir();
      const address = pattern.replace('PORT', String(port));
      expectOneLineError(
        imgflow(['--home', home, '--address', address, 'dev']),
        /address: expected 127\.0\.0\.1:<port up to 64535> for imgflow to start its dev server there/,
      );
      expect(fs.existsSync(path.join(home, 'temporal', 'server.pid'))).toBe(false);
    },
  );
});

describe('the state directory', () => {
  it('is made readable by its owner only, and a wider one is narrowed unless IMGFLOW_HOME_MODE says otherwise', () => {
    const home = path.join(tempDir(), 'state');
    const quick = { IMGFLOW_CONNECT_TIMEOUT: '1' };
    imgflow(['--home', home, '--address', '127.0.0.1:1', 'tags', 'img'], quick);
    expect(fs.statSync(home).mode & 0o777).toBe(0o700);
    fs.chmodSync(home, 0o755);
    imgflow(['--home', home, '--address', '127.0.0.1:1', 'tags', 'img'], quick);
    expect(fs.statSync(home).mode & 0o777).toBe(0o700);
    imgflow(['--home', home, '--address', '127.0.0.1:1', 'tags', 'img'], { ...quick, IMGFLOW_HOME_MODE: '0750' });
    expect(fs.statSync(home).mode & 0o777).toBe(0o750);
    expectOneLineError(
      imgflow(['--home', home, '--address', '127.0.0.1:1', 'tags', 'img'], { IMGFLOW_HOME_MODE: 'rwx' }),
      /IMGFLOW_HOME_MODE: expected an octal mode such as 0700 or 0750, got "rwx"/,
    );
  });
});

describe('settings refused before anything connects or starts', () => {
  const dir = tempDir();
  const home = path.join(dir, 'home');
  // Nothing listens here: a refusal with exit 2 proves the check ran before any connection.
  const base = ['--home', home, '--address', '127.0.0.1:1'];
  const recipe = (image: string) => {
    const file = path.join(dir, `${image.length}.yaml`);
    fs.writeFileSync(
      file,
      `image: ${image}\narch: x86_64\nos: debian-12\nsource:\n  debootstrap:\n    suite: bookworm\n`,
    );
    return file;
  };
  const long = (n: number) => `i${'m'.repeat(n - 1)}`;

  it.each([
    [
      'worker --metrics bogus',
      ['worker', '--role', 'nas', '--metrics', 'bogus'],
      {},
      /^imgflow: --metrics: expected ip:port for the metrics endpoint .*, got "bogus"$/,
    ],
    [
      'worker --metrics localhost:9464',
      ['worker', '--role', 'nas', '--metrics', 'localhost:9464'],
      {},
      /^imgflow: --metrics: expected ip:port/,
    ],
    [
      'worker --metrics 127.0.0.1:99999',
      ['worker', '--role', 'nas', '--metrics', '127.0.0.1:99999'],
      {},
      /^imgflow: --metrics: expected ip:port/,
    ],
    [
      'worker --metrics 300.0.0.1:9464',
      ['worker', '--role', 'nas', '--metrics', '300.0.0.1:9464'],
      {},
      /^imgflow: --metrics: expected ip:port/,
    ],
    [
      'IMGFLOW_METRICS=:9464 worker',
      ['worker', '--role', 'nas'],
      { IMGFLOW_METRICS: ':9464' },
      /^imgflow: IMGFLOW_METRICS: expected ip:port/,
    ],
    ['IMGFLOW_METRICS=bogus dev', ['dev'], { IMGFLOW_METRICS: 'bogus' }, /^imgflow: IMGFLOW_METRICS: expected ip:port/],
    [
      '--connect-timeout 0',
      ['--connect-timeout', '0', 'maps'],
      {},
      /^imgflow: --connect-timeout: expected a whole number from 1 to 3600, got "0"$/,
    ],
    [
      '--connect-timeout soon',
      ['--connect-timeout', 'soon', 'maps'],
      {},
      /^imgflow: --connect-timeout: expected a whole number from 1 to 3600/,
    ],
    [
      'IMGFLOW_CONNECT_TIMEOUT=-1',
      ['maps'],
      { IMGFLOW_CONNECT_TIMEOUT: '-1' },
      /^imgflow: IMGFLOW_CONNECT_TIMEOUT: expected a whole number from 1 to 3600/,
    ],
    [
      '--answer-timeout 99999',
      ['--answer-timeout', '99999', 'maps'],
      {},
      /^imgflow: --answer-timeout: expected a whole number from 1 to 3600/,
    ],
    [
      'IMGFLOW_ANSWER_TIMEOUT=1.5',
      ['maps'],
      { IMGFLOW_ANSWER_TIMEOUT: '1.5' },
      /^imgflow: IMGFLOW_ANSWER_TIMEOUT: expected a whole number from 1 to 3600/,
    ],
    [
      'build of an image of 49 characters',
      ['build', recipe(long(49))],
      {},
      /^imgflow: image: expected an image name of at most 48 characters \(its files are named <image>-v<n>\.<format>, at most 64\)/,
    ],
    [
      'build of an image of 64 characters',
      ['build', recipe(long(64))],
      {},
      /^imgflow: image: expected an image name of at most 48 characters/,
    ],
    [
      'clone into an image of 56 characters',
      ['clone', 'img', long(56)],
      {},
      /^imgflow: new-image: expected an image name of at most 48 characters/,
    ],
  ] as [string, string[], NodeJS.ProcessEnv, RegExp][])(
    'imgflow %s is refused in one line, exit 2, and nothing changes',
    (_label, args, env, pattern) => {
      const before = fs.existsSync(home) ? fs.readdirSync(home, { recursive: true }).sort() : [];
      const result = imgflow([...base, ...args], env);
      expectOneLineError(result, pattern);
      const after = fs.existsSync(home) ? fs.readdirSync(home, { recursive: true }).sort() : [];
      expect(after).toEqual(before);
    },
  );

  it('takes an image name at the bound', () => {
    // Past the name check: the recipe is fine, and only the unreachable server stops it.
    const result = imgflow([...base, 'build', recipe(long(48))], { IMGFLOW_CONNECT_TIMEOUT: '1' });
    expectOneLineError(result, /--address: expected a Temporal server answering .*, got "127\.0\.0\.1:1"/);
  });
});

describe('global settings given empty', () => {
  it.each([
    ['--address', /^imgflow: address: expected a value, not an empty string, got ""$/],
    ['--namespace', /^imgflow: namespace: expected a value, not an empty string, got ""$/],
    ['--home', /^imgflow: home: expected a value, not an empty string, got ""$/],
  ])('refuses an empty %s instead of falling back to the default', (flag, pattern) => {
    expectOneLineError(imgflow(['--address', '127.0.0.1:1', flag, '', 'tags', 'img']), pattern);
  });
});
