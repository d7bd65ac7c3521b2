import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createStreamHash } from '../../lib/hashing.js';

describe('stream hashes', () => {
  const data = randomBytes(9 * 1024 * 1024 + 3);
  const expected = createHash('sha512').update(data).digest('hex');

  /** Feeds `data` in batches of the given sizes, in turn; returns the digest. */
  async function digestInBatches(data: Buffer, sizes: number[]): Promise<string> {
    const hash = createStreamHash('sha512');
    for (let at = 0, i = 0; at < data.length; i++) {
      const batch = hash.batch();
      const length = data.copy(batch, 0, at, at + sizes[i % sizes.length]!);
      await hash.update(batch, length);
      at += length;
    }
    return hash.digest();
  }

  it('digests a long stream on its thread what plain sha512 does, in batches full or not', async () => {
    expect(await digestInBatches(data, [1, 4 * 1024 * 1024, 100, 3 * 1024 * 1024])).toBe(expected);
  });

  it('digests a stream of one batch, or of none, inline', async () => {
    const small = data.subarray(0, 1000);
    expect(await digestInBatches(small, [small.length])).toBe(createHash('sha512').update(small).digest('hex'));
    expect(await createStreamHash('sha512').digest()).toBe(createHash('sha512').digest('hex'));
  });

  it("refuses a buffer that is not one of its batches, so Node's shared pool is never moved", async () => {
    const hash = createStreamHash('sha512');
    const pooled = Buffer.from('a slice of the pool');
    await expect(hash.update(pooled, pooled.length)).rejects.toThrow(/batches from StreamHash.batch/);
    expect(pooled.toString()).toBe('a slice of the pool');
    expect(Buffer.from('still pooled').toString()).toBe('still pooled');
    hash.close();
  });

  it('can be closed before it is done, and again', async () => {
    const hash = createStreamHash('sha512');
    await hash.update(hash.batch(), 16);
    await hash.update(hash.batch(), 16);
    hash.close();
    expect(() => hash.close()).not.toThrow();
  });
});
