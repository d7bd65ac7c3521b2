import { describe, expect, it } from 'vitest';
import { checkRoom, checkText, clip, jsonBytes, utf8Bytes } from '../../common/limits.js';
import { defaultTagName, checkTag } from '../../common/lineage.js';
import { InputError } from '../../common/names.js';

describe('limits', () => {
  it('bounds free text by kind and refuses blanks, naming the field and the bound in one short line', () => {
    expect(checkText('--reason', 'kernel panic', 'reason')).toBe('kernel panic');
    expect(checkText('--message', 'm'.repeat(1000), 'message')).toHaveLength(1000);
    expect(() => checkText('--message', 'm'.repeat(1001), 'message')).toThrow(
      /^--message: expected a message of 1-1000 characters, got "m{59}\.\.\. \(1001 characters\)$/,
    );
    expect(() => checkText('--reason', '  ', 'reason')).toThrow(
      /^--reason: expected a reason of 1-500 characters, got "  "$/,
    );
    expect(() => checkText('--note', 42, 'note')).toThrow(/^--note: expected a note of 1-500 characters, got 42$/);
    const error = new InputError('detail', 'short', 'y\n'.repeat(100_000));
    expect(error.message).not.toContain('\n');
    expect(error.message.length).toBeLessThan(160);
  });

  it('clips derived text, saying how much was cut', () => {
    expect(clip('short')).toBe('short');
    const clipped = clip('e'.repeat(10_000), 100);
    expect(clipped).toHaveLength(100);
    expect(clipped).toMatch(/^e+ \[\.\.\. 9\d{3} more characters\]$/);
  });

  it('measures UTF-8 the way the server does', () => {
    for (const text of ['plain', 'grüße', '€uro', '画像', 'emoji 🚀 and 𝄞'])
      expect(utf8Bytes(text)).toBe(Buffer.byteLength(text, 'utf8'));
    expect(jsonBytes({ a: 'é' })).toBe(Buffer.byteLength(JSON.stringify({ a: 'é' })));
  });

  it('refuses growth only at the refusal bound', () => {
    const budget = { shedAt: 100, refuseAt: 200 };
    expect(() => checkRoom('the lineage of a', 199, budget, 'gc')).not.toThrow();
    expect(() => checkRoom('the lineage of a', 200, budget, 'gc')).toThrow(
      /^state: expected the lineage of a to have room below 200 bytes \(it holds 200/,
    );
  });

  it('makes default tag names valid tags whatever the user name', () => {
    const at = new Date(Date.UTC(2026, 11, 2, 15, 4, 5));
    for (const user of ['alice', 'alice@example.org', 'a..b', 'x'.repeat(64)])
      expect(checkTag('tag', defaultTagName(at, user))).toBeTruthy();
    expect(defaultTagName(at, 'alice@example.org')).toBe('2026-12-02-15-04-05-RELEASE-by-alice-at-example.org');
  });
});
