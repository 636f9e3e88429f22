#!lua flags=no-writes
--[[
Reads one hold as it stands by Redis's clock: a hold past its expiry reads as expired even before the
sweeper has released it.

KEYS[1] holds   hash   hold id -> hold record (JSON)
ARGV[1] hold id

Returns {code, hold record JSON}:
   1  FOUND
  -4  HOLD_NOT_FOUND
]]

--- @include "includes/nowMs"

local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return {-4, ''}
end
local hold = cjson.decode(raw)
if hold.status == 'held' and hold.expires_at <= now_ms() then
  hold.status = 'expired'
  return {1, cjson.encode(hold)}
end
return {1, raw}
