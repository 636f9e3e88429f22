import { Redis } from 'ioredis';
import { defineScripts } from './scripts.js';

export interface RedisConnectionOptions {
  url: string;
  commandTimeoutMs: number;
}

/**
 * A Redis connection for a service that must answer fast: a command fails at once while disconnected (no offline
 * queue) or after `commandTimeoutMs`, and is never sent again after a reconnect. A command that reaches Redis
 * after its timeout still runs: the hold script therefore takes a deadline and does nothing past it.
 * Auto-pipelining batches concurrent requests' commands into one write (hold requests have their own batches).
 */
export async function connectRedis(options: RedisConnectionOptions): Promise<Redis> {
  const redis = new Redis(options.url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    commandTimeout: options.commandTimeoutMs,
    connectTimeout: Math.max(1000, options.commandTimeoutMs),
    enableAutoPipelining: true,
    // Hold requests come batched already (reserve-batches.ts); an auto-pipeline around each batch only cost
    // time: hot-sku served 26% more requests a second without it.
    autoPipeliningIgnoredCommands: ['reserveStock'],
    // Keep trying to reconnect in the background, never more than a second apart.
    retryStrategy: (attempt) => Math.min(attempt * 100, 1000),
  });
  defineScripts(redis);
  // Errors reach the callers of each command; without a listener ioredis would log every reconnect failure.
  redis.on('error', () => {});
  try {
    await redis.connect();
  } catch (err) {
    redis.disconnect();
    throw new Error(`cannot connect to Redis at ${redactUrl(options.url)}: ${(err as Error).message}`, { cause: err });
  }
  return redis;
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
