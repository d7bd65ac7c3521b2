/**
 * A real SMTP server on loopback for the tests: Debian's aiosmtpd, storing what it receives in a
 * Maildir. Missing, it fails the test loudly.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { freePort } from './ports.js';
import { killGroup } from './processes.js';
import { until } from './wait.js';

/** Debian's Python, which has the distribution's aiosmtpd (another Python on PATH may not). */
const PYTHON = '/usr/bin/python3';

export interface SmtpServer {
  host: string;
  port: number;
  /** The messages received so far, as raw RFC 5322 text. */
  messages(): string[];
  stop(): void;
}

export async function startSmtpServer(dir: string): Promise<SmtpServer> {
  if (spawnSync(PYTHON, ['-c', 'import aiosmtpd'], { stdio: 'ignore' }).status !== 0)
    throw new Error('the SMTP server aiosmtpd is missing (python3-aiosmtpd; run scripts/setup.sh)');
  const maildir = path.join(dir, 'Maildir');
  fs.mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const server = spawn(
    PYTHON,
    ['-m', 'aiosmtpd', '-n', '-l', `127.0.0.1:${port}`, '-c', 'aiosmtpd.handlers.Mailbox', maildir],
    { stdio: ['ignore', 'ignore', 'pipe'], detached: true },
  );
  let stderr = '';
  server.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  await until(
    'the SMTP server to listen',
    () =>
      server.exitCode !== null
        ? Promise.reject(new Error(`the SMTP server exited: ${stderr.trim().split('\n').at(-1)}`))
        : new Promise<boolean>((resolve) => {
            const s = net.connect(port, '127.0.0.1', () => {
              s.destroy();
              resolve(true);
            });
            s.on('error', () => resolve(false));
          }),
    15_000,
  ).catch((err: unknown) => {
    killGroup(server.pid);
    throw server.exitCode !== null ? new Error(`the SMTP server exited: ${stderr.trim().split('\n').at(-1)}`) : err;
  });
  const newDir = path.join(maildir, 'new');
  return {
    host: '127.0.0.1',
    port,
    messages: () =>
      fs.existsSync(newDir)
        ? fs
            .readdirSync(newDir)
            .sort()
            .map((f) => fs.readFileSync(path.join(newDir, f), 'utf8'))
        : [],
    stop: () => killGroup(server.pid),
  };
}
