import net from 'node:net';

/**
 * How the proxy treats connections:
 * - `forward`: passes bytes both ways to the target.
 * - `refuse`: nothing listens on the port, so a connect fails at once with ECONNREFUSED (a stopped server).
 * - `blackhole`: a connect succeeds but nothing ever answers (a firewall dropping packets, a frozen host).
 */
export type ProxyMode = 'forward' | 'refuse' | 'blackhole';

export interface TcpProxy {
  readonly port: number;
  readonly mode: ProxyMode;
  /** Drops every open connection, then refuses or swallows new ones. */
  cut(mode: 'refuse' | 'blackhole'): Promise<void>;
  /** Forwards new connections again. */
  restore(): Promise<void>;
  /** Drops everything and stops listening. */
  close(): Promise<void>;
}

/** A fault-injecting TCP proxy in front of `target`, listening on a free port of 127.0.0.1. */
export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  let mode: ProxyMode = 'forward';
  const sockets = new Set<net.Socket>();
  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    // A dropped peer is expected here; the other side is destroyed with it.
    socket.on('error', () => {});
  };

  const server = net.createServer((client) => {
    track(client);
    if (mode !== 'forward') return; // blackhole: accepted, never read, never answered
    const upstream = net.connect(target.port, target.host);
    track(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });

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
      // close() calls back once every connection is gone, so drop them first.
      server.close(() => resolve());
      dropAll();
    });
  const dropAll = () => {
    for (const socket of sockets) socket.destroy();
  };

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
      if (newMode === 'refuse') await stopListening();
      else dropAll();
    },
    async restore() {
      mode = 'forward';
      dropAll(); // connections swallowed while blackholed carry nothing useful
      if (!server.listening) await listen(port);
    },
    async close() {
      mode = 'refuse';
      await stopListening();
    },
  };
}
