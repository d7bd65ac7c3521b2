/**
 * Bad input at the command line: one line on stderr naming what was wrong, a non-zero exit, and
 * nothing started.
 */
import { describe, expect, it } from 'vitest';
import { imgflow } from '../support/cli.js';
import { tempDir } from '../support/dirs.js';

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
    expectOneLineError(imgflow([...base, 'worker', '--role', 'janitor']), /role: expected one of orchestrator, builder, nas, compute, cloud, control, got "janitor"/);
  });

  it.each(['nas/1', '..', 'my host', 'a;rm -rf /', '$(id)', 'a`b`', 'UPPER_case'])('refuses the host name %j', (host) => {
    expectOneLineError(imgflow([...base, 'worker', '--role', 'nas', '--host', host]), /host: expected a host name/);
  });

  it('refuses an unknown arch', () => {
    expectOneLineError(imgflow([...base, 'worker', '--role', 'builder', '--arch', 'pdp11']), /arch: expected one of x86_64/);
  });

  it('refuses a malformed server address', () => {
    expectOneLineError(imgflow(['--home', home, '--address', 'not an address', 'worker', '--role', 'nas']), /address: expected host:port/);
  });

  it('fails in one line when the server is unreachable, and starts nothing', () => {
    const result = imgflow([...base, 'worker', '--role', 'nas', '--host', 'nas1']);
    expectOneLineError(result, /cannot reach Temporal at 127\.0\.0\.1:1/, 1);
  });

  it('refuses an unknown command', () => {
    expectOneLineError(imgflow([...base, 'frobnicate']), /unknown command 'frobnicate'/);
  });

  it('refuses a bad demo size', () => {
    expectOneLineError(imgflow([...base, 'demo', '--size-mib', '0']), /--size-mib: expected a whole number from 1 to 65536/);
  });
});
