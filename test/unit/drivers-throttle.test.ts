/** The token bucket behind a volume's speeds, on a virtual clock: its schedule, not the wall clock. */
import crypto from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { throttle, TokenBucket, type Clock } from '../../activities/drivers/throttle.js';

/** Each chunk as the stream emits it, with the virtual time it left at. */
function drain(stream: Readable, clock: Clock): Promise<{ chunk: Buffer; at: number }[]> {
  const seen: { chunk: Buffer; at: number }[] = [];
  return new Promise((resolve, reject) => {
    stream.on('data', (chunk: Buffer) => seen.push({ chunk, at: clock.now() }));
    stream.on('end', () => resolve(seen));
    stream.on('error', reject);
  });
}

/** A clock whose sleeps move time on at once. */
function virtualClock(): Clock & { t: number } {
  const clock = {
    t: 0,
    now: () => clock.t,
    sleep: async (ms: number) => {
      clock.t += ms;
    },
  };
  return clock;
}

describe('token bucket', () => {
  it("lets one second's worth through at once, then makes each byte wait its turn", () => {
    const clock = virtualClock();
    const bucket = new TokenBucket(1000, clock);
    expect(bucket.take(1000)).toBe(0);
    expect(bucket.take(500)).toBe(500);
    clock.t = 500;
    expect(bucket.take(250)).toBe(250);
    clock.t = 750;
    expect(bucket.take(0)).toBe(0);
  });

  it('stores no more than one second of idle time', () => {
    const clock = virtualClock();
    const bucket = new TokenBucket(1000, clock);
    clock.t = 60_000;
    expect(bucket.take(1000)).toBe(0);
    expect(bucket.take(100)).toBe(100);
  });

  it('refuses a rate that is not a whole number from 1', () => {
    expect(() => new TokenBucket(0, virtualClock())).toThrow(/bytesPerSecond/);
    expect(() => new TokenBucket(1.5, virtualClock())).toThrow(/bytesPerSecond/);
  });
});

describe('throttled stream', () => {
  it('delivers the same bytes, never ahead of the limit, in the time the limit implies', async () => {
    const clock = virtualClock();
    const input = crypto.randomBytes(10_000);
    const seen = await drain(
      Readable.from([input.subarray(0, 3000), input.subarray(3000)]).pipe(throttle(1000, clock)),
      clock,
    );
    let sent = 0;
    let ahead = 0;
    for (const { chunk, at } of seen) {
      sent += chunk.length;
      // One second of burst, then 1000 bytes per virtual second at most.
      ahead = Math.max(ahead, sent - (1000 + at));
    }
    expect(Buffer.concat(seen.map((s) => s.chunk)).equals(input)).toBe(true);
    expect(ahead).toBeLessThanOrEqual(1);
    // 9000 bytes beyond the burst at 1000 bytes/s: nine virtual seconds, give or take rounding.
    expect(clock.t).toBeGreaterThanOrEqual(9000);
    expect(clock.t).toBeLessThan(9100);
  });

  it('cuts large chunks so a slow limit flows smoothly', async () => {
    const clock = virtualClock();
    const sizes = (await drain(Readable.from([Buffer.alloc(64 * 1024)]).pipe(throttle(2048, clock)), clock)).map(
      (s) => s.chunk.length,
    );
    expect(sizes.length).toBe(64);
    expect(Math.max(...sizes)).toBe(1024);
  });
});
