/**
 * Digests of large streams, computed beside the I/O. On the event loop, hashing a download takes as
 * long as receiving, writing and hashing one after another; on a thread of its own the hash runs
 * while the next bytes arrive and are written, so a download costs about what the hash alone does.
 * A stream of one batch is hashed inline: a thread costs more to start than it would save.
 *
 * Bytes travel in batches the hash hands out and takes back when done with them: the memory moves
 * to the thread and back without a copy, and the same few batches serve the whole stream.
 */
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

export interface StreamHash {
  /** An empty batch to fill and pass to `update`. */
  batch(): Buffer;
  /**
   * Adds the first `length` bytes of a batch from `batch()` and takes it back: the caller must not
   * touch it afterwards. Resolves when the caller may send the next one.
   */
  update(batch: Buffer, length: number): Promise<void>;
  /** The hex digest of everything added; the hash cannot be used after it. */
  digest(): Promise<string>;
  /** Releases the thread, if any; safe to call at any time, and more than once. */
  close(): void;
}

/** Large enough that a gigabyte takes few hand-offs between threads: each costs a wait for the scheduler on a busy machine. */
const BATCH_BYTES = 8 * 1024 * 1024;
/** Batches queued on the thread before `update` waits: bounds the memory a fast sender can fill. */
const MAX_QUEUED = 4;

// Evaluated as a CommonJS script, so it runs the same under tsc's output, tsx and vitest.
const THREAD_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const hash = require('node:crypto').createHash(workerData);
parentPort.on('message', (message) => {
  if (message === 'digest') return parentPort.postMessage({ digest: hash.digest('hex') });
  hash.update(new Uint8Array(message.buffer, 0, message.length));
  parentPort.postMessage({ done: message.buffer }, [message.buffer]);
});`;

type Batches = ReturnType<typeof batches>;

function batches() {
  const free: Buffer[] = [];
  return {
    take: () => free.pop() ?? Buffer.allocUnsafeSlow(BATCH_BYTES),
    give: (batch: Buffer) => void free.push(batch),
    /** Only a whole batch owns its memory; a slice of Node's shared pool must never be moved. */
    check: (batch: Buffer) => {
      if (batch.byteOffset !== 0 || batch.byteLength !== BATCH_BYTES)
        throw new Error('StreamHash.update takes batches from StreamHash.batch()');
    },
  };
}

/**
 * A hash of `algorithm`. The first batch is held back: a stream that ends with it is hashed inline,
 * and a longer one starts the thread.
 */
export function createStreamHash(algorithm: string): StreamHash {
  const pool = batches();
  let first: [Buffer, number] | undefined;
  let thread: HashThread | undefined;
  return {
    batch: pool.take,
    async update(batch, length) {
      pool.check(batch);
      if (!thread && !first) {
        first = [batch, length];
        return;
      }
      thread ??= startHashThread(algorithm, pool);
      if (first) await thread.send(...first);
      first = undefined;
      await thread.send(batch, length);
    },
    async digest() {
      if (thread) return thread.digest();
      return createHash(algorithm)
        .update(first ? first[0].subarray(0, first[1]) : new Uint8Array())
        .digest('hex');
    },
    close: () => thread?.close(),
  };
}

type HashThread = ReturnType<typeof startHashThread>;

function startHashThread(algorithm: string, pool: Batches) {
  const thread = new Worker(THREAD_SOURCE, { eval: true, workerData: algorithm });
  let queued = 0;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  let digested: ((digest: string) => void) | undefined;
  thread.on('message', (message: { done?: ArrayBuffer; digest?: string }) => {
    if (message.digest !== undefined) digested?.(message.digest);
    if (message.done) {
      queued--;
      pool.give(Buffer.from(message.done));
    }
    wake?.();
  });
  thread.on('error', (error) => {
    failure = error;
    wake?.();
  });
  thread.on('exit', () => {
    failure ??= new Error('the hash thread has ended');
    wake?.();
  });
  const settle = async (until: () => boolean) => {
    while (!until() && !failure) await new Promise<void>((resolve) => (wake = resolve));
    if (failure) throw failure;
  };
  return {
    /** Moves the batch's memory to the thread; resolves once fewer than MAX_QUEUED wait there. */
    async send(batch: Buffer, length: number) {
      queued++;
      thread.postMessage({ buffer: batch.buffer, length }, [batch.buffer as ArrayBuffer]);
      await settle(() => queued < MAX_QUEUED);
    },
    async digest() {
      let digest: string | undefined;
      digested = (value) => (digest = value);
      thread.postMessage('digest');
      try {
        await settle(() => digest !== undefined);
        return digest!;
      } finally {
        void thread.terminate();
      }
    },
    close: () => void thread.terminate(),
  };
}
