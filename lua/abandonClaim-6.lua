--[[
Gives up a conversion claim that Postgres has recorded as abandoned (its process died before committing an
order, and no order can be committed for it any more). The hold goes back to being an ordinary hold until its
expiry, or ends as expired if that has passed.

KEYS[1] inventory       hash   stock, held, sold (units), ...
KEYS[2] hold expiries   zset   hold id -> expires_at (ms); active holds only
KEYS[3] holds           hash   hold id -> hold record (JSON)
KEYS[4] customer units  hash   customer id -> units held + bought
KEYS[5] ended holds     zset   hold id -> time its record is purged (ms)
KEYS[6] conversions     zset   hold id -> end of its claim's lease (ms)

ARGV[1] hold id
ARGV[2] claim id
ARGV[3] how long an ended hold stays readable (ms)

Returns {code, hold status after the call}:
   7  CLAIM_ABANDONED    status held or expired
   0  UNCHANGED          the hold is not under this claim (any more)
  -4  HOLD_NOT_FOUND
(Codes: lua/includes/codes.lua.)
]]

--- @include "includes/codes"
--- @include "includes/nowMs"
--- @include "includes/endHold"

local hold_id = ARGV[1]
local retain_ms = tonumber(ARGV[3])
if ARGV[2] == '' or not retain_ms then
  return redis.error_reply('ERR abandonClaim: invalid arguments')
end
local raw = redis.call('HGET', KEYS[3], hold_id)
if not raw then
  return {CODE.HOLD_NOT_FOUND, ''}
end
local hold = cjson.decode(raw)
if hold.status ~= 'converting' or hold.claim_id ~= ARGV[2] then
  return {CODE.UNCHANGED, hold.status}
end

local now = now_ms()
redis.call('ZREM', KEYS[6], hold_id)
hold.status = 'held'
hold.claim_id = nil
if hold.expires_at > now then
  redis.call('HSET', KEYS[3], hold_id, cjson.encode(hold))
  redis.call('ZADD', KEYS[2], hold.expires_at, hold_id)
  return {CODE.CLAIM_ABANDONED, 'held'}
end
end_hold(PRODUCT_KEYS, hold_id, hold, 'expired', now, retain_ms)
return {CODE.CLAIM_ABANDONED, 'expired'}
