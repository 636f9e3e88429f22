/**
 * One load generator of bench/shard-cap.ts, run as a child process (`fork`): holds on one product sent straight
 * to Redis through the service's own batching (src/redis/reserve-batches.ts, through createRedisCommands), in
 * batches of exactly the size asked, with a number of batches in flight at once. No HTTP and no Node service in
 * between: what limits it is Redis (or this process's share of the machine).
 *
 * Messages from the parent: `start` (a load), `stop` (answers `stopped` with its tallies), `exit`.
 */
import { loadConfig } from '../../src/config.js';
import { newHoldId } from '../../src/domain/hold-ids.js';
import { createRedisCommands } from '../../src/redis/commands.js';
import { connectRedis } from '../../src/redis/connection.js';
import { settingsFrom } from '../../src/settings.js';

export interface ShardLoadStart {
  type: 'start';
  redisUrl: string;
  prefix: string;
  productId: number;
  /** Holds per reserveStock call. */
  batch: number;
  /** reserveStock calls in flight at once. */
  inFlight: number;
}

export interface ShardLoadTally {
  type: 'stopped';
  granted: number;
  refused: number;
  /** Holds whose call failed (a timeout, a dropped connection): their outcome is unknown. */
  failed: number;
  calls: number;
  /** CPU this process used during the load (µs, user + system). */
  cpuMicros: number;
}

export type ShardLoadMessage = ShardLoadStart | { type: 'stop' } | { type: 'exit' };

let stopping = false;
let running: Promise<ShardLoadTally> | undefined;

async function load(start: ShardLoadStart): Promise<ShardLoadTally> {
  // A long command timeout: a saturated Redis answers late, and a late answer is still a measured hold.
  const config = loadConfig(
    {},
    { REDIS_URL: start.redisUrl, REDIS_KEY_PREFIX: start.prefix, REDIS_COMMAND_TIMEOUT_MS: 10_000 },
  );
  const redis = await connectRedis({ url: start.redisUrl, commandTimeoutMs: config.REDIS_COMMAND_TIMEOUT_MS });
  const commands = createRedisCommands(redis, { ...settingsFrom(config), maxHoldBatch: start.batch });
  const tally: ShardLoadTally = { type: 'stopped', granted: 0, refused: 0, failed: 0, calls: 0, cpuMicros: 0 };
  const cpuAtStart = process.cpuUsage();
  // One lane sends a batch and waits for its reply: its `batch` reserve() calls fill the product's batch, which
  // reserve-batches sends at once as one reserveStock call.
  const lane = async () => {
    while (!stopping) {
      const outcomes = await Promise.allSettled(
        Array.from({ length: start.batch }, () =>
          commands.reserve({ productId: start.productId, holdId: newHoldId(start.productId), qty: 1, customerId: '' }),
        ),
      );
      tally.calls++;
      for (const outcome of outcomes) {
        if (outcome.status === 'rejected') tally.failed++;
        else if (outcome.value.kind === 'held') tally.granted++;
        else tally.refused++;
      }
    }
  };
  await Promise.all(Array.from({ length: start.inFlight }, lane));
  const cpu = process.cpuUsage(cpuAtStart);
  tally.cpuMicros = cpu.user + cpu.system;
  redis.disconnect();
  return tally;
}

process.on('message', (message: ShardLoadMessage) => {
  if (message.type === 'start') {
    stopping = false;
    running = load(message);
    // A failure to connect ends this generator; the parent sees it exit.
    running.catch((err: unknown) => {
      process.stderr.write(`shard-load: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    });
  } else if (message.type === 'stop') {
    stopping = true;
    void running?.then((tally) => process.send?.(tally));
  } else {
    process.exit(0);
  }
});
process.send?.({ type: 'ready' });
