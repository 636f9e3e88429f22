/**
 * Redis's clock as seen from this process: the offset between the two, measured with TIME and corrected by
 * half the round trip. Scripts decide by Redis's clock; the service uses this to give them deadlines in it.
 */
export interface RedisClock {
  now(): number;
  /** Measures the offset again (clocks drift). */
  sync(): Promise<void>;
}

/** `readTime`: Redis's TIME, as seconds and microseconds (RedisCommands.time). */
export async function createRedisClock(readTime: () => Promise<[number, number]>): Promise<RedisClock> {
  let offsetMs = 0;
  const sync = async () => {
    const sent = Date.now();
    const [seconds, micros] = await readTime();
    const received = Date.now();
    offsetMs = seconds * 1000 + micros / 1000 - (sent + received) / 2;
  };
  await sync();
  return { now: () => Date.now() + offsetMs, sync };
}
