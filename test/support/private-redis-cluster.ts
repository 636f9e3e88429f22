import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort, startProcess, type RunningProcess } from './processes.js';
import { poll } from './wait.js';

const run = promisify(execFile);

/** One redis-server of a private cluster. */
export interface ClusterNode {
  port: number;
  /** host:port, as REDIS_CLUSTER_NODES and CLUSTER commands name it. */
  address: string;
  /** SIGKILL, as a crash. */
  kill(): Promise<void>;
  /** Starts it again on its data directory (its nodes.conf keeps its place in the cluster; its data is gone). */
  start(): Promise<void>;
  /** A plain connection to this node alone, closed with the cluster. */
  client(): Redis;
}

/** A Redis Cluster of this process's own, on free ports. */
export interface PrivateRedisCluster {
  nodes: ClusterNode[];
  /** Every node's address, comma-separated: a REDIS_CLUSTER_NODES value. */
  nodeList: string;
  /** The masters now, as CLUSTER SHARDS reports them (a failover changes them). */
  masters(): Promise<ClusterNode[]>;
  /** The node that serves `slot` now. */
  ownerOf(slot: number): Promise<ClusterNode>;
  /** Moves a slot (and its keys) to another master, as `redis-cli --cluster reshard` does for one slot. */
  moveSlot(slot: number, to: ClusterNode): Promise<void>;
  /** Waits until every running node says `cluster_state:ok` and agrees on the slots. */
  waitUntilOk(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface PrivateRedisClusterOptions {
  masters?: number;
  /** Replicas per master. */
  replicas?: number;
  /** ms a master may be unreachable before its replica takes over (cluster-node-timeout). */
  nodeTimeoutMs?: number;
}

const REDIS_SERVER = '/usr/bin/redis-server';
const REDIS_CLI = '/usr/bin/redis-cli';

/**
 * Starts `masters` × (1 + `replicas`) redis-servers with cluster mode on, no persistence, on free ports, and
 * creates the cluster with `redis-cli --cluster create`. The caller stops it (`stop`, e.g. in a teardown).
 */
export async function startRedisCluster(options: PrivateRedisClusterOptions = {}): Promise<PrivateRedisCluster> {
  const masters = options.masters ?? 3;
  const replicas = options.replicas ?? 0;
  const dir = await mkdtemp(join(tmpdir(), 'flashsale-cluster-'));
  const clients: Redis[] = [];
  const nodes: ClusterNode[] = [];
  for (let i = 0; i < masters * (1 + replicas); i++) {
    const port = await freePort();
    const nodeDir = join(dir, String(port));
    await mkdir(nodeDir);
    let server: RunningProcess | undefined;
    const node: ClusterNode = {
      port,
      address: `127.0.0.1:${port}`,
      async start() {
        server = startProcess(
          REDIS_SERVER,
          [
            '--port',
            String(port),
            '--bind',
            '127.0.0.1',
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            join(nodeDir, 'nodes.conf'),
            '--cluster-node-timeout',
            String(options.nodeTimeoutMs ?? 2000),
            '--save',
            '',
            '--appendonly',
            'no',
            '--enable-debug-command',
            'local',
            '--dir',
            nodeDir,
          ],
          { stdio: 'ignore' },
        );
        await poll(
          () => ping(port),
          (ok) => ok,
          10_000,
          50,
        );
      },
      async kill() {
        const running = server;
        server = undefined;
        await running?.stop();
      },
      client() {
        const client = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0, retryStrategy: () => null });
        client.on('error', () => {});
        clients.push(client);
        return client;
      },
    };
    nodes.push(node);
  }
  const stop = async () => {
    for (const client of clients.splice(0)) client.disconnect();
    for (const node of nodes) await node.kill();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await Promise.all(nodes.map((node) => node.start()));
    await run(REDIS_CLI, [
      '--cluster',
      'create',
      ...nodes.map((node) => node.address),
      '--cluster-replicas',
      String(replicas),
      '--cluster-yes',
    ]);
  } catch (err) {
    await stop();
    throw err;
  }
  const byAddress = (address: string) => {
    const node = nodes.find((n) => n.address === address);
    if (!node) throw new Error(`no node ${address} in this cluster`);
    return node;
  };
  const cluster: PrivateRedisCluster = {
    nodes,
    nodeList: nodes.map((node) => node.address).join(','),
    async masters() {
      return (await slotRanges(nodes)).map((range) => byAddress(range.master)).filter(unique);
    },
    async ownerOf(slot) {
      const range = (await slotRanges(nodes)).find((r) => r.from <= slot && slot <= r.to);
      if (!range) throw new Error(`slot ${slot} is served by no node`);
      return byAddress(range.master);
    },
    async moveSlot(slot, to) {
      const from = await cluster.ownerOf(slot);
      if (from === to) return;
      const source = from.client();
      const target = to.client();
      const [sourceId, targetId] = [await nodeId(source), await nodeId(target)];
      // The steps of `redis-cli --cluster reshard` for one slot: importing, migrating, the keys, then the owner.
      await target.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', sourceId);
      await source.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', targetId);
      for (;;) {
        const keys = (await source.call('CLUSTER', 'GETKEYSINSLOT', slot, 100)) as string[];
        if (keys.length === 0) break;
        await source.call('MIGRATE', '127.0.0.1', to.port, '', 0, 5000, 'KEYS', ...keys);
      }
      await target.call('CLUSTER', 'SETSLOT', slot, 'NODE', targetId);
      await source.call('CLUSTER', 'SETSLOT', slot, 'NODE', targetId);
      for (const other of nodes) {
        if (other === from || other === to) continue;
        await other
          .client()
          .call('CLUSTER', 'SETSLOT', slot, 'NODE', targetId)
          .catch(() => {}); // a replica or a node down learns it from the others
      }
    },
    waitUntilOk: (timeoutMs = 30_000) => waitUntilOk(nodes, timeoutMs),
    stop,
  };
  try {
    await cluster.waitUntilOk();
    // A replica still in its first sync is not eligible for election: a master killed before its replica had
    // synced is never failed over (seen once in CI, under load). So the cluster is handed out synced.
    if (replicas > 0) await waitForReplicas(nodes, masters * replicas, 30_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return cluster;
}

/** Waits until `count` nodes are replicas with their link to their master up and no sync in progress. */
async function waitForReplicas(nodes: ClusterNode[], count: number, timeoutMs: number): Promise<void> {
  const synced = await poll(
    async () => {
      const infos = await Promise.all(nodes.map((node) => ask(node.port, 'INFO', 'replication')));
      return infos.filter(
        (info) =>
          typeof info === 'string' &&
          info.includes('role:slave') &&
          info.includes('master_link_status:up') &&
          info.includes('master_sync_in_progress:0'),
      ).length;
    },
    (ready) => ready >= count,
    timeoutMs,
    100,
  );
  if (synced < count) throw new Error(`only ${synced} of ${count} replicas synced within ${timeoutMs} ms`);
}

function unique<T>(value: T, index: number, all: T[]): boolean {
  return all.indexOf(value) === index;
}

async function nodeId(client: Redis): Promise<string> {
  return (await client.call('CLUSTER', 'MYID')) as string;
}

async function ping(port: number): Promise<boolean> {
  const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => null });
  client.on('error', () => {});
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

/** One node's answer to a command, or null when it does not answer (killed, say). */
async function ask(port: number, ...args: (string | number)[]): Promise<unknown> {
  const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => null });
  client.on('error', () => {});
  try {
    await client.connect();
    return await client.call(String(args[0]), ...args.slice(1));
  } catch {
    return null;
  } finally {
    client.disconnect();
  }
}

interface SlotRange {
  from: number;
  to: number;
  master: string;
}

/** The slot ranges and their masters, as the first node that answers CLUSTER SLOTS has them. */
async function slotRanges(nodes: ClusterNode[]): Promise<SlotRange[]> {
  for (const node of nodes) {
    const reply = (await ask(node.port, 'CLUSTER', 'SLOTS')) as [number, number, [string, number]][] | null;
    if (reply) return reply.map(([from, to, [host, port]]) => ({ from, to, master: `${host}:${port}` }));
  }
  throw new Error('no node of the cluster answers');
}

async function waitUntilOk(nodes: ClusterNode[], timeoutMs: number): Promise<void> {
  const healthy = await poll(
    async () => {
      const states = await Promise.all(nodes.map((node) => ask(node.port, 'CLUSTER', 'INFO')));
      const running = states.filter((s): s is string => typeof s === 'string');
      if (running.length === 0 || !running.every((s) => s.includes('cluster_state:ok'))) return false;
      // Every running node must see the same slot map, so a client sent anywhere is sent the same way.
      const maps = await Promise.all(
        nodes.map(async (node) => JSON.stringify(((await ask(node.port, 'CLUSTER', 'SLOTS')) as unknown[]) ?? null)),
      );
      const seen = maps.filter((m) => m !== 'null').map((m) => JSON.stringify(normalise(JSON.parse(m))));
      return seen.every((m) => m === seen[0]);
    },
    (ok) => ok,
    timeoutMs,
    100,
  );
  if (!healthy) throw new Error(`the cluster did not reach cluster_state:ok within ${timeoutMs} ms`);
}

/** A CLUSTER SLOTS reply as ranges and masters only, sorted (replica lists and node ids vary by node). */
function normalise(reply: [number, number, [string, number]][]): string[] {
  return reply.map(([from, to, [host, port]]) => `${from}-${to}@${host}:${port}`).sort();
}
