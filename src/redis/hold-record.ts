import type { HoldStatus } from '../schemas/hold.js';

/** A hold record as the scripts store it in the product's `holds` hash (JSON); written only by lua/. */
export interface HoldRecord {
  qty: number;
  /** Absent when the hold was made without one. */
  customer_id?: string;
  /** 'converting' is internal: the API shows such a hold as held until its order is committed. */
  status: HoldStatus | 'converting';
  /** ms, Redis's clock. */
  expires_at: number;
  price_cents: number;
  /** Set on products with a per-customer limit: the hold counts in the customer's units. */
  limited?: boolean;
  ended_at?: number;
  claim_id?: string;
  order_id?: string;
  units_returned?: boolean;
}

const STATUSES = new Set(['held', 'released', 'expired', 'converted', 'converting']);

/** Parses and checks a stored hold record; a record of another shape is a bug or a foreign write, not a hold. */
export function parseHoldRecord(holdId: string, json: string): HoldRecord {
  let record: unknown;
  try {
    record = JSON.parse(json);
  } catch {
    record = undefined;
  }
  const r = record as Partial<HoldRecord> | undefined;
  if (
    typeof r !== 'object' ||
    r === null ||
    typeof r.qty !== 'number' ||
    typeof r.expires_at !== 'number' ||
    typeof r.price_cents !== 'number' ||
    typeof r.status !== 'string' ||
    !STATUSES.has(r.status) ||
    (r.customer_id !== undefined && typeof r.customer_id !== 'string')
  ) {
    throw new Error(`malformed hold record for ${holdId}`);
  }
  return r as HoldRecord;
}
