--[[
Loads a product from Postgres into Redis when Redis lacks it. Never touches a product already present: its
held and sold counters are live state that only the hold scripts change.

KEYS[1] inventory  hash  stock, held, sold (units), per_customer_limit (units, 0 = none), price_cents,
                         name, stock_version (Postgres's version of `stock`)
ARGV[1] stock (units)
ARGV[2] per-customer limit (units, 0 = none)
ARGV[3] price (cents)
ARGV[4] name
ARGV[5] stock version
ARGV[6] units already sold (from Postgres's orders)

Returns {code, stock version in Redis}:
  10  PRODUCT_LOADED
   0  UNCHANGED          the product was there already (its live counters are left as they are)
(Codes: lua/includes/codes.lua.)
]]

--- @include "includes/codes"

local stock = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local price = tonumber(ARGV[3])
local version = tonumber(ARGV[5])
local sold = tonumber(ARGV[6])
if not stock or stock < 0 or not limit or limit < 0 or not price or price < 0 or not version or not sold or sold < 0 then
  return redis.error_reply('ERR loadProduct: invalid arguments')
end
local current = redis.call('HGET', KEYS[1], 'stock_version')
if current then
  return {CODE.UNCHANGED, tonumber(current)}
end
redis.call('HSET', KEYS[1], 'stock', stock, 'held', 0, 'sold', sold, 'per_customer_limit', limit,
  'price_cents', price, 'name', ARGV[4], 'stock_version', version)
return {CODE.PRODUCT_LOADED, version}
