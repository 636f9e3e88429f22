/**
 * Products this instance saw sold out, for a few milliseconds: a flash sale's tail is thousands of refusals a
 * second, and each would otherwise cost a Redis round trip. It only ever refuses, never grants; units that come
 * back through this instance (stock raised, hold released, order cancelled) clear it at once, units that come
 * back elsewhere are refused for at most `ttlMs`.
 */
export interface SoldOutCache {
  isSoldOut(productId: number): boolean;
  markSoldOut(productId: number): void;
  forget(productId: number): void;
}

export function createSoldOutCache(ttlMs: number): SoldOutCache {
  const until = new Map<number, number>();
  return {
    isSoldOut: (productId) => ttlMs > 0 && (until.get(productId) ?? 0) > Date.now(),
    markSoldOut: (productId) => {
      if (ttlMs > 0) until.set(productId, Date.now() + ttlMs);
    },
    forget: (productId) => {
      until.delete(productId);
    },
  };
}
