/** The pipe that carries binary streams between two commands, with no shell in between. */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createPipe } from '../../activities/drivers/pipe.js';
import { CommandError } from '../../activities/runner.js';
import { tempDir } from '../support/dirs.js';
import { memoryLogger } from '../support/logger.js';

const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

describe('pipe', () => {
  const dir = tempDir();

  it('carries a large binary stream byte for byte and logs both argv', async () => {
    const source = path.join(dir, 'source.bin');
    const target = path.join(dir, 'target.bin');
    // Larger than the pipe's buffer limit: the stream must flow through, not be collected.
    fs.writeFileSync(source, crypto.randomBytes(24 * 1024 * 1024 + 17));
    const { logger, lines } = memoryLogger();
    await createPipe(logger)(['cat', '--', source], ['dd', `of=${target}`, 'status=none']);
    expect(sha256(target)).toBe(sha256(source));
    expect(lines).toContainEqual(
      expect.objectContaining({
        msg: 'pipeline',
        argv: ['cat', '--', source],
        into: ['dd', `of=${target}`, 'status=none'],
        exitCodes: [0, 0],
      }),
    );
  });

  it('carries the same bytes through a rate limit, and logs the limit and the bytes', async () => {
    const source = path.join(dir, 'limited.bin');
    const target = path.join(dir, 'limited-out.bin');
    fs.writeFileSync(source, crypto.randomBytes(3 * 1024 * 1024 + 5));
    const { logger, lines } = memoryLogger();
    await createPipe(logger)(['cat', '--', source], ['dd', `of=${target}`, 'status=none'], {
      bytesPerSecond: 2 * 1024 * 1024,
    });
    expect(sha256(target)).toBe(sha256(source));
    expect(lines).toContainEqual(
      expect.objectContaining({
        msg: 'pipeline',
        bytes: 3 * 1024 * 1024 + 5,
        bytesPerSecond: 2 * 1024 * 1024,
        exitCodes: [0, 0],
      }),
    );
  });

  it('a rate-limited producer cut off by a consumer that gave up ends with the consumer named', async () => {
    const cut = await createPipe(memoryLogger().logger)(
      ['yes'],
      ['sh', '-c', 'head -c 10 >/dev/null; echo "stream refused" >&2; exit 5'],
      { bytesPerSecond: 4096 },
    ).catch((e: unknown) => e);
    expect((cut as CommandError).exitCode).toBe(5);
    expect((cut as CommandError).message).toMatch(/stream refused/);
  });

  it('fails with the failing side named and its stderr', async () => {
    const pipe = createPipe(memoryLogger().logger);
    const error = await pipe(
      ['cat', path.join(dir, 'missing')],
      ['dd', `of=${path.join(dir, 'x')}`, 'status=none'],
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CommandError);
    expect((error as CommandError).argv[0]).toBe('cat');
    expect((error as CommandError).message).toMatch(/No such file/);
    const refused = await pipe(
      ['printf', 'abc'],
      ['sh', '-c', 'cat >/dev/null; echo "cannot receive" >&2; exit 4'],
    ).catch((e: unknown) => e);
    expect((refused as CommandError).exitCode).toBe(4);
    expect((refused as CommandError).message).toMatch(/cannot receive/);
    // A producer cut off by a consumer that gave up: the consumer's reason is the one reported.
    const cut = await pipe(['yes'], ['sh', '-c', 'head -c 10 >/dev/null; echo "stream refused" >&2; exit 5']).catch(
      (e: unknown) => e,
    );
    expect((cut as CommandError).exitCode).toBe(5);
    expect((cut as CommandError).message).toMatch(/stream refused/);
  });

  it('ends both commands when the time is up', async () => {
    const started = Date.now();
    const error = await createPipe(memoryLogger().logger)(['sleep', '30'], ['cat'], { timeoutMs: 300 }).catch(
      (e: unknown) => e,
    );
    expect((error as Error).message).toMatch(/timed out/);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('names a program that does not exist, on either side', async () => {
    const pipe = createPipe(memoryLogger().logger);
    await expect(pipe(['no-such-program-imgflow'], ['cat'])).rejects.toThrow(/no-such-program-imgflow/);
    await expect(pipe(['printf', 'abc'], ['no-such-program-imgflow'])).rejects.toThrow(/no-such-program-imgflow/);
  });

  it('refuses an empty argv', async () => {
    await expect(createPipe(memoryLogger().logger)([], ['cat'])).rejects.toThrow(/argv/);
  });
});
