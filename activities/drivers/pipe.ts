/**
 * `producer | consumer` without a shell, for streams the command runner cannot carry (a runner
 * result is text, a ZFS stream is binary and may be large). Same guarantees as the runner: argv
 * only, each command in its own process group ended on cancellation or timeout, heartbeats inside
 * an activity, one log line per pipeline, a CommandError with the failing side's stderr tail.
 * With `bytesPerSecond` the stream goes through a token bucket on its way (a volume's speeds).
 */
import { execa } from 'execa';
import type { Logger } from '../../lib/logger.js';
import { checkArgv, CommandError, currentActivity, HEARTBEAT_MS, stderrTail, stopOnCancel } from '../runner.js';
import { throttle } from './throttle.js';
import type { Pipe } from './types.js';

export function createPipe(logger: Logger): Pipe {
  return async function pipe(producerArgv, consumerArgv, options = {}) {
    checkArgv(producerArgv);
    checkArgv(consumerArgv);
    const activity = currentActivity();
    const started = performance.now();
    const common = { detached: true, reject: false, encoding: 'buffer', maxBuffer: 16 * 1024 * 1024 } as const;
    const producer = execa(producerArgv[0]!, producerArgv.slice(1), {
      ...common,
      stdin: 'ignore',
      buffer: { stdout: false, stderr: true },
    });
    const consumer = execa(consumerArgv[0]!, consumerArgv.slice(1), { ...common, stdin: 'pipe' });
    consumer.stdin?.on('error', () => {});
    const limit = options.bytesPerSecond ? throttle(options.bytesPerSecond) : undefined;
    let bytes = 0;
    producer.stdout?.on('data', (chunk: Buffer) => (bytes += chunk.length));
    if (limit) producer.stdout?.pipe(limit).pipe(consumer.stdin);
    else producer.stdout?.pipe(consumer.stdin);
    // Whichever side ends first is the likelier cause of a failure. A consumer that ends early
    // must also close the stream's read end, or the producer would block on a full pipe forever.
    let firstToExit: 'producer' | 'consumer' | undefined;
    producer.once('exit', () => (firstToExit ??= 'producer'));
    consumer.once('exit', () => {
      firstToExit ??= 'consumer';
      producer.stdout?.destroy();
      limit?.destroy();
    });

    const stopper = stopOnCancel([producer.pid, consumer.pid], options, activity);
    const beat = activity
      ? setInterval(
          () => activity.heartbeat({ command: `${producerArgv[0]} | ${consumerArgv[0]}`, bytes }),
          HEARTBEAT_MS,
        )
      : undefined;

    try {
      const [sent, received] = await Promise.all([producer, consumer]);
      const ended = stopper.ended();
      const durationMs = Math.round(performance.now() - started);
      logger.info(
        {
          argv: producerArgv,
          into: consumerArgv,
          durationMs,
          bytes,
          ...(limit ? { bytesPerSecond: options.bytesPerSecond } : {}),
          exitCodes: [sent.exitCode, received.exitCode],
          ...(ended ? { ended } : {}),
        },
        'pipeline',
      );
      if (activity?.cancellationSignal.aborted) throw activity.cancellationSignal.reason;
      const producerFirst = firstToExit !== 'consumer' || received.exitCode === 0;
      const sides = [
        [producerArgv, sent],
        [consumerArgv, received],
      ] as const;
      for (const [argv, result] of producerFirst ? sides : [...sides].reverse()) {
        if (!ended && result.exitCode === 0) continue;
        const reason =
          ended ??
          (result.signal
            ? `killed by ${result.signal}`
            : result.exitCode === undefined
              ? 'did not start'
              : `exit code ${result.exitCode}`);
        throw new CommandError(argv, result.exitCode, stderrTail(Buffer.from(result.stderr ?? '').toString()), reason);
      }
    } finally {
      stopper.release();
      clearInterval(beat);
      limit?.destroy();
    }
  };
}
