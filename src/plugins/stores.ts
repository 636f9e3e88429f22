import fp from 'fastify-plugin';
import type { Kysely } from 'kysely';
import type { Config } from '../config.js';
import { settingsFrom, type Settings } from '../settings.js';
import { createDatabase } from '../db/connection.js';
import type { Database } from '../db/schema.js';
import { createRedisClock, type RedisClock } from '../redis/clock.js';
import { createRedisCommands, type RedisCommands } from '../redis/commands.js';
import { clusterNodeList, connectRedis, type RedisClient } from '../redis/connection.js';

declare module 'fastify' {
  interface FastifyInstance {
    config: Config;
    /** The figures the rules use, derived once from `config` (src/settings.ts). */
    settings: Settings;
    /** The raw connection, for its events; every command goes through `redisCommands`. */
    redis: RedisClient;
    redisClock: RedisClock;
    /** Every script and command the service sends to Redis, typed and decoded (src/redis/commands.ts). */
    redisCommands: RedisCommands;
    db: Kysely<Database>;
  }
}

/** Connects Redis and Postgres once for the app, and closes both when the app closes. */
export default fp<{ config: Config }>(
  async (app, { config }) => {
    app.decorate('config', config);
    const settings = settingsFrom(config);
    app.decorate('settings', settings);

    const redis = await connectRedis({
      url: config.REDIS_URL,
      clusterNodes: clusterNodeList(config.REDIS_CLUSTER_NODES),
      commandTimeoutMs: config.REDIS_COMMAND_TIMEOUT_MS,
      scriptTimer: app.metrics?.observeScript,
    });
    let redisDown = false;
    let closing = false;
    redis.on('close', () => {
      // The app's own quit() closes it too: that is no outage.
      if (!redisDown && !closing) app.log.error('redis connection lost; answering 503 until it is back');
      redisDown = true;
    });
    redis.on('ready', () => {
      if (redisDown) app.log.info('redis connection restored');
      redisDown = false;
    });
    app.decorate<RedisClient>('redis', redis);
    // The commands give hold batches deadlines on the clock, and the clock reads Redis's TIME through them.
    const clockNow = { read: Date.now };
    const commands = createRedisCommands(redis, settings, () => clockNow.read());
    const clock = await createRedisClock(commands.time);
    clockNow.read = clock.now;
    app.decorate('redisClock', clock);
    app.decorate('redisCommands', commands);
    const clockSync = setInterval(() => clock.sync().catch(() => {}), 60_000).unref();

    const db = createDatabase({
      url: config.DATABASE_URL,
      timeoutMs: config.DATABASE_TIMEOUT_MS,
      poolSize: config.DATABASE_POOL_SIZE,
    });
    app.decorate('db', db);

    app.addHook('onClose', async () => {
      clearInterval(clockSync);
      closing = true;
      await db.destroy();
      // quit() waits for replies still in flight; disconnect() if Redis is already gone.
      if (redis.status === 'ready') await redis.quit().catch(() => redis.disconnect());
      else redis.disconnect();
    });
  },
  { name: 'stores', dependencies: ['metrics'] },
);
