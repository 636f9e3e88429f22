import net from 'node:net';
import type { Test } from 'tap';

/**
 * How the proxy treats connections:
 * - `forward`: passes bytes both ways to the target.
 * - `refuse`: open connections are dropped and nothing listens on the port, so a connect fails at once with
 *   ECONNREFUSED (a stopped server).
 * - `blackhole`: open connections are dropped; a new connect succeeds but nothing ever answers (a firewall
 *   dropping packets, a frozen host).
 * - `stall`: open connections stay open but stop moving bytes, which wait in buffers as TCP would keep
 *   retransmitting them through a network partition; new connections are swallowed as in `blackhole`.
 *   `restore()` lets the buffered bytes through.
 * - `strand`: open connections stall as in `stall`, but new connections are forwarded: a half-open socket left
 *   behind by a failover or a dropped NAT entry, while the server itself is fine.
 */
export type ProxyMode = 'forward' | 'refuse' | 'blackhole' | 'stall' | 'strand';

export interface TcpProxy {
  readonly port: number;
  readonly mode: ProxyMode;
  cut(mode: Exclude<ProxyMode, 'forward'>): Promise<void>;
  /** Forwards again: stalled connections resume, swallowed ones are dropped. */
  restore(): Promise<void>;
  /** Drops everything and stops listening. */
  close(): Promise<void>;
}

/** A fault-injecting TCP proxy in front of `target`, listening on a free port of 127.0.0.1. */
export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  let mode: ProxyMode = 'forward';
  // Both ends of every forwarded connection, and the connections accepted while cut.
  const forwarded = new Set<net.Socket>();
  const swallowed = new Set<net.Socket>();
  const track = (socket: net.Socket, set: Set<net.Socket>) => {
    set.add(socket);
    socket.on('close', () => set.delete(socket));
    // A dropped peer is expected here; the other end is destroyed with it.
    socket.on('error', () => {});
  };

  const server = net.createServer((client) => {
    if (mode !== 'forward' && mode !== 'strand') {
      track(client, swallowed); // accepted, never read, never answered
      return;
    }
    const upstream = net.connect(target.port, target.host);
    track(client, forwarded);
    track(upstream, forwarded);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });

  const destroyAll = (set: Set<net.Socket>) => {
    for (const socket of set) socket.destroy();
  };
  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  const stopListening = () =>
    new Promise<void>((resolve) => {
      if (!server.listening) return resolve();
      // close() calls back once every connection is gone, so drop them right after asking.
      server.close(() => resolve());
      destroyAll(forwarded);
      destroyAll(swallowed);
    });

  await listen(0);
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('proxy has no TCP address');
  const port = address.port;

  return {
    port,
    get mode() {
      return mode;
    },
    async cut(newMode) {
      mode = newMode;
      if (newMode === 'refuse') return stopListening();
      // Paused sockets stop reading: their peers' bytes wait in buffers, and pipe() stops writing.
      if (newMode === 'stall' || newMode === 'strand') for (const socket of forwarded) socket.pause();
      else destroyAll(forwarded);
    },
    async restore() {
      mode = 'forward';
      destroyAll(swallowed); // they never reached the target: nothing to resume
      for (const socket of forwarded) socket.resume();
      if (!server.listening) await listen(port);
    },
    async close() {
      mode = 'refuse';
      await stopListening();
    },
  };
}

/** A proxy in front of the server of a database URL, closed when the test ends, and the URL that goes through it. */
export async function proxyInFrontOf(t: Test, databaseUrl: string): Promise<{ proxy: TcpProxy; url: string }> {
  const direct = new URL(databaseUrl);
  const proxy = await startTcpProxy({ host: direct.hostname, port: Number(direct.port || 5432) });
  t.teardown(() => proxy.close());
  const proxied = new URL(direct);
  proxied.port = String(proxy.port);
  return { proxy, url: proxied.toString() };
}
