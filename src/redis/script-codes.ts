/**
 * The codes the Lua scripts answer with, mirroring lua/includes/codes.lua one for one (a test compares them):
 * one code, one meaning, in every script. Negative codes are refusals (nothing changed); zero and positive ones
 * are outcomes. Only src/redis/commands.ts reads them: everything above it sees decoded outcomes.
 */
export enum ScriptCode {
  UNCHANGED = 0,
  HELD = 1,
  CLAIM_JOINED = 2,
  CLAIMED = 3,
  HOLD_FOUND = 4,
  HOLD_ENDED = 5,
  CONVERTED = 6,
  CLAIM_ABANDONED = 7,
  UNITS_RETURNED = 8,
  STOCK_SET = 9,
  PRODUCT_LOADED = 10,
  PRODUCT_REPAIRED = 11,
  MOVED_OUT = 12,
  MOVED_IN = 13,
  PRODUCT_NOT_FOUND = -1,
  INSUFFICIENT_STOCK = -2,
  CUSTOMER_LIMIT_EXCEEDED = -3,
  HOLD_NOT_FOUND = -4,
  HOLD_CONVERTED = -5,
  STOCK_BELOW_COMMITTED = -6,
  IDEMPOTENCY_KEY_REUSED = -7,
  CUSTOMER_ID_REQUIRED = -8,
  DEADLINE_PASSED = -9,
  HOLD_EXPIRED = -10,
  HOLD_RELEASED = -11,
  HOLD_CONVERTING = -12,
  WRONG_HOLD_STATE = -13,
  HOLDS_CHANGED = -14,
  STALE_MOVE = -15,
}
