--[[
Puts `qty` units of one product on hold for a buyer, if they are available. The invariant
available = stock - held - sold >= 0 is kept here and nowhere else.

KEYS[1] inventory       hash   stock, held, sold (units), per_customer_limit (units, 0 = none), price_cents
KEYS[2] hold expiries   zset   hold id -> expires_at (ms, Redis clock); active holds only
KEYS[3] holds           hash   hold id -> hold record (JSON)
KEYS[4] customer units  hash   customer id -> units held + bought (only on products with a limit)
KEYS[5] ended holds     zset   hold id -> time its record is purged (ms)
KEYS[6] idempotency     string the stored decision for ARGV[6]'s request; read and written only when ARGV[6] ~= ''

ARGV[1] hold id (made by the caller, so a command sent twice cannot reserve twice)
ARGV[2] qty (units, integer >= 1)
ARGV[3] customer id, or '' for none
ARGV[4] hold time to live (ms)
ARGV[5] most due holds to expire in place when stock looks short (count)
ARGV[6] request fingerprint for the Idempotency-Key, or '' when the request has none
ARGV[7] idempotency record time to live (ms)
ARGV[8] how long an ended hold stays readable (ms)
ARGV[9] deadline (ms, Redis clock): the caller has given up by then, so the script does nothing after it

Returns {code, hold id, a, b, replayed (0|1)}:
   1  HELD                      a = expires_at (ms)
  -1  PRODUCT_NOT_FOUND
  -2  INSUFFICIENT_STOCK        a = available units, b = requested units
  -3  CUSTOMER_LIMIT_EXCEEDED   a = units the customer already has, b = the limit
  -7  IDEMPOTENCY_KEY_REUSED    the key was used for another request
  -8  CUSTOMER_ID_REQUIRED
  -9  DEADLINE_PASSED           the command reached Redis after its caller timed out; nothing was done
With replayed = 1 the reply is the stored decision of the key's first request (HELD, -2 or -3).
]]

--- @include "includes/nowMs"
--- @include "includes/customerUnits"
--- @include "includes/endHold"

local hold_id = ARGV[1]
local qty = tonumber(ARGV[2])
local customer_id = ARGV[3]
local ttl_ms = tonumber(ARGV[4])
local inline_expiry_limit = tonumber(ARGV[5])
local fingerprint = ARGV[6]
local idempotency_ttl_ms = tonumber(ARGV[7])
local retain_ms = tonumber(ARGV[8])
local deadline = tonumber(ARGV[9])
if not qty or qty < 1 or qty ~= math.floor(qty) or not ttl_ms or ttl_ms < 1 or not retain_ms or not deadline then
  return redis.error_reply('ERR reserveStock: invalid arguments')
end

local now = now_ms()
-- A command delayed past its caller's timeout (Redis paused, a slow network) must not hold units nobody
-- was told about.
if now > deadline then
  return {-9, '', 0, 0, 0}
end

if fingerprint ~= '' then
  local stored = redis.call('GET', KEYS[6])
  if stored then
    local decision = cjson.decode(stored)
    if decision.fingerprint ~= fingerprint then
      return {-7, '', 0, 0, 0}
    end
    return {decision.code, decision.hold_id, decision.a, decision.b, 1}
  end
end

-- The same hold id again means the same command was delivered twice: answer what the first did.
local existing = redis.call('HGET', KEYS[3], hold_id)
if existing then
  return {1, hold_id, cjson.decode(existing).expires_at, 0, 0}
end

local inventory = redis.call('HMGET', KEYS[1], 'stock', 'held', 'sold', 'per_customer_limit', 'price_cents')
if not inventory[1] then
  return {-1, '', 0, 0, 0}
end
local stock = tonumber(inventory[1])
local held = tonumber(inventory[2])
local sold = tonumber(inventory[3])
local limit = tonumber(inventory[4])
if limit > 0 and customer_id == '' then
  return {-8, '', 0, 0, 0}
end

local keys = {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]}
if stock - held - sold < qty and expire_due_holds(keys, now, inline_expiry_limit, retain_ms) > 0 then
  -- Holds past their expiry give their units back now rather than when the sweeper comes by.
  held = tonumber(redis.call('HGET', KEYS[1], 'held'))
end

local code, a, b = 1, 0, 0
local available = stock - held - sold
local customer_units = 0
if limit > 0 then
  customer_units = tonumber(redis.call('HGET', KEYS[4], customer_id) or '0')
end
if available < qty then
  code, a, b = -2, available, qty
elseif limit > 0 and customer_units + qty > limit then
  code, a, b = -3, customer_units, limit
else
  local expires_at = now + ttl_ms
  -- Only what is needed, and empty fields left out: this record is most of a hold's memory.
  local hold = {qty = qty, status = 'held', price_cents = tonumber(inventory[5]), expires_at = expires_at}
  if customer_id ~= '' then
    hold.customer_id = customer_id
  end
  if limit > 0 then
    hold.limited = true
  end
  redis.call('HSET', KEYS[3], hold_id, cjson.encode(hold))
  redis.call('ZADD', KEYS[2], expires_at, hold_id)
  redis.call('HINCRBY', KEYS[1], 'held', qty)
  if limit > 0 then
    redis.call('HINCRBY', KEYS[4], customer_id, qty)
  end
  a = expires_at
end

if code ~= 1 then
  hold_id = ''
end
if fingerprint ~= '' then
  local decision = {fingerprint = fingerprint, code = code, hold_id = hold_id, a = a, b = b}
  redis.call('SET', KEYS[6], cjson.encode(decision), 'PX', idempotency_ttl_ms)
end
return {code, hold_id, a, b, 0}
