import calculateSlot from 'cluster-key-slot';
import { Cluster, Redis, ReplyError, type ChainableCommander, type RedisOptions } from 'ioredis';
import { StoreUnavailableError } from '../errors.js';
import { redisFailure, ReplyMismatchError, ScriptReplyError } from './errors.js';
import { defineScripts, type ScriptTimer } from './scripts.js';

/** One Redis server, or a Redis Cluster: the commands are the same, and every product script touches one slot. */
export type RedisClient = Redis | Cluster;

export interface RedisConnectionOptions {
  url: string;
  /** host:port of some Cluster nodes; when given, `url` is not used and the client is a Cluster. */
  clusterNodes?: readonly string[];
  commandTimeoutMs: number;
  /** Told the time of every script call (the metrics). */
  scriptTimer?: ScriptTimer;
}

// Hold requests and rate-limit counts come batched already (reserve-batches.ts, request-counts.ts); an
// auto-pipeline around each batch only costs a turn of the event loop before the write (for holds, hot-sku
// served 26% more requests a second without it).
const AUTO_PIPELINING_IGNORED = ['reserveStock', 'countRequests'];

/**
 * A Redis connection for a service that must answer fast: a command fails at once while disconnected (no offline
 * queue) or after `commandTimeoutMs`, and is never sent again after a reconnect. A command that reaches Redis
 * after its timeout still runs: the hold script therefore takes a deadline and does nothing past it.
 * Auto-pipelining batches concurrent requests' commands into one write (hold requests have their own batches).
 * With `clusterNodes`, a Cluster client with the same rules per node (`connectCluster`).
 */
export async function connectRedis(options: RedisConnectionOptions): Promise<RedisClient> {
  if (options.clusterNodes && options.clusterNodes.length > 0) return connectCluster(options, options.clusterNodes);
  const redis = new Redis(options.url, {
    ...nodeOptions(options.commandTimeoutMs),
    lazyConnect: true,
    enableAutoPipelining: true,
    autoPipeliningIgnoredCommands: AUTO_PIPELINING_IGNORED,
    // Keep trying to reconnect in the background, never more than a second apart.
    retryStrategy: (attempt) => Math.min(attempt * 100, 1000),
  });
  defineScripts(redis, options.scriptTimer);
  // Errors reach the callers of each command; without a listener ioredis would log every reconnect failure. A
  // reply with no command waiting for it means the connection is out of step: drop it.
  redis.on('error', (err: Error) => {
    if (err.message.startsWith('Command queue state error')) resetConnection(redis);
  });
  try {
    await redis.connect();
  } catch (err) {
    redis.disconnect();
    throw new Error(`cannot connect to Redis at ${redactUrl(options.url)}: ${(err as Error).message}`, { cause: err });
  }
  return redis;
}

/** The fast-fail rules of one connection (to the server, or to each Cluster node). */
function nodeOptions(commandTimeoutMs: number): RedisOptions {
  return {
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    commandTimeout: commandTimeoutMs,
    connectTimeout: Math.max(1000, commandTimeoutMs),
  };
}

/** Slot-map refreshes at least this often, so a failover or a resharding done elsewhere is seen without a MOVED. */
const SLOTS_REFRESH_MS = 1000;

/**
 * A Cluster client with one server's rules on every node (no offline queue, no re-send, the command timeout). It
 * follows MOVED and ASK at once (the command did not run there, so sending it on is safe; at most
 * `maxRedirections`), and waits out a TRYAGAIN (a multi-key script during a slot's migration: did not run). It
 * never re-sends a command whose connection closed under it (`retryDelayOnFailover` 0: its outcome is unknown,
 * the caller gets a 503), nor waits out a CLUSTERDOWN (a 503 with Retry-After says it better); after a node is
 * lost it asks the cluster for the slots again, so the replica that took over is used from the next command on.
 */
async function connectCluster(options: RedisConnectionOptions, nodes: readonly string[]): Promise<Cluster> {
  const cluster = new Cluster(nodes.map(parseNode), {
    lazyConnect: true,
    enableOfflineQueue: false,
    enableAutoPipelining: true,
    autoPipeliningIgnoredCommands: AUTO_PIPELINING_IGNORED,
    redisOptions: nodeOptions(options.commandTimeoutMs),
    maxRedirections: 16,
    retryDelayOnMoved: 0,
    retryDelayOnTryAgain: 50,
    retryDelayOnFailover: 0,
    retryDelayOnClusterDown: 0,
    slotsRefreshTimeout: Math.max(1000, options.commandTimeoutMs),
    // Not ioredis's own periodic refresh (see below).
    slotsRefreshInterval: 0,
    // Keep trying to reach the cluster in the background, never more than a second apart.
    clusterRetryStrategy: (attempt) => Math.min(attempt * 100, 1000),
    // And each node: a socket dropped after a timeout (resetConnection) comes back as on one server. Without it
    // the node's connection ends, and its commands fail with "Connection is closed" until the next slots refresh.
    clusterNodeRetryStrategy: (attempt) => Math.min(attempt * 100, 1000),
  });
  defineScripts(cluster, options.scriptTimer);
  cluster.on('error', () => {});
  // ioredis 6's slotsRefreshInterval arms its next round when a refresh ends, whatever the client's state: a
  // refresh running when the client is closed re-arms it, and from then on the closed client refreshes every
  // interval forever, so the process never exits (test files that passed, then hung until tap's timeout, about
  // one run of the cluster stage in three). This timer refreshes only a ready client, and stops with it.
  const slotsRefresh = setInterval(() => {
    if (cluster.status === 'ready') cluster.refreshSlotsCache();
  }, SLOTS_REFRESH_MS).unref();
  cluster.once('end', () => clearInterval(slotsRefresh));
  // ioredis connects to a node on its first command and, without an offline queue, refuses the commands that
  // come while that connection is being made ("Connection is closed"): a burst's first requests to a master not
  // used yet would be 503s. So every node is connected as soon as the client is ready, and each one it learns of
  // later at once. Not before ready: a node connecting during ioredis's own ready check makes that check fail.
  const connectNodes = () => {
    for (const node of cluster.nodes('all')) if (node.status === 'wait') node.connect().catch(() => {});
  };
  cluster.on('ready', connectNodes);
  cluster.on('+node', () => {
    if (cluster.status === 'ready') connectNodes();
  });
  // A node lost (a crash, a failover) or out of step: ask for the slot map again rather than wait for a MOVED.
  cluster.on('node error', (err: Error, nodeKey: string) => {
    if (err.message.startsWith('Command queue state error')) {
      const node = cluster.nodes('all').find((n) => `${n.options.host}:${n.options.port}` === nodeKey);
      if (node) destroySocket(node);
    }
    cluster.refreshSlotsCache();
  });
  cluster.on('-node', () => cluster.refreshSlotsCache());
  try {
    await cluster.connect();
    await Promise.all(cluster.nodes('master').map((node) => nodeReady(node, Math.max(1000, options.commandTimeoutMs))));
  } catch (err) {
    cluster.disconnect();
    throw new Error(`cannot connect to the Redis Cluster at ${nodes.join(',')}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return cluster;
}

/** Resolves once `node` is connected; fails after `timeoutMs`. */
function nodeReady(node: Redis, timeoutMs: number): Promise<void> {
  if (node.status === 'ready') return Promise.resolve();
  if (node.status === 'wait') node.connect().catch(() => {});
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      node.off('ready', ready);
      reject(new Error(`node ${node.options.host}:${node.options.port} not ready after ${timeoutMs} ms`));
    }, timeoutMs);
    const ready = () => {
      clearTimeout(timer);
      resolve();
    };
    node.once('ready', ready);
  });
}

/** REDIS_CLUSTER_NODES as a list (empty: one server, at REDIS_URL). */
export function clusterNodeList(setting: string): string[] {
  return setting
    .split(',')
    .map((node) => node.trim())
    .filter((node) => node !== '');
}

function parseNode(node: string): { host: string; port: number } {
  const colon = node.lastIndexOf(':');
  return { host: node.slice(0, colon), port: Number(node.slice(colon + 1)) };
}

/**
 * Drops the socket at once, before it carries another command. ioredis matches replies to commands by their
 * order alone, so after a reply is lost (a timeout, a reply no command was waiting for) every later reply would
 * go to the wrong command. `destroy()` rather than `disconnect(true)`: disconnect ends the socket gracefully, and
 * replies still on their way would be handed out in the meantime. On 'close' ioredis fails every command still
 * waiting on the socket (maxRetriesPerRequest 0: 503s) and reconnects; until then commands fail at once.
 * On a Cluster, `key` names the command's slot: only the socket to the master of that slot is dropped (the
 * client connects to it again on the next command); without a key, those of the nodes with replies pending.
 */
export function resetConnection(redis: RedisClient, key?: string): void {
  if (redis instanceof Redis) {
    destroySocket(redis);
    return;
  }
  const owner = key === undefined ? undefined : masterOf(redis, key);
  if (owner) destroySocket(owner);
  else for (const node of redis.nodes('all')) if (pendingReplies(node) > 0) destroySocket(node);
}

function destroySocket(redis: Redis): void {
  if (!redis.stream?.destroyed) redis.stream?.destroy();
}

/** The connection to the master that serves `key`'s slot, as the client's slot map has it. */
export function masterOf(cluster: Cluster, key: string): Redis | undefined {
  const nodeKey = cluster.slots[calculateSlot(key)]?.[0];
  if (nodeKey === undefined) return undefined;
  return cluster.nodes('master').find((node) => `${node.options.host}:${node.options.port}` === nodeKey);
}

function pendingReplies(node: Redis): number {
  return (node as unknown as { commandQueue?: { length: number } }).commandQueue?.length ?? 0;
}

/** Items whose keys one pipeline may carry, by their index, and a key of theirs (for `Exchange`). */
export interface PipelineGroup {
  key: string;
  indices: number[];
}

/**
 * Splits items into the groups one pipeline may carry: all of them on one server; on a Cluster, those whose
 * slots the same node serves (ioredis refuses a Cluster pipeline whose keys live on several nodes).
 */
export function pipelineGroups<T>(
  redis: RedisClient,
  items: readonly T[],
  keyOf: (item: T) => string,
): PipelineGroup[] {
  if (items.length === 0) return [];
  if (redis instanceof Redis) return [{ key: keyOf(items[0]!), indices: items.map((_item, i) => i) }];
  const groups = new Map<string, PipelineGroup>();
  items.forEach((item, i) => {
    const key = keyOf(item);
    // The nodes serving the slot (master first), as ioredis itself groups a pipeline's slots.
    const node = redis.slots[calculateSlot(key)]?.join(';') ?? `slot:${calculateSlot(key)}`;
    const group = groups.get(node);
    if (group) group.indices.push(i);
    else groups.set(node, { key, indices: [i] });
  });
  return [...groups.values()];
}

/** The Cluster slot of a key; 0 on one server, where every key may go in one command. */
export function slotOf(redis: RedisClient, key: string): number {
  return redis instanceof Redis ? 0 : calculateSlot(key);
}

/** One command's reply in a pipeline: its error, or its value. */
export type PipelineReply = [Error | null, unknown];

/**
 * Sends `add`'s commands for every item pipelined, one pipeline per node (`pipelineGroups`), each through the
 * exchange, and gives each item its replies, in the order `add` queued them. One server: one pipeline, as before.
 */
export async function pipelinePerNode<T>(
  redis: RedisClient,
  exchange: Exchange,
  items: readonly T[],
  keyOf: (item: T) => string,
  add: (pipeline: ChainableCommander, item: T) => void,
): Promise<PipelineReply[][]> {
  const replies: PipelineReply[][] = new Array(items.length);
  await Promise.all(
    pipelineGroups(redis, items, keyOf).map(async ({ key, indices }) => {
      const pipeline = redis.pipeline();
      const counts = indices.map((i) => {
        const before = pipeline.length;
        add(pipeline, items[i]!);
        return pipeline.length - before;
      });
      const results = (await exchange(() => pipeline.exec(), undefined, undefined, key)) ?? [];
      let next = 0;
      indices.forEach((itemIndex, j) => {
        const count = counts[j]!;
        replies[itemIndex] = Array.from(
          { length: count },
          (_unused, k): PipelineReply =>
            results[next + k] ?? [new ScriptReplyError('pipeline', 'no reply in the pipeline'), null],
        );
        next += count;
      });
    }),
  );
  return replies;
}

/**
 * Sends one command (or pipeline) and settles with its reply as `decode` reads it, or a classified error
 * (src/redis/errors.ts). `decode` throws ScriptReplyError for a reply the command never gives.
 */
export type Exchange = <R, T = R>(
  send: () => Promise<R>,
  decode?: (reply: R) => T,
  timeoutMs?: number,
  /** A key of the command, so that on a Cluster a timeout resets the one node it went to. */
  key?: string,
) => Promise<T>;

// A script that met a NOSCRIPT did not run, so sending it again is safe. ioredis re-sends it once by itself; under
// flushes back to back that re-send can meet the next flush too.
const NOSCRIPT_ATTEMPTS = 10;

/**
 * The one way the command layer talks to Redis:
 * - the command's time starts when it is issued, not when ioredis writes it (an auto-pipeline waits for the one
 *   before it), so a stalled Redis is a 503 after `commandTimeoutMs`;
 * - a command unanswered by then resets the connection at once (`resetConnection`), so no later command reads
 *   its late reply; a reply of a shape the command never gives does the same;
 * - a NOSCRIPT (the script cache was flushed) is sent again, up to NOSCRIPT_ATTEMPTS times within the deadline.
 */
export function createExchange(redis: RedisClient, commandTimeoutMs: number): Exchange {
  return <R, T = R>(
    send: () => Promise<R>,
    decode: (reply: R) => T = (reply) => reply as unknown as T,
    timeoutMs = commandTimeoutMs,
    key?: string,
  ) =>
    new Promise<T>((resolve, reject) => {
      let settled = false;
      const fail = (err: unknown) => {
        if (outOfStep(err)) resetConnection(redis, key);
        reject(redisFailure(err));
      };
      const settle = (err: unknown, reply?: R) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err !== undefined) return fail(err);
        try {
          resolve(decode(reply as R));
        } catch (decodeErr) {
          fail(decodeErr);
        }
      };
      const timer = setTimeout(() => {
        // Synchronously, before this turn lets any other command be written to the socket.
        resetConnection(redis, key);
        settle(new StoreUnavailableError('redis', new Error(`no reply within ${timeoutMs} ms`)));
      }, timeoutMs);
      const attempt = (left: number) => {
        let sent: Promise<R>;
        try {
          sent = send();
        } catch (err) {
          return settle(err);
        }
        sent.then(
          (reply) => settle(undefined, reply),
          (err: unknown) => (left > 1 && !settled && isNoScript(err) ? attempt(left - 1) : settle(err)),
        );
      };
      attempt(NOSCRIPT_ATTEMPTS);
    });
}

/** A NOSCRIPT reply: the script cache lacked the script, which therefore did not run. */
export function isNoScript(err: unknown): boolean {
  return err instanceof ReplyError && (err as Error).message.startsWith('NOSCRIPT');
}

/** ioredis's own timeout (a backstop) or a reply that cannot be this command's. */
function outOfStep(err: unknown): boolean {
  return (
    err instanceof ScriptReplyError ||
    err instanceof ReplyMismatchError ||
    (err instanceof Error && err.message === 'Command timed out')
  );
}

/** The URL without its password, for messages. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '<unparseable url>';
  }
}
