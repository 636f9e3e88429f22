import type { Logger } from '../log.js';

/**
 * Logs refusals for insufficient stock at warn, at most once a second per product, with how many were refused
 * since the last line: a sold-out product is refused thousands of times a second, and a line each would cost
 * more than the refusals. The line goes to the logger of the request that writes it (its id on the line).
 */
export function createRefusalLog(now: () => number = Date.now) {
  const products = new Map<number, { loggedAt: number; refused: number }>();
  return {
    insufficientStock(log: Logger, productId: number, available: number, requested: number): void {
      const at = now();
      let entry = products.get(productId);
      if (!entry) {
        entry = { loggedAt: 0, refused: 0 };
        products.set(productId, entry);
      }
      entry.refused++;
      if (at - entry.loggedAt >= 1000) {
        log.warn(
          { product_id: productId, available_stock: available, requested, refused: entry.refused },
          'insufficient stock',
        );
        entry.loggedAt = at;
        entry.refused = 0;
      }
    },
  };
}
