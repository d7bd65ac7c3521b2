/**
 * NBD export: one qemu-nbd server per volume on TCP, bound to a chosen address (loopback by
 * default), one client at a time. qemu-nbd daemonizes once it listens and writes its pid to
 * `<stateDir>/<volume>.pid`; the running process's own command line is the record of what it
 * serves, so nothing else needs to be kept in step with it.
 */
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { checkName } from '../../../common/names.js';
import type { Run } from '../../runner.js';
import { checkPortal, nbdUrl } from '../naming.js';
import type { ExportDriver, ExportInfo, ExportRequest } from '../types.js';
import { processRunning } from '../../../lib/processes.js';

export interface NbdExportConfig {
  run: Run;
  /** Directory for pid files; one per exported volume. */
  stateDir: string;
  /** Address to listen on and to hand to clients. */
  address?: string;
  /** Ports to choose from, inclusive. */
  ports?: { first: number; last: number };
}

interface Server {
  pid: number;
  port: number;
  devicePath: string;
}

const STOP_WAIT_MS = 10_000;

/** A live qemu-nbd serving `volume`, read from /proc; undefined for a gone, zombie or reused pid. */
async function serverOf(pid: number, volume: string): Promise<Server | undefined> {
  const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  const argv = cmdline.split('\0').filter(Boolean);
  if (!argv[0] || path.basename(argv[0]) !== 'qemu-nbd') return undefined;
  const option = (name: string) => argv[argv.indexOf(name) + 1];
  if (option('--export-name') !== volume) return undefined;
  return { pid, port: Number(option('--port')), devicePath: argv[argv.length - 1]! };
}

async function portIsFree(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, address.replace(/^\[|\]$/g, ''), () => server.close(() => resolve(true)));
  });
}

export function createNbdExport(config: NbdExportConfig): ExportDriver {
  const { run, stateDir } = config;
  const address = checkPortal('address', config.address ?? '127.0.0.1');
  const ports = config.ports ?? { first: 10809, last: 10999 };
  const pidFile = (volume: string) => path.join(stateDir, `${checkName('volume', volume)}.pid`);

  function info(volume: string, server: Server): ExportInfo {
    return {
      kind: 'nbd',
      volume,
      target: volume,
      url: nbdUrl(address, server.port, volume),
      devicePath: server.devicePath,
      initiators: [],
    };
  }

  async function running(volume: string): Promise<Server | undefined> {
    const pid = Number((await fs.readFile(pidFile(volume), 'utf8').catch(() => '')).trim());
    return Number.isInteger(pid) && pid > 0 ? serverOf(pid, volume) : undefined;
  }

  async function usedPorts(): Promise<Set<number>> {
    const used = new Set<number>();
    for (const volume of await pidFileVolumes()) {
      const server = await running(volume);
      if (server) used.add(server.port);
    }
    return used;
  }

  async function pidFileVolumes(): Promise<string[]> {
    const names = await fs.readdir(stateDir).catch(() => [] as string[]);
    return names
      .filter((n) => n.endsWith('.pid'))
      .map((n) => n.slice(0, -'.pid'.length))
      .filter((n) => /^[a-z0-9][a-z0-9._-]{0,63}$/.test(n));
  }

  async function pickPort(): Promise<number> {
    const used = await usedPorts();
    for (let port = ports.first; port <= ports.last; port++) {
      if (!used.has(port) && (await portIsFree(address, port))) return port;
    }
    throw new Error(`no free NBD port on ${address} in ${ports.first}-${ports.last}`);
  }

  async function start(request: ExportRequest): Promise<void> {
    await fs.mkdir(stateDir, { recursive: true });
    const port = await pickPort();
    await run([
      'qemu-nbd',
      '--fork',
      '--persistent',
      '--shared=1',
      '--bind',
      address.replace(/^\[|\]$/g, ''),
      '--port',
      String(port),
      '--export-name',
      request.volume,
      '--format',
      request.format ?? 'raw',
      '--pid-file',
      pidFile(request.volume),
      '--',
      request.devicePath,
    ]);
  }

  async function find(volume: string): Promise<ExportInfo | undefined> {
    const server = await running(volume);
    return server && info(volume, server);
  }

  return {
    kind: 'nbd',
    find,

    async export(request) {
      checkName('volume', request.volume);
      const current = await running(request.volume);
      if (current && current.devicePath !== request.devicePath)
        throw new Error(`volume ${request.volume} is already served from ${current.devicePath}`);
      // A port taken between the check and qemu-nbd's bind fails the start; the next try picks again.
      if (!current) await start(request);
      const server = await running(request.volume);
      if (!server) throw new Error(`qemu-nbd for ${request.volume} did not stay up`);
      return info(request.volume, server);
    },

    async unexport(volume) {
      const server = await running(volume);
      if (server) {
        process.kill(server.pid, 'SIGTERM');
        const deadline = Date.now() + STOP_WAIT_MS;
        while (processRunning(server.pid) && (await serverOf(server.pid, volume))) {
          if (Date.now() > deadline) {
            process.kill(server.pid, 'SIGKILL');
            break;
          }
          await sleep(100);
        }
      }
      await fs.rm(pidFile(volume), { force: true });
    },

    async list() {
      const result: ExportInfo[] = [];
      for (const volume of (await pidFileVolumes()).sort()) {
        const server = await running(volume);
        if (server) result.push(info(volume, server));
      }
      return result;
    },
  };
}
