import { AppError, errors } from '../errors.js';
import type { ScriptRefusal } from './commands.js';

/**
 * The one place a script's refusal becomes the API error the client is told: `subject` names what was asked
 * for. Refusals for want of units (409 with figures) are answered as plain bodies by the hold desk instead.
 */
export function refusalError(refusal: ScriptRefusal, subject: { productId?: number; holdId?: string }): AppError {
  const holdId = subject.holdId ?? '?';
  switch (refusal.kind) {
    case 'productNotFound':
      return errors.productNotFound(subject.productId ?? '?');
    case 'customerIdRequired':
      return errors.customerIdRequired(subject.productId ?? 0);
    case 'idempotencyKeyReused':
      return errors.idempotencyKeyReused();
    case 'deadlinePassed':
      return errors.unavailable('Redis');
    case 'holdNotFound':
      return errors.holdNotFound(holdId);
    case 'holdConverted':
      return errors.holdConverted(holdId);
    case 'holdConverting':
      return errors.holdConverting(holdId);
    case 'holdExpired':
      return errors.holdExpired(holdId);
    case 'holdReleased':
      return errors.holdReleased(holdId);
    case 'stockBelowCommitted':
      return errors.stockBelowCommitted(refusal.stock, refusal.held, refusal.sold);
    default:
      return unreachable(refusal);
  }
}

function unreachable(refusal: never): never {
  throw new Error(`unknown script refusal ${JSON.stringify(refusal)}`);
}
