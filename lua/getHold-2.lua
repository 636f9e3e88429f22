#!lua flags=no-writes
--[[
Reads one hold as it stands by Redis's clock: a hold past its expiry reads as expired even before the
sweeper has released it.

KEYS[1] holds       hash   hold id -> hold record (JSON)
KEYS[2] inventory   hash   (only whether it exists: without it, Redis lost the product)
ARGV[1] hold id

Returns {code, hold record JSON}:
   4  HOLD_FOUND
  -4  HOLD_NOT_FOUND
  -1  PRODUCT_NOT_FOUND  Redis has no copy of the product (lost, or never loaded): the hold cannot be judged
(Codes: lua/includes/codes.lua.)
]]

--- @include "includes/codes"
--- @include "includes/nowMs"

local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw and redis.call('EXISTS', KEYS[2]) == 0 then
  return {CODE.PRODUCT_NOT_FOUND, ''}
end
if not raw then
  return {CODE.HOLD_NOT_FOUND, ''}
end
local hold = cjson.decode(raw)
if hold.status == 'held' and hold.expires_at <= now_ms() then
  hold.status = 'expired'
  return {CODE.HOLD_FOUND, cjson.encode(hold)}
end
return {CODE.HOLD_FOUND, raw}
