-- The codes every script answers with: one code, one meaning, in every script. Negative codes are refusals
-- (nothing was changed), zero and positive ones are outcomes. src/redis/script-codes.ts mirrors this table; a
-- test compares the two.
local CODE = {
  UNCHANGED = 0,             -- the step was done already (or is not this caller's to do): nothing changed
  HELD = 1,                  -- units put on hold
  CLAIM_JOINED = 2,          -- a conversion claim was already in progress: joined it
  CLAIMED = 3,               -- a new conversion claim
  HOLD_FOUND = 4,            -- the hold's record, as it stands
  HOLD_ENDED = 5,            -- the hold was ended now (released, or expired)
  CONVERTED = 6,             -- the hold's units moved from held to sold
  CLAIM_ABANDONED = 7,       -- the claim was given up; the hold is a hold again (or expired)
  UNITS_RETURNED = 8,        -- a cancelled order's units are back on sale
  STOCK_SET = 9,
  PRODUCT_LOADED = 10,
  PRODUCT_REPAIRED = 11,     -- a product's counters and indexes were recomputed (reconcile --repair)
  MOVED_OUT = 12,            -- stock left a bucket, journaled for its target (lua/moveStockOut-2.lua)
  MOVED_IN = 13,             -- a journaled move's stock reached its target bucket
  PRODUCT_NOT_FOUND = -1,
  INSUFFICIENT_STOCK = -2,
  CUSTOMER_LIMIT_EXCEEDED = -3,
  HOLD_NOT_FOUND = -4,
  HOLD_CONVERTED = -5,
  STOCK_BELOW_COMMITTED = -6,
  IDEMPOTENCY_KEY_REUSED = -7,
  CUSTOMER_ID_REQUIRED = -8,
  DEADLINE_PASSED = -9,      -- the command reached Redis after its callers gave up; nothing was done
  HOLD_EXPIRED = -10,
  HOLD_RELEASED = -11,
  HOLD_CONVERTING = -12,
  WRONG_HOLD_STATE = -13,    -- the hold is in a state this step does not apply to (its status is returned)
  HOLDS_CHANGED = -14,       -- a hold changed state since the caller read it; nothing changed: read again
  STALE_MOVE = -15,          -- a move from another copy of the product (rebuilt since) or too old: not applied
}
