--[[
Sets a product's total stock, refusing a value below the units already committed (held + sold), so that
available never goes below zero. Versions come from Postgres, the source of truth: an older version than the
one Redis has is ignored, so a late or repeated write cannot undo a newer one.
On a product split into stock buckets this is its first bucket, which keeps the product's total (`total_stock`)
and version: the change of the total lands in this bucket's share, and must fit in what the bucket has
available (the caller moves units here first when it does not).

KEYS[1] inventory       hash   stock, held, sold (units), stock_version, ...
KEYS[2] hold expiries   zset   hold id -> expires_at (ms); active holds only
KEYS[3] holds           hash   hold id -> hold record (JSON)
KEYS[4] customer units  hash   customer id -> units held + bought
KEYS[5] ended holds     zset   hold id -> time its record is purged (ms)

ARGV[1] new stock (units)
ARGV[2] stock version (from Postgres)
ARGV[3] most due holds to expire first (count)
ARGV[4] how long an ended hold stays readable (ms)

Returns {code, stock, held, sold} as they stand after the call (a bucketed product's total stock, and this
bucket's held and sold):
   9  STOCK_SET
   0  UNCHANGED                Redis already has this version or a newer one; nothing changed
  -1  PRODUCT_NOT_FOUND
  -6  STOCK_BELOW_COMMITTED    nothing changed
(Codes: lua/includes/codes.lua.)
]]

--- @include "includes/codes"
--- @include "includes/nowMs"
--- @include "includes/endHold"

local stock = tonumber(ARGV[1])
local version = tonumber(ARGV[2])
local inline_expiry_limit = tonumber(ARGV[3])
local retain_ms = tonumber(ARGV[4])
if not stock or stock < 0 or stock ~= math.floor(stock) or not version or not inline_expiry_limit or not retain_ms then
  return redis.error_reply('ERR setStock: invalid arguments')
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {CODE.PRODUCT_NOT_FOUND, 0, 0, 0}
end
-- Units of holds already past their expiry are not committed any more.
expire_due_holds(PRODUCT_KEYS, now_ms(), inline_expiry_limit, retain_ms)

local inventory = redis.call('HMGET', KEYS[1], 'stock', 'held', 'sold', 'stock_version', 'total_stock')
local held = tonumber(inventory[2])
local sold = tonumber(inventory[3])
local total = tonumber(inventory[5] or inventory[1])
if tonumber(inventory[4]) >= version then
  return {CODE.UNCHANGED, total, held, sold}
end
-- Without buckets the share is the total; with them, the share changes by as much as the total.
local share = tonumber(inventory[1]) + stock - total
if share < held + sold then
  return {CODE.STOCK_BELOW_COMMITTED, total, held, sold}
end
redis.call('HSET', KEYS[1], 'stock', share, 'stock_version', version)
if inventory[5] then
  redis.call('HSET', KEYS[1], 'total_stock', stock)
end
return {CODE.STOCK_SET, stock, held, sold}
