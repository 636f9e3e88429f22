--[[
Claims an active hold for conversion into an order: its units stay reserved, it leaves the expiry index and
enters the conversion index with a lease. Copies of the same request join the claim in progress (and the order
is made once, in Postgres, keyed by the claim). A hold past its expiry is ended instead.

KEYS[1] inventory       hash   stock, held, sold (units), ...
KEYS[2] hold expiries   zset   hold id -> expires_at (ms); active holds only
KEYS[3] holds           hash   hold id -> hold record (JSON)
KEYS[4] customer units  hash   customer id -> units held + bought
KEYS[5] ended holds     zset   hold id -> time its record is purged (ms)
KEYS[6] conversions     zset   hold id -> end of its claim's lease (ms): when recovery looks at it

ARGV[1] hold id
ARGV[2] claim id to use if the hold is not claimed yet
ARGV[3] claim lease (ms): after it, recovery decides the claim's fate from Postgres
ARGV[4] how long an ended hold stays readable (ms)

Returns {code, claim id, hold record JSON, generation of the product's copy in Redis}:
   3  CLAIMED            a new claim, with ARGV[2]
   2  CLAIM_JOINED       a claim was already in progress: its id
  -4  HOLD_NOT_FOUND
  -1  PRODUCT_NOT_FOUND  Redis has no copy of the product (lost, or never loaded)
  -5  HOLD_CONVERTED     already an order (claim id of the conversion)
 -10  HOLD_EXPIRED       (ended now if it was still counted as active)
 -11  HOLD_RELEASED
(Codes: lua/includes/codes.lua.)
]]

--- @include "includes/codes"
--- @include "includes/nowMs"
--- @include "includes/endHold"

local hold_id = ARGV[1]
local lease_ms = tonumber(ARGV[3])
local retain_ms = tonumber(ARGV[4])
if ARGV[2] == '' or not lease_ms or lease_ms < 1 or not retain_ms then
  return redis.error_reply('ERR claimHold: invalid arguments')
end

local generation = tonumber(redis.call('HGET', KEYS[1], 'generation') or '0')
local raw = redis.call('HGET', KEYS[3], hold_id)
if not raw and generation == 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  return {CODE.PRODUCT_NOT_FOUND, '', '', 0}
end
if not raw then
  return {CODE.HOLD_NOT_FOUND, '', '', generation}
end
local hold = cjson.decode(raw)
if hold.status == 'converting' then
  return {CODE.CLAIM_JOINED, hold.claim_id, raw, generation}
elseif hold.status == 'converted' then
  return {CODE.HOLD_CONVERTED, hold.claim_id or '', raw, generation}
elseif hold.status == 'released' then
  return {CODE.HOLD_RELEASED, '', raw, generation}
elseif hold.status == 'expired' then
  return {CODE.HOLD_EXPIRED, '', raw, generation}
end

local now = now_ms()
if hold.expires_at <= now then
  end_hold(PRODUCT_KEYS, hold_id, hold, 'expired', now, retain_ms)
  return {CODE.HOLD_EXPIRED, '', cjson.encode(hold), generation}
end
hold.status = 'converting'
hold.claim_id = ARGV[2]
local encoded = cjson.encode(hold)
redis.call('HSET', KEYS[3], hold_id, encoded)
redis.call('ZREM', KEYS[2], hold_id)
redis.call('ZADD', KEYS[6], now + lease_ms, hold_id)
return {CODE.CLAIMED, ARGV[2], encoded, generation}
