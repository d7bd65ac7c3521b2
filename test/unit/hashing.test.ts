import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createStreamHash } from '../../lib/hashing.js';

describe('stream hashes', () => {
  const data = randomBytes(9 * 1024 * 1024 + 3);
  const expected = createHash('sha512').update(data).digest('hex');

  it.each([
    ['on a thread (size unknown)', undefined],
    ['on a thread (large)', 1 << 30],
    ['inline (small)', 1024],
  ])('digests %s what plain sha512 does, in batches full or not', async (_how, expectedBytes) => {
    const hash = createStreamHash('sha512', expectedBytes);
    const sizes = [1, 4 * 1024 * 1024, 100, 3 * 1024 * 1024];
    for (let at = 0, i = 0; at < data.length; i++) {
      const batch = hash.batch();
      const length = data.copy(batch, 0, at, at + sizes[i % sizes.length]!);
      await hash.update(batch, length);
      at += length;
    }
    expect(await hash.digest()).toBe(expected);
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
    hash.close();
    expect(() => hash.close()).not.toThrow();
  });
});
