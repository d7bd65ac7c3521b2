/** Events as pure code: their types and shape, the rules' filters, what the events workflow keeps and delivers. */
import { describe, expect, it } from 'vitest';
import {
  checkEventsRequest,
  checkRuleInput,
  checkWebhook,
  eventOf,
  parseTarget,
  RECENT_KEEP,
  ruleWants,
  targetKey,
  type EventEnvelope,
} from '../../common/events.js';
import { Events, newEventsState } from '../../workflows/events/events.js';

const entry = (seq: number, op: string, detail = 'd') => ({
  seq,
  at: `2026-12-03T10:00:${String(seq % 60).padStart(2, '0')}Z`,
  by: 'alice',
  op,
  detail,
});
const lineage = { entity: 'lineage', image: 'web' } as const;

describe('events', () => {
  it('names each entry by its noun and operation; a lineage names its builds', () => {
    expect(eventOf('lineage-web', lineage, entry(3, 'promote')).event).toEqual({
      schema: 'imgflow.event/1',
      id: 'lineage-web#3',
      type: 'image.promote',
      at: '2026-12-03T10:00:03Z',
      by: 'alice',
      image: 'web',
      detail: 'd',
    });
    expect(eventOf('lineage-web', lineage, entry(4, 'build-failed')).event.type).toBe('build.failed');
    const notify = [{ email: 'ops@example.org' }];
    const built = eventOf('lineage-web', lineage, entry(5, 'register'), { build: 'build-web-4', notify });
    expect(built).toMatchObject({ event: { type: 'build.finished', build: 'build-web-4' }, notify });
    expect(eventOf('lineage-web', lineage, entry(6, 'register')).event.type).toBe('image.register');
    const volume = eventOf('volume-vm1', { entity: 'volume', volume: 'vm1', image: 'web' }, entry(1, 'sync-failed'));
    expect(volume.event).toMatchObject({ type: 'volume.sync-failed', volume: 'vm1', image: 'web' });
    expect(eventOf('lineage-web', lineage, entry(7, 'tag', 'x'.repeat(5000))).event.detail.length).toBe(1000);
  });

  it('takes webhooks without credentials, e-mail addresses and event patterns only', () => {
    expect(parseTarget('--notify', 'https://hooks.example.org/imgflow?x=1')).toEqual({
      webhook: 'https://hooks.example.org/imgflow?x=1',
    });
    expect(parseTarget('--notify', 'ops@example.org')).toEqual({ email: 'ops@example.org' });
    expect(() => checkWebhook('url', 'https://u:p@example.org/')).toThrow(/url: expected an http\(s\) URL/);
    expect(() => checkWebhook('url', 'http://example.org/a b')).toThrow(/url/);
    expect(() => checkWebhook('url', `http://example.org/${'a'.repeat(2100)}`)).toThrow(/at most 2048/);
    const rule = { by: 'alice', target: { webhook: 'http://a.example/' }, deliverFor: 60 };
    expect(() => checkRuleInput({ ...rule, events: ['image.promote', 'build.*', '*'] })).not.toThrow();
    expect(() => checkRuleInput({ ...rule, events: ['host.reboot'] })).toThrow(/events: expected event types/);
    expect(() => checkRuleInput({ ...rule, target: { webhook: 'http://a.example/', secretFile: '../s' } })).toThrow(
      /target.secretFile/,
    );
    expect(() => checkRuleInput({ ...rule, deliverFor: 5 })).toThrow(/deliverFor/);
    expect(() => checkEventsRequest({ since: 'yesterday' }, '--')).toThrow(/^--since: expected an ISO 8601 time/);
    expect(targetKey({ email: 'ops@example.org' })).toMatch(/^request-[0-9a-f]{8}$/);
  });

  it('matches rules by type pattern and image', () => {
    const event = eventOf('lineage-web', lineage, entry(1, 'promote')).event;
    expect(ruleWants({}, event)).toBe(true);
    expect(ruleWants({ events: ['image.*'] }, event)).toBe(true);
    expect(ruleWants({ events: ['image.promote'], image: 'web' }, event)).toBe(true);
    expect(ruleWants({ events: ['image.pro'] }, event)).toBe(false);
    expect(ruleWants({ events: ['build.*'] }, event)).toBe(false);
    expect(ruleWants({ image: 'db' }, event)).toBe(false);
  });

  it('keeps each event once, drops malformed ones, and delivers to the rules that want it and to its own targets', () => {
    const events = new Events(newEventsState());
    events.addRule(
      { by: 'alice', target: { webhook: 'http://a.example/' }, events: ['image.*'], deliverFor: 60 },
      'now',
    );
    events.addRule({ by: 'alice', target: { email: 'ops@example.org' }, image: 'db', deliverFor: 60 }, 'now');
    const own = { webhook: 'http://b.example/' };
    const batch: EventEnvelope[] = [
      eventOf('lineage-web', lineage, entry(1, 'tag')),
      { ...eventOf('lineage-web', lineage, entry(2, 'build-started')), notify: [own] },
      { event: { id: 'bad' } } as unknown as EventEnvelope,
    ];
    const first = events.accept(batch);
    expect(first.dropped).toBe(1);
    expect(first.deliveries.map((d) => `${d.rule} ${d.event.type}`)).toEqual([
      'rule-1 image.tag',
      `${targetKey(own)} build.started`,
    ]);
    // The same events again (a signal sent twice) deliver nothing more.
    expect(events.accept(batch)).toEqual({ deliveries: [], dropped: 3 });
    events.delivered({ rule: 'rule-1', eventId: 'lineage-web#1', ok: false, at: 'now', error: 'answered 503' });
    expect(events.rules()[0]).toMatchObject({
      name: 'rule-1',
      delivered: 0,
      failed: 1,
      last: { error: 'answered 503' },
    });
    expect(() => events.validateRule({ by: 'alice', name: 'rule-1', target: own, deliverFor: 60 })).toThrow(/name/);
    expect(() => events.validateRemove({ by: 'alice', name: 'rule-9' })).toThrow(/rule-1, rule-2/);
  });

  it('keeps the newest events within its bound and lists them by image, time and type', () => {
    const events = new Events(newEventsState());
    const all = Array.from({ length: RECENT_KEEP + 5 }, (_, i) =>
      eventOf('lineage-web', lineage, entry(i + 1, i % 2 ? 'tag' : 'promote')),
    );
    events.accept(all);
    expect(events.state.recent).toHaveLength(RECENT_KEEP);
    expect(events.state.recent[0]!.id).toBe('lineage-web#6');
    expect(events.list({ types: ['image.tag'], limit: 2 }).map((e) => e.id)).toEqual([
      'lineage-web#1002',
      'lineage-web#1004',
    ]);
    expect(events.list({ image: 'db' })).toEqual([]);
    expect(events.list({ since: '2026-12-03T10:00:58Z' }).every((e) => e.at >= '2026-12-03T10:00:58Z')).toBe(true);
    // An event dropped from the window may come again: it is kept as new (its delivery's id stays the same).
    expect(events.accept([all[0]!]).deliveries).toEqual([]);
    expect(events.state.recent.at(-1)!.id).toBe('lineage-web#1');
  });
});
