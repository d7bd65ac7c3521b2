/**
 * Pages of a long list (a lineage's versions, tags, history): what a person reads at a time, so an
 * answer stays the same size however long the list grows. Page 1 is the newest `limit` items, page 2
 * the `limit` before them, and so on; each page lists its items oldest first, as tables print them.
 * The same arithmetic serves the CLI, the client and the workflows' queries.
 */
import { checkInt, InputError } from './names.js';

export const DEFAULT_PAGE_LIMIT = 50;
export const MAX_PAGE_LIMIT = 500;
export const MAX_PAGE = 1_000_000;

export interface PageRequest {
  /** Items a page (default 50, at most 500). */
  limit?: number;
  /** 1 is the newest page (the default). */
  page?: number;
  /**
   * Pages counted as the list stood when it held this many items (the lists paged only grow), so
   * that reading one page after another neither repeats nor misses an item added meanwhile.
   */
  asOf?: number;
}

export interface PageInfo {
  page: number;
  /** How many pages the list fills at this limit (1 for an empty list). */
  pages: number;
  limit: number;
  /** Items in the whole list. */
  total: number;
}

/** A page's place in the list: items `start` (inclusive) to `end` (exclusive), counted from the oldest. */
export interface PageWindow extends PageInfo {
  start: number;
  end: number;
}

/** A request as a query receives it: anything a client sent, checked; absent values take their defaults. */
export function checkPageRequest(
  request: PageRequest | undefined,
): Required<Omit<PageRequest, 'asOf'>> & Pick<PageRequest, 'asOf'> {
  const { limit = DEFAULT_PAGE_LIMIT, page = 1, asOf } = request ?? {};
  return {
    limit: checkInt('limit', limit, 1, MAX_PAGE_LIMIT),
    page: checkInt('page', page, 1, MAX_PAGE),
    ...(asOf !== undefined ? { asOf: checkInt('asOf', asOf, 0, Number.MAX_SAFE_INTEGER) } : {}),
  };
}

/** Where page `page` of `length` items lies; past the last page the window is empty. */
export function pageWindow(length: number, request: PageRequest | undefined): PageWindow {
  const { limit, page, asOf } = checkPageRequest(request);
  const total = asOf === undefined ? length : Math.min(asOf, length);
  const end = Math.max(0, total - (page - 1) * limit);
  return { page, pages: Math.max(1, Math.ceil(total / limit)), limit, total, start: Math.max(0, end - limit), end };
}

/** The page's items of a list held oldest first. */
export function pageOf<T>(items: readonly T[], request: PageRequest | undefined): { items: T[]; info: PageInfo } {
  const { start, end, ...info } = pageWindow(items.length, request);
  return { items: items.slice(start, end), info };
}

/**
 * `--limit` and `--page` as the CLI takes them (strings), checked before anything connects; a bad one
 * is refused in one line naming the option and its bound.
 */
export function pageOptions(options: { limit?: string; page?: string }): PageRequest {
  return {
    ...(options.limit !== undefined ? { limit: checkInt('--limit', options.limit, 1, MAX_PAGE_LIMIT) } : {}),
    ...(options.page !== undefined ? { page: checkInt('--page', options.page, 1, MAX_PAGE) } : {}),
  };
}

/** A page past the last is bad input, said with the bound the list has now (an empty list has one empty page). */
export function checkPageExists(info: PageInfo, what: string): void {
  if (info.page > info.pages)
    throw new InputError(
      '--page',
      `a page from 1 to ${info.pages} (${info.total} ${what} at ${info.limit} a page)`,
      String(info.page),
    );
}

/** One line under a table saying where the page is, when the list does not fit on one. */
export function pageFooter(info: PageInfo, what: string): string | undefined {
  if (info.pages <= 1) return undefined;
  const { start, end } = pageWindow(info.total, info);
  return `page ${info.page} of ${info.pages}: ${what} ${start + 1}-${end} of ${info.total}, oldest first${info.page < info.pages ? `; --page ${info.page + 1} for older` : ''}`;
}
