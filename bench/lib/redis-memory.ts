import type { Redis } from 'ioredis';
import { productKeys } from '../../src/redis/keys.js';

/** Redis's `used_memory` (bytes) from INFO memory: the whole server, so other clients' keys move it too. */
export async function usedMemory(redis: Redis): Promise<number> {
  const info = await redis.info('memory');
  const match = /^used_memory:(\d+)/m.exec(info);
  if (!match) throw new Error('INFO memory has no used_memory');
  return Number(match[1]);
}

/** Bytes the keys of one product take (MEMORY USAGE ... SAMPLES 0, exact): immune to other clients. */
export async function productKeysMemory(redis: Redis, prefix: string, productId: number): Promise<number> {
  let total = 0;
  for (const key of Object.values(productKeys(prefix, productId))) {
    const bytes = await redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0');
    if (typeof bytes === 'number') total += bytes;
  }
  return total;
}

/** The Redis server's pid when it runs on this machine (INFO server's process_id), else undefined. */
export async function localRedisPid(redis: Redis, url: string): Promise<number | undefined> {
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(new URL(url).hostname)) return undefined;
  const match = /^process_id:(\d+)/m.exec(await redis.info('server'));
  return match ? Number(match[1]) : undefined;
}
