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
   1  ENDED            the record now (status released, or expired when its time had already run out)
  -4  HOLD_NOT_FOUND
  -5  HOLD_CONVERTED   the hold became an order; record attached
 -12  HOLD_CONVERTING  the hold is being turned into an order; record attached
]]

--- @include "includes/nowMs"
--- @include "includes/customerUnits"
--- @include "includes/endHold"

local hold_id = ARGV[1]
local retain_ms = tonumber(ARGV[2])
if not retain_ms then
  return redis.error_reply('ERR releaseHold: invalid arguments')
end

local raw = redis.call('HGET', KEYS[3], hold_id)
if not raw then
  return {-4, ''}
end
local hold = cjson.decode(raw)
if hold.status == 'converted' then
  return {-5, raw}
elseif hold.status == 'converting' then
  return {-12, raw}
end
if hold.status == 'held' then
  local now = now_ms()
  local status = 'released'
  if hold.expires_at <= now then
    status = 'expired'
  end
  end_hold({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]}, hold_id, hold, status, now, retain_ms)
  return {1, cjson.encode(hold)}
end
return {1, raw}
