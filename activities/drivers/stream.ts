/**
 * A byte stream between two hosts over the network, each side's command run on its own host, so
 * that no host runs commands on another: the receiving host listens on its own address for one
 * connection that must open with the transfer's one-time token (the workflow hands it to both
 * sides) and feeds the rest into its command (`zfs recv`); the sending host runs its command
 * (`zfs send`) and streams the token and the output to it. One-shot (the listener closes once the
 * right sender is in, or when its time is up), bounded, argv only, each command in its own process
 * group ended on cancellation, heartbeats inside an activity.
 */
import { timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import type { Readable } from 'node:stream';
import { execa } from 'execa';
import { checkInt, InputError } from '../../common/names.js';
import type { Logger } from '../../lib/logger.js';
import { checkArgv, CommandError, currentActivity, HEARTBEAT_MS, stderrTail, stopOnCancel } from '../runner.js';
import { throttle } from './throttle.js';

const TOKEN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TOKEN_BYTES = 36;
/** How long a connected peer may take to present its token. */
const TOKEN_WAIT_MS = 10_000;
export const DEFAULT_LISTEN_MS = 10 * 60_000;

const IPV4 = /^(\d{1,3}\.){3}\d{1,3}$/;

/** This host's address for streams from other hosts (IMGFLOW_STREAM_ADDRESS), when it has one. */
export function checkStreamAddress(address: string | undefined): string | undefined {
  if (address !== undefined && !IPV4.test(address))
    throw new InputError('IMGFLOW_STREAM_ADDRESS', "this host's IPv4 address", address);
  return address;
}

/** A peer's endpoint as a workflow hands it over. */
export function checkEndpoint(input: Endpoint): Endpoint {
  if (!IPV4.test(input.address)) throw new InputError('address', 'an IPv4 address', input.address);
  return { address: input.address, port: checkInt('port', input.port, 1, 65_535) };
}

/** A one-time token: a random UUID, as the workflow's `uuid4()` makes it. */
export function checkToken(field: string, value: unknown): string {
  if (typeof value !== 'string' || !TOKEN.test(value))
    throw new InputError(field, 'a one-time transfer token (a UUID)', '<withheld>');
  return value;
}

export interface Endpoint {
  address: string;
  port: number;
}

interface Pending extends Endpoint {
  server: net.Server;
  sender: Promise<net.Socket>;
  timer: NodeJS.Timeout;
}

/** Reads exactly the token's bytes off a fresh connection, leaving the rest of the stream unread. */
function readToken(socket: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const done = (error?: Error, token?: Buffer) => {
      socket.off('readable', onReadable).off('end', onEnd).off('error', onEnd);
      clearTimeout(timer);
      if (error) reject(error);
      else resolve(token!);
    };
    const onReadable = () => {
      const token = socket.read(TOKEN_BYTES) as Buffer | null;
      if (token) done(undefined, token);
    };
    const onEnd = () => done(new Error('closed before its token'));
    const timer = setTimeout(() => done(new Error('no token in time')), TOKEN_WAIT_MS);
    socket.on('readable', onReadable).once('end', onEnd).once('error', onEnd);
  });
}

function sameToken(got: Buffer, token: string): boolean {
  const want = Buffer.from(token);
  return got.length === want.length && timingSafeEqual(got, want);
}

/** Runs `argv` in its own process group with `stdin` or `stdout` tied to a stream; returns the bytes that went through. */
async function streamCommand(
  logger: Logger,
  argv: readonly string[],
  io: { from?: Readable; to?: NodeJS.WritableStream },
  options: { timeoutMs?: number; bytesPerSecond?: number },
): Promise<number> {
  checkArgv(argv);
  const activity = currentActivity();
  const started = performance.now();
  const child = execa(argv[0]!, argv.slice(1), {
    detached: true,
    reject: false,
    encoding: 'buffer',
    stdin: io.from ? 'pipe' : 'ignore',
    buffer: { stdout: !io.to, stderr: true },
  });
  let bytes = 0;
  const limit = options.bytesPerSecond ? throttle(options.bytesPerSecond) : undefined;
  if (io.from) {
    child.stdin?.on('error', () => {});
    io.from.on('data', (chunk: Buffer) => (bytes += chunk.length));
    (limit ? io.from.pipe(limit) : io.from).pipe(child.stdin!);
  }
  if (io.to) {
    child.stdout?.on('data', (chunk: Buffer) => (bytes += chunk.length));
    (limit ? child.stdout.pipe(limit) : child.stdout).pipe(io.to);
  }
  const stopper = stopOnCancel([child.pid], options, activity);
  const beat = activity ? setInterval(() => activity.heartbeat({ command: argv[0], bytes }), HEARTBEAT_MS) : undefined;
  try {
    const result = await child;
    const ended = stopper.ended();
    logger.info(
      {
        argv,
        durationMs: Math.round(performance.now() - started),
        bytes,
        exitCode: result.exitCode,
        ...(ended ? { ended } : {}),
      },
      io.from ? 'stream received' : 'stream sent',
    );
    if (activity?.cancellationSignal.aborted) throw activity.cancellationSignal.reason;
    if (ended || result.exitCode !== 0) {
      const reason =
        ended ??
        (result.signal
          ? `killed by ${result.signal}`
          : result.exitCode === undefined
            ? 'did not start'
            : `exit code ${result.exitCode}`);
      throw new CommandError(argv, result.exitCode, stderrTail(Buffer.from(result.stderr ?? '').toString()), reason);
    }
    return bytes;
  } finally {
    stopper.release();
    clearInterval(beat);
    limit?.destroy();
  }
}

/**
 * The receiving side, kept by one worker: `listen` opens a port on the host's own address for the
 * token (again with the same token: the same port), `receive` waits for that sender and feeds its
 * stream to the command. A worker that restarts loses its listeners; the transfer is then retried
 * from the start with a new token.
 */
export function createStreamReceiver(logger: Logger) {
  const pending = new Map<string, Pending>();

  function forget(token: string): void {
    const found = pending.get(token);
    if (!found) return;
    pending.delete(token);
    clearTimeout(found.timer);
    found.server.close();
  }

  return {
    async listen(input: { address: string; token: string; timeoutMs?: number }): Promise<Endpoint> {
      const token = checkToken('token', input.token);
      const known = pending.get(token);
      if (known) return { address: known.address, port: known.port };
      const server = net.createServer({ pauseOnConnect: false });
      let admit!: (socket: net.Socket) => void;
      let give!: (error: Error) => void;
      const sender = new Promise<net.Socket>((resolve, reject) => ((admit = resolve), (give = reject)));
      sender.catch(() => {});
      server.on('connection', (socket) => {
        readToken(socket).then(
          (got) => {
            if (!sameToken(got, token) || !pending.has(token)) {
              socket.destroy();
              return;
            }
            // One-shot: nobody else gets in once the sender has.
            server.close();
            admit(socket);
          },
          () => socket.destroy(),
        );
      });
      await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, input.address, resolve));
      const port = (server.address() as net.AddressInfo).port;
      const limitMs = input.timeoutMs ?? DEFAULT_LISTEN_MS;
      const timer = setTimeout(() => {
        give(new Error(`no sender came to ${input.address}:${port} within ${Math.round(limitMs / 1000)}s`));
        forget(token);
      }, limitMs);
      timer.unref();
      pending.set(token, { server, sender, timer, address: input.address, port });
      return { address: input.address, port };
    },

    async receive(input: {
      token: string;
      consumer: readonly string[];
      timeoutMs?: number;
    }): Promise<{ bytes: number }> {
      const token = checkToken('token', input.token);
      const found = pending.get(token);
      if (!found) throw new Error('no listener for this transfer here (did the worker restart?)');
      try {
        const socket = await found.sender;
        clearTimeout(found.timer);
        const bytes = await streamCommand(
          logger,
          input.consumer,
          { from: socket },
          input.timeoutMs ? { timeoutMs: input.timeoutMs } : {},
        );
        socket.destroy();
        return { bytes };
      } finally {
        forget(token);
      }
    },

    has(token: string): boolean {
      return pending.has(token);
    },

    /** Transfers listening now (for leak checks and status). */
    listening(): number {
      return pending.size;
    },
  };
}

export type StreamReceiver = ReturnType<typeof createStreamReceiver>;

/** The sending side: connects to the receiver, presents the token, and streams the command's output. */
export async function sendStream(
  logger: Logger,
  input: Endpoint & { token: string; producer: readonly string[]; bytesPerSecond?: number; timeoutMs?: number },
): Promise<{ bytes: number }> {
  const token = checkToken('token', input.token);
  const socket = net.connect({ host: input.address, port: input.port });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`cannot reach ${input.address}:${input.port} within ${TOKEN_WAIT_MS / 1000}s`)),
        TOKEN_WAIT_MS,
      );
      socket
        .once('connect', () => (clearTimeout(timer), resolve()))
        .once('error', (error) => (clearTimeout(timer), reject(error)));
    });
    const lost = new Promise<never>((_, reject) => socket.once('error', reject));
    lost.catch(() => {});
    socket.write(token);
    const options = {
      ...(input.bytesPerSecond ? { bytesPerSecond: input.bytesPerSecond } : {}),
      ...(input.timeoutMs ? { timeoutMs: input.timeoutMs } : {}),
    };
    const bytes = await Promise.race([streamCommand(logger, input.producer, { to: socket }, options), lost]);
    await new Promise<void>((resolve) =>
      socket.writableFinished ? resolve() : socket.once('finish', resolve).once('close', () => resolve()),
    );
    return { bytes };
  } finally {
    socket.destroy();
  }
}
