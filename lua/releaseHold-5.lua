--[[
Releases one hold at the buyer's request: its units go back to sale. Releasing an ended hold changes nothing
and answers its current state, so a repeated DELETE is safe.

KEYS[1] inventory       hash   stock, held, sold (units), ...
KEYS[2] hold expiries   zset   hold id -> expires_at (ms); active holds only
KEYS[3] holds           hash   hold id -> hold record (JSON)
KEYS[4] customer units  hash   customer id -> units held + bought
KEYS[5] ended holds     zset   hold id -> time its record is purged (ms)

ARGV[1] hold id
ARGV[2] how long an ended hold stays readable (ms)

Returns {code, hold record JSON}:
   5  HOLD_ENDED       ended now: the record (status released, or expired when its time had already run out)
   4  HOLD_FOUND       it had ended before: its record, unchanged
  -4  HOLD_NOT_FOUND
  -1  PRODUCT_NOT_FOUND  Redis has no copy of the product (lost, or never loaded)
(Codes: lua/includes/codes.lua.)
  -5  HOLD_CONVERTED   the hold became an order; record attached
 -12  HOLD_CONVERTING  the hold is being turned into an order; record attached
]]

--- @include "includes/codes"
--- @include "includes/nowMs"
--- @include "includes/endHold"

local hold_id = ARGV[1]
local retain_ms = tonumber(ARGV[2])
if not retain_ms then
  return redis.error_reply('ERR releaseHold: invalid arguments')
end

local raw = redis.call('HGET', KEYS[3], hold_id)
if not raw and redis.call('EXISTS', KEYS[1]) == 0 then
  return {CODE.PRODUCT_NOT_FOUND, ''}
end
if not raw then
  return {CODE.HOLD_NOT_FOUND, ''}
end
local hold = cjson.decode(raw)
if hold.status == 'converted' then
  return {CODE.HOLD_CONVERTED, raw}
elseif hold.status == 'converting' then
  return {CODE.HOLD_CONVERTING, raw}
end
if hold.status == 'held' then
  local now = now_ms()
  local status = 'released'
  if hold.expires_at <= now then
    status = 'expired'
  end
  end_hold(PRODUCT_KEYS, hold_id, hold, status, now, retain_ms)
  return {CODE.HOLD_ENDED, cjson.encode(hold)}
end
return {CODE.HOLD_FOUND, raw}
