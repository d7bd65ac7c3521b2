import { describe, expect, it } from 'vitest';
import {
  checkPageExists,
  DEFAULT_PAGE_LIMIT,
  MAX_PAGE_LIMIT,
  pageFooter,
  pageOf,
  pageOptions,
  pageWindow,
} from '../../common/pages.js';

const items = Array.from({ length: 120 }, (_, i) => i + 1);

describe('pages of a list', () => {
  it('counts pages from the newest, each oldest first; the last page holds what is left', () => {
    expect(pageOf(items, {}).items).toEqual(items.slice(70));
    expect(pageOf(items, {}).info).toEqual({ page: 1, pages: 3, limit: DEFAULT_PAGE_LIMIT, total: 120 });
    expect(pageOf(items, { page: 2 }).items).toEqual(items.slice(20, 70));
    expect(pageOf(items, { page: 3 }).items).toEqual(items.slice(0, 20));
    expect(pageOf(items, { page: 4 }).items).toEqual([]);
    expect(pageOf(items, { limit: 7, page: 1 }).items).toEqual([114, 115, 116, 117, 118, 119, 120]);
    expect(pageOf([], {}).info).toEqual({ page: 1, pages: 1, limit: DEFAULT_PAGE_LIMIT, total: 0 });
  });

  it('counts against the length the list had, so reading page after page of a growing list repeats nothing', () => {
    const first = pageOf(items.slice(0, 100), { limit: 30 });
    const later = [...items.slice(0, 100), 101, 102, 103];
    const older = [4, 3, 2].map((page) => pageOf(later, { limit: 30, page, asOf: first.info.total }).items);
    expect([...older.flat(), ...first.items]).toEqual(items.slice(0, 100));
    expect(pageWindow(10, { asOf: 50 })).toMatchObject({ total: 10, start: 0, end: 10 });
  });

  it('refuses a request out of bounds, naming the field and the bound', () => {
    expect(() => pageWindow(10, { limit: 0 })).toThrow(`limit: expected a whole number from 1 to ${MAX_PAGE_LIMIT}`);
    expect(() => pageWindow(10, { limit: MAX_PAGE_LIMIT + 1 })).toThrow(/^limit: /);
    expect(() => pageWindow(10, { page: 1.5 })).toThrow(/^page: expected a whole number from 1 to/);
    expect(() => pageWindow(10, { limit: '5' as unknown as number, page: -1 })).toThrow(/^page: /);
    expect(() => pageOptions({ limit: 'all' })).toThrow(
      `--limit: expected a whole number from 1 to ${MAX_PAGE_LIMIT}, got "all"`,
    );
    expect(() => pageOptions({ page: '0' })).toThrow(/^--page: expected a whole number from 1 to 1000000, got "0"$/);
    expect(pageOptions({ limit: '20', page: '3' })).toEqual({ limit: 20, page: 3 });
    expect(pageOptions({})).toEqual({});
    expect(() => checkPageExists({ page: 4, pages: 3, limit: 50, total: 120 }, 'versions')).toThrow(
      '--page: expected a page from 1 to 3 (120 versions at 50 a page), got "4"',
    );
    expect(() => checkPageExists({ page: 1, pages: 1, limit: 50, total: 0 }, 'versions')).not.toThrow();
  });

  it('says where a page is only when the list takes more than one', () => {
    expect(pageFooter({ page: 1, pages: 1, limit: 50, total: 12 }, 'versions')).toBeUndefined();
    expect(pageFooter({ page: 1, pages: 3, limit: 50, total: 120 }, 'versions')).toBe(
      'page 1 of 3: versions 71-120 of 120, oldest first; --page 2 for older',
    );
    expect(pageFooter({ page: 3, pages: 3, limit: 50, total: 120 }, 'versions')).toBe(
      'page 3 of 3: versions 1-20 of 120, oldest first',
    );
  });
});
