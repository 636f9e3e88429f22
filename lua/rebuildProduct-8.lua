--[[
(Re)builds a product's copy in Redis from Postgres, the ledger: after a data loss (Redis restarted empty, a
FLUSHALL, a failover to a replica that missed writes) or when the product is first loaded. Whatever Redis held
for the product under another generation is dropped: its holds belonged to a world the ledger never saw. The
caller holds the product's row lock in Postgres and took a new generation under it (src/domain/redis-rebuild.ts).
A product split into stock buckets is rebuilt bucket by bucket, all under the one generation: each call builds
one bucket from its share of the ledger, and drops the moves of stock it had journaled or applied (the shares are
counted afresh from Postgres, so a move of the old copy must not add its units again).

KEYS[1] inventory       hash   stock, held, sold (units), per_customer_limit, price_cents, name, stock_version,
                               generation
KEYS[2] hold expiries   zset
KEYS[3] holds           hash   hold id -> hold record (JSON)
KEYS[4] customer units  hash   customer id -> units held + bought
KEYS[5] ended holds     zset   hold id -> time its record is purged (ms)
KEYS[6] conversions     zset
KEYS[7] moves out       hash   (dropped)
KEYS[8] moves in        zset   (dropped)

ARGV[1] generation (from Postgres)
ARGV[2] stock (units; of a bucketed product, this bucket's share)
ARGV[3] per-customer limit (units, 0 = none)
ARGV[4] price (cents)
ARGV[5] name
ARGV[6] stock version
ARGV[7] units sold (live orders; of a bucketed product, those of this bucket's holds)
ARGV[8] customer units of live orders: JSON [[customer id, units], ...]
ARGV[9] holds of live orders: JSON [[hold id, order id, customer id or '', qty, unit price (cents)], ...]
ARGV[10] how long a converted hold's record stays readable (ms)
ARGV[11] buckets: how many stock buckets the product has (1: none), written on its first bucket only
ARGV[12] the product's total stock (units), written with ARGV[11] on the first bucket of a bucketed product

Returns {code, held units dropped, hold records dropped}:
  10  PRODUCT_LOADED   rebuilt under this generation
   0  UNCHANGED        Redis already has this generation; nothing changed
(Codes: lua/includes/codes.lua.)
]]

--- @include "includes/codes"
--- @include "includes/nowMs"

local generation = tonumber(ARGV[1])
local stock = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local price = tonumber(ARGV[4])
local version = tonumber(ARGV[6])
local sold = tonumber(ARGV[7])
local retain_ms = tonumber(ARGV[10])
local buckets = tonumber(ARGV[11])
local total_stock = tonumber(ARGV[12])
local ok_units, customer_units = pcall(cjson.decode, ARGV[8])
local ok_holds, converted = pcall(cjson.decode, ARGV[9])
if not generation or generation < 1 or not stock or stock < 0 or not limit or limit < 0 or not price or price < 0
  or not version or not sold or sold < 0 or not retain_ms or not ok_units or not ok_holds or not buckets
  or buckets < 0 or not total_stock or total_stock < 0 then
  return redis.error_reply('ERR rebuildProduct: invalid arguments')
end
if tonumber(redis.call('HGET', KEYS[1], 'generation') or '0') == generation then
  return {CODE.UNCHANGED, 0, 0}
end

local dropped_units = tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
local dropped_records = redis.call('HLEN', KEYS[3])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
redis.call('HSET', KEYS[1], 'stock', stock, 'held', 0, 'sold', sold, 'per_customer_limit', limit,
  'price_cents', price, 'name', ARGV[5], 'stock_version', version, 'generation', generation)
-- 0 on the other buckets of a bucketed product; 1 (no buckets) leaves the copy exactly as it always was.
if buckets > 1 then
  redis.call('HSET', KEYS[1], 'buckets', buckets, 'total_stock', total_stock)
end
if limit > 0 then
  for _, entry in ipairs(customer_units) do
    redis.call('HSET', KEYS[4], entry[1], entry[2])
  end
end
local now = now_ms()
for _, entry in ipairs(converted) do
  local hold = {qty = entry[4], status = 'converted', price_cents = entry[5], expires_at = now, ended_at = now,
    order_id = tostring(entry[2])}
  if entry[3] ~= '' then
    hold.customer_id = entry[3]
  end
  if limit > 0 then
    hold.limited = true
  end
  redis.call('HSET', KEYS[3], entry[1], cjson.encode(hold))
  redis.call('ZADD', KEYS[5], now + retain_ms, entry[1])
end
return {CODE.PRODUCT_LOADED, dropped_units, dropped_records}
