/**
 * A rate limit for streams: a token bucket that refills at `bytesPerSecond` and holds at most one
 * second's worth, so a transfer never runs faster than its limit for longer than that burst. The
 * clock is injected, so the schedule can be checked without waiting on a real one.
 */
import { Transform } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';

export interface Clock {
  /** Milliseconds, monotonic. */
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const realClock: Clock = { now: () => performance.now(), sleep: (ms) => sleep(ms) };

export class TokenBucket {
  private tokens: number;
  private last: number;
  readonly capacity: number;

  constructor(
    readonly bytesPerSecond: number,
    private readonly clock: Clock,
  ) {
    if (!Number.isSafeInteger(bytesPerSecond) || bytesPerSecond < 1)
      throw new RangeError(`bytesPerSecond must be a whole number from 1, not ${bytesPerSecond}`);
    this.capacity = bytesPerSecond;
    this.tokens = this.capacity;
    this.last = clock.now();
  }

  /**
   * Takes `bytes` from the bucket; returns how many milliseconds to wait before sending them. The
   * bucket may go into debt: the wait is the time its refill takes to pay the debt back.
   */
  take(bytes: number): number {
    const now = this.clock.now();
    this.tokens = Math.min(this.capacity, this.tokens + ((now - this.last) * this.bytesPerSecond) / 1000);
    this.last = now;
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.bytesPerSecond);
  }
}

/**
 * A pass-through stream limited to `bytesPerSecond`. Chunks are cut into slices of about a tenth
 * of a second's worth (1 KiB to 64 KiB), so a slow limit is smooth rather than one burst a minute.
 */
export function throttle(bytesPerSecond: number, clock: Clock = realClock): Transform {
  const bucket = new TokenBucket(bytesPerSecond, clock);
  const slice = Math.min(64 * 1024, Math.max(1024, Math.floor(bytesPerSecond / 10)));
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      const send = async () => {
        for (let at = 0; at < chunk.length && !this.destroyed; at += slice) {
          const part = chunk.subarray(at, at + slice);
          const wait = bucket.take(part.length);
          if (wait > 0) await clock.sleep(wait);
          this.push(part);
        }
      };
      send().then(() => done(), done);
    },
  });
}
