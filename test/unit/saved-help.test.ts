/**
 * The installed command prints the help the build saved only while that help is newer than the
 * CLI it describes; anything else loads the CLI. Checked on a copy of bin/imgflow.js over a dist
 * of two stand-in files, then on the real build: the saved help is the CLI's own.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../support/dirs.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

function run(bin: string, ...args: string[]): string {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
  expect(r.status).toBe(0);
  return r.stdout;
}

describe('imgflow --help', () => {
  it('prints the saved help while it is newer than the CLI, and loads the CLI otherwise', () => {
    const dir = tempDir('imgflow-saved-help-');
    fs.mkdirSync(path.join(dir, 'bin'));
    fs.mkdirSync(path.join(dir, 'dist', 'starters'), { recursive: true });
    const bin = path.join(dir, 'bin', 'imgflow.js');
    fs.copyFileSync(path.join(root, 'bin', 'imgflow.js'), bin);
    fs.writeFileSync(path.join(dir, 'dist', 'starters', 'imgflow.js'), 'console.log("loaded", process.argv.slice(2));');
    const cli = path.join(dir, 'dist', 'starters', 'cli.js');
    fs.writeFileSync(cli, '');
    const saved = path.join(dir, 'dist', 'help.txt');
    expect(run(bin, '--help')).toBe("loaded [ '--help' ]\n");

    fs.writeFileSync(saved, 'saved help\n');
    fs.utimesSync(cli, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
    expect([run(bin, '--help'), run(bin, '-h'), run(bin, 'help')]).toEqual(Array(3).fill('saved help\n'));
    expect(run(bin, 'help', 'map')).toBe("loaded [ 'help', 'map' ]\n");
    expect(run(bin, 'maps', '--help')).toBe("loaded [ 'maps', '--help' ]\n");

    // Compiled again after the help was saved: the saved help may be stale, so it is not used.
    fs.utimesSync(cli, new Date(), new Date(Date.now() + 60_000));
    expect(run(bin, '--help')).toBe("loaded [ '--help' ]\n");
  });

  it('saved by the build, is what the CLI itself prints', () => {
    const installed = path.join(root, 'bin', 'imgflow.js');
    const full = run(path.join(root, 'dist', 'starters', 'imgflow.js'), '--help');
    expect(full).toMatch(/^Usage: imgflow /);
    expect(fs.readFileSync(path.join(root, 'dist', 'help.txt'), 'utf8')).toBe(full);
    expect(run(installed, '--help')).toBe(full);
  });
});
