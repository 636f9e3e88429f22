/**
 * Products this instance saw sold out, for a few milliseconds: a flash sale's tail is thousands of refusals a
 * second, and each would otherwise cost a Redis round trip. It only ever refuses, never grants. When the time is
 * up, one request goes to Redis for all (the probe) while the others are still refused, for at most `ttlMs`
 * more; its answer renews the entry or clears it. Units that come back through this instance (stock raised, hold
 * released, order cancelled) clear it at once; units that come back elsewhere are refused for at most
 * 2 × `ttlMs`.
 */
export interface SoldOutCache {
  /** True when a hold on this product is to be refused without asking Redis. */
  refuses(productId: number): boolean;
  markSoldOut(productId: number): void;
  forget(productId: number): void;
}

interface Entry {
  until: number;
  probing: boolean;
}

/** `now` is the clock the entries' times are read from, in ms (Date.now unless a test drives its own). */
export function createSoldOutCache(ttlMs: number, options: { now?: () => number } = {}): SoldOutCache {
  const now = options.now ?? Date.now;
  const entries = new Map<number, Entry>();
  return {
    refuses: (productId) => {
      const entry = entries.get(productId);
      if (entry === undefined) return false;
      const time = now();
      if (time < entry.until) return true;
      if (!entry.probing) {
        entry.probing = true;
        return false;
      }
      if (time < entry.until + ttlMs) return true;
      // The probe is slow or failed: stop guessing.
      entries.delete(productId);
      return false;
    },
    markSoldOut: (productId) => {
      if (ttlMs > 0) entries.set(productId, { until: now() + ttlMs, probing: false });
    },
    forget: (productId) => {
      entries.delete(productId);
    },
  };
}
