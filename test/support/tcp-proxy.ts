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

/**
 * What happens to the server's replies on forwarded connections, one RESP reply at a time (so a reply is lost
 * whole and the byte stream stays well formed, as when a server drops replies or a client misses them):
 * - `forward`: passed on.
 * - `drop`: the next `count` replies are discarded, then replies pass again.
 * - `delay`: every reply is passed on `ms` later.
 * - `swallow`: every reply is discarded.
 */
export type ReplyFault =
  { kind: 'forward' } | { kind: 'drop'; count: number } | { kind: 'delay'; ms: number } | { kind: 'swallow' };

export interface TcpProxy {
  readonly port: number;
  readonly mode: ProxyMode;
  cut(mode: Exclude<ProxyMode, 'forward'>): Promise<void>;
  /** Forwards again: stalled connections resume, swallowed ones are dropped. */
  restore(): Promise<void>;
  /** Treats the server's replies on every forwarded connection as `fault` says (a proxy started with `resp`). */
  faultReplies(fault: ReplyFault): void;
  /** Replies the proxy has discarded so far. */
  readonly droppedReplies: number;
  /** Drops the open connections (each end sees a reset) and forwards new ones. */
  reset(): void;
  /** Drops everything and stops listening. */
  close(): Promise<void>;
}

/**
 * A fault-injecting TCP proxy in front of `target`, listening on a free port of 127.0.0.1. With `resp` (a Redis
 * target) it reads the server's bytes as RESP replies, so `faultReplies` can act on whole replies; otherwise it
 * passes bytes on as they come.
 */
export async function startTcpProxy(
  target: { host: string; port: number },
  { resp = false }: { resp?: boolean } = {},
): Promise<TcpProxy> {
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

  let replyFault: ReplyFault = { kind: 'forward' };
  let droppedReplies = 0;
  /** Passes one client's replies on in order, each no sooner than the delay in force when it arrived. */
  const replyPasser = (client: net.Socket) => {
    const waiting: { at: number; reply: Buffer }[] = [];
    let timer: NodeJS.Timeout | undefined;
    const drain = () => {
      timer = undefined;
      while (waiting.length > 0 && waiting[0]!.at <= Date.now()) client.write(waiting.shift()!.reply);
      if (waiting.length > 0) timer = setTimeout(drain, waiting[0]!.at - Date.now());
    };
    client.on('close', () => clearTimeout(timer));
    return (reply: Buffer) => {
      if (replyFault.kind === 'drop' || replyFault.kind === 'swallow') {
        droppedReplies++;
        if (replyFault.kind === 'drop' && --replyFault.count <= 0) replyFault = { kind: 'forward' };
        return;
      }
      const at = replyFault.kind === 'delay' ? Date.now() + replyFault.ms : 0;
      if (at === 0 && waiting.length === 0) return void client.write(reply);
      waiting.push({ at: Math.max(at, waiting.at(-1)?.at ?? 0), reply: Buffer.from(reply) });
      timer ??= setTimeout(drain, Math.max(0, waiting[0]!.at - Date.now()));
    };
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
    if (!resp) upstream.pipe(client);
    else forwardReplies(upstream, replyPasser(client));
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });

  /** Hands each whole RESP reply from `upstream` to `passReply`. */
  const forwardReplies = (upstream: net.Socket, passReply: (reply: Buffer) => void) => {
    let unparsed: Buffer = Buffer.alloc(0);
    upstream.on('data', (chunk: Buffer) => {
      unparsed = unparsed.length === 0 ? chunk : Buffer.concat([unparsed, chunk]);
      let start = 0;
      for (let end = replyEnd(unparsed, start); end > 0; end = replyEnd(unparsed, start)) {
        passReply(unparsed.subarray(start, end));
        start = end;
      }
      unparsed = unparsed.subarray(start);
    });
  };

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
    get droppedReplies() {
      return droppedReplies;
    },
    faultReplies(fault) {
      replyFault = { ...fault };
    },
    reset() {
      for (const socket of forwarded) socket.resetAndDestroy();
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

/**
 * Where the RESP reply starting at `start` ends (the index after it), or -1 when `buffer` does not hold all of
 * it yet. Enough of RESP2 and RESP3 for the proxy to keep whole replies whole.
 */
function replyEnd(buffer: Buffer, start: number): number {
  if (start >= buffer.length) return -1;
  const lineEnd = buffer.indexOf('\r\n', start);
  if (lineEnd < 0) return -1;
  const afterLine = lineEnd + 2;
  const type = String.fromCharCode(buffer[start]!);
  const length = Number(buffer.toString('latin1', start + 1, lineEnd));
  if ('$!='.includes(type)) {
    if (length < 0) return afterLine;
    const end = afterLine + length + 2;
    return end <= buffer.length ? end : -1;
  }
  if ('*~>%|'.includes(type)) {
    if (length < 0) return afterLine;
    let position = afterLine;
    for (let i = 0; i < ('%|'.includes(type) ? 2 * length : length); i++) {
      position = replyEnd(buffer, position);
      if (position < 0) return -1;
    }
    return position;
  }
  return afterLine; // simple string, error, integer, null, double, boolean, big number
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
