--[[
Sets a product's total stock, refusing a value below the units already committed (held + sold), so that
available never goes below zero. Versions come from Postgres, the source of truth: an older version than the
one Redis has is ignored, so a late or repeated write cannot undo a newer one.

KEYS[1] inventory       hash   stock, held, sold (units), stock_version, ...
KEYS[2] hold expiries   zset   hold id -> expires_at (ms); active holds only
KEYS[3] holds           hash   hold id -> hold record (JSON)
KEYS[4] customer units  hash   customer id -> units held + bought
KEYS[5] ended holds     zset   hold id -> time its record is purged (ms)

ARGV[1] new stock (units)
ARGV[2] stock version (from Postgres)
ARGV[3] most due holds to expire first (count)
ARGV[4] how long an ended hold stays readable (ms)

Returns {code, stock, held, sold} as they stand after the call:
   1  STOCK_SET
   0  STALE_VERSION            Redis already has this version or a newer one; nothing changed
  -1  PRODUCT_NOT_FOUND
  -6  STOCK_BELOW_COMMITTED    nothing changed
]]

--- @include "includes/nowMs"
--- @include "includes/customerUnits"
--- @include "includes/endHold"

local stock = tonumber(ARGV[1])
local version = tonumber(ARGV[2])
local inline_expiry_limit = tonumber(ARGV[3])
local retain_ms = tonumber(ARGV[4])
if not stock or stock < 0 or stock ~= math.floor(stock) or not version or not inline_expiry_limit or not retain_ms then
  return redis.error_reply('ERR setStock: invalid arguments')
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1, 0, 0, 0}
end
-- Units of holds already past their expiry are not committed any more.
expire_due_holds({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]}, now_ms(), inline_expiry_limit, retain_ms)

local inventory = redis.call('HMGET', KEYS[1], 'stock', 'held', 'sold', 'stock_version')
local held = tonumber(inventory[2])
local sold = tonumber(inventory[3])
if tonumber(inventory[4]) >= version then
  return {0, tonumber(inventory[1]), held, sold}
end
if stock < held + sold then
  return {-6, tonumber(inventory[1]), held, sold}
end
redis.call('HSET', KEYS[1], 'stock', stock, 'stock_version', version)
return {1, stock, held, sold}
