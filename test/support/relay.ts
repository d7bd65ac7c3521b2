/**
 * A TCP relay: connections to `listen` are piped to `target`. It puts a dev server on a cluster's
 * gateway: the Temporal CLI's dev server (v1.5.1) bound to any address but loopback cannot reach
 * its own history and matching services (their members announce 127.0.0.1), so it stays on
 * loopback and the relay carries the hosts' connections to it.
 */
import net from 'node:net';

export async function relayTcp(
  listen: { host: string; port: number },
  target: { host: string; port: number },
): Promise<() => Promise<void>> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((inbound) => {
    const outbound = net.connect(target);
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.once('close', () => sockets.delete(s)).on('error', () => {});
    }
    inbound.pipe(outbound).pipe(inbound);
    inbound.once('close', () => outbound.destroy());
    outbound.once('close', () => inbound.destroy());
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(listen.port, listen.host, resolve));
  return () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
}
