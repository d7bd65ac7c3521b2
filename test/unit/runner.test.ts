import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CommandError, createRunner, progress } from '../../activities/runner.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';
import { alive } from '../support/processes.js';

describe('command runner', () => {
  const dir = tempDir();

  it('runs argv without a shell: metacharacters arrive as literal arguments', async () => {
    const { logger } = memoryLogger();
    const run = createRunner(logger);
    const result = await run(['printf', '%s|', 'a b', '$(id)', '; rm -rf /', '`x`']);
    expect(result.stdout).toBe('a b|$(id)|; rm -rf /|`x`|');
  });

  it('logs every command with argv, duration and exit code', async () => {
    const { logger, lines } = memoryLogger();
    await createRunner(logger)(['true']);
    expect(lines).toContainEqual(
      expect.objectContaining({ msg: 'command', argv: ['true'], exitCode: 0, durationMs: expect.any(Number) }),
    );
  });

  it('fails with the exit code and the tail of stderr', async () => {
    const run = createRunner(memoryLogger().logger);
    const error = await run(['sh', '-c', 'echo first >&2; echo "disk is full" >&2; exit 3']).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CommandError);
    expect((error as CommandError).exitCode).toBe(3);
    expect((error as CommandError).message).toMatch(/exit code 3: first\s+disk is full$/);
  });

  it('accepts the exit codes a caller declares harmless', async () => {
    const result = await createRunner(memoryLogger().logger)(['sh', '-c', 'exit 24'], { okExitCodes: [24] });
    expect(result.exitCode).toBe(24);
  });

  it('names a missing program', async () => {
    const error = await createRunner(memoryLogger().logger)(['no-such-program-imgflow']).catch((e: unknown) => e);
    expect((error as Error).message).toMatch(/no-such-program-imgflow/);
  });

  it('ends the whole process tree on timeout, children included', async () => {
    const pidFile = path.join(dir, 'child.pid');
    const run = createRunner(memoryLogger().logger);
    const error = await run(['sh', '-c', `sleep 30 & echo $! > ${pidFile}; wait`], { timeoutMs: 500 }).catch(
      (e: unknown) => e,
    );
    expect((error as Error).message).toMatch(/timed out after 500 ms/);
    const child = Number(fs.readFileSync(pidFile, 'utf8'));
    await new Promise((r) => setTimeout(r, 200));
    expect(alive(child)).toBe(false);
  });

  it('ends the command when its abort signal fires', async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 200);
    const error = await createRunner(memoryLogger().logger)(['sleep', '30'], { signal: controller.signal }).catch(
      (e: unknown) => e,
    );
    expect((error as Error).message).toMatch(/cancelled/);
  });

  it('reads progress from the tool output', async () => {
    const seen: number[] = [];
    await createRunner(memoryLogger().logger)(['sh', '-c', 'echo "(50.00/100%)"; echo "(100.00/100%)"'], {
      progress: (chunk) => {
        const m = /\((\d+(?:\.\d+)?)\/100%\)/.exec(chunk);
        if (m) seen.push(Number(m[1]));
        return m ? Number(m[1]) : undefined;
      },
    });
    expect(seen.at(-1)).toBe(100);
  });

  it('refuses an empty argv', async () => {
    await expect(createRunner(memoryLogger().logger)([])).rejects.toThrow(/argv must be non-empty/);
  });
});

describe('progress parsers', () => {
  it('reads qemu-img convert -p lines', () => {
    expect(progress.qemuImg('    (42.50/100%)')).toBe(42.5);
    expect(progress.qemuImg('(100.00/100%)')).toBe(100);
    expect(progress.qemuImg('Formatting image')).toBeUndefined();
  });

  it('reads rsync --info=progress2 lines', () => {
    expect(progress.rsync('    123,456,789  42%   10.50MB/s    0:00:11 (xfr#3, to-chk=0/4)')).toBe(42);
    expect(progress.rsync('sending incremental file list')).toBeUndefined();
  });
});
