--[[
Completes a conversion once its order is committed in Postgres: the hold's units move from held to sold (the
customer's allowance keeps counting them, now as bought). Idempotent: a converted hold is left as it is.

KEYS[1] inventory       hash   stock, held, sold (units), ...
KEYS[2] hold expiries   zset   hold id -> expires_at (ms); active holds only
KEYS[3] holds           hash   hold id -> hold record (JSON)
KEYS[4] customer units  hash   customer id -> units held + bought
KEYS[5] ended holds     zset   hold id -> time its record is purged (ms)
KEYS[6] conversions     zset   hold id -> end of its claim's lease (ms)

ARGV[1] hold id
ARGV[2] order id
ARGV[3] how long the converted hold's record stays readable (ms)

Returns {code, hold status}:
   6  CONVERTED
   0  UNCHANGED          it was already converted
  -4  HOLD_NOT_FOUND
 -13  WRONG_HOLD_STATE   the hold is not being converted (its status is the second element); nothing changed
(Codes: lua/includes/codes.lua.)
]]

--- @include "includes/codes"
--- @include "includes/nowMs"

local hold_id = ARGV[1]
local retain_ms = tonumber(ARGV[3])
if ARGV[2] == '' or not retain_ms then
  return redis.error_reply('ERR finishConversion: invalid arguments')
end
local raw = redis.call('HGET', KEYS[3], hold_id)
if not raw then
  return {CODE.HOLD_NOT_FOUND, ''}
end
local hold = cjson.decode(raw)
if hold.status == 'converted' then
  return {CODE.UNCHANGED, 'converted'}
elseif hold.status ~= 'converting' then
  return {CODE.WRONG_HOLD_STATE, hold.status}
end

local now = now_ms()
redis.call('HINCRBY', KEYS[1], 'held', -hold.qty)
redis.call('HINCRBY', KEYS[1], 'sold', hold.qty)
redis.call('ZREM', KEYS[6], hold_id)
hold.status = 'converted'
hold.order_id = ARGV[2]
hold.ended_at = now
redis.call('HSET', KEYS[3], hold_id, cjson.encode(hold))
redis.call('ZADD', KEYS[5], now + retain_ms, hold_id)
return {CODE.CONVERTED, 'converted'}
