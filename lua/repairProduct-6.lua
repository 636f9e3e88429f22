--[[
Repairs one product's counters and indexes (npm run reconcile -- --repair). The caller holds the product's row
lock in Postgres, so no stock change, no new order and no reload of the product runs meanwhile; holds, releases
and sweeps do run, which is why `held`, the customers' held units and the indexes are recomputed here, from the
hold records, in the same step that writes them. `sold` and the customers' bought units come from Postgres,
adjusted for the orders whose units are between the two stores (listed in ARGV[5], each checked here).

KEYS[1] inventory       hash   stock, held, sold (units), per_customer_limit (units, 0 = none), stock_version
KEYS[2] hold expiries   zset   hold id -> expires_at (ms); active holds only
KEYS[3] holds           hash   hold id -> hold record (JSON)
KEYS[4] customer units  hash   customer id -> units held + bought (only on products with a limit)
KEYS[5] ended holds     zset   hold id -> time its record is purged (ms) (not changed)
KEYS[6] conversions     zset   hold id under conversion -> end of its claim's lease (ms)

ARGV[1] stock (units, Postgres's products.stock)
ARGV[2] stock version (Postgres's products.stock_version)
ARGV[3] units of the product's live orders in Postgres (SOLD_ORDER_STATUSES)
ARGV[4] those units per customer, one line each: customer id, tab, units ('' for none, and on a product
        without a per-customer limit)
ARGV[5] holds whose order's units are in flight between the stores, one line each: hold id, tab, kind
  converting   the order is committed but the hold is still converting: its units count in `held`, not yet in
               `sold` (and once, not twice, in the customer's units)
  unreturned   the order is cancelled but its units are not returned yet: they still count in `sold`

Returns {code, ...}:
  11  PRODUCT_REPAIRED   {11, stock, held, sold as found, stock, held, sold as written, customers corrected,
                          holds put back in an index, index entries dropped}
  -1  PRODUCT_NOT_FOUND  the inventory is missing (load the product first); nothing changed
 -14  HOLDS_CHANGED      {-14, hold id}: a hold of ARGV[5] is not in the state listed any more (a conversion or a
                         return finished meanwhile); nothing changed: read again and retry
(Codes: lua/includes/codes.lua.)
]]

--- @include "includes/codes"
--- @include "includes/nowMs"

local stock = tonumber(ARGV[1])
local version = tonumber(ARGV[2])
local live_units = tonumber(ARGV[3])
if not stock or stock < 0 or not version or not live_units or live_units < 0 then
  return redis.error_reply('ERR repairProduct: invalid arguments')
end
local inventory = redis.call('HMGET', KEYS[1], 'stock', 'held', 'sold')
if not inventory[1] then
  return {CODE.PRODUCT_NOT_FOUND}
end

-- Everything is checked before the first write: a script is never rolled back.
local bought = {}
for line in string.gmatch(ARGV[4], '[^\n]+') do
  local customer_id, units = string.match(line, '^([^\t]+)\t(%d+)$')
  if not customer_id then
    return redis.error_reply('ERR repairProduct: invalid arguments')
  end
  bought[customer_id] = (bought[customer_id] or 0) + tonumber(units)
end
local sold = live_units
for line in string.gmatch(ARGV[5], '[^\n]+') do
  local hold_id, kind = string.match(line, '^([^\t]+)\t(%a+)$')
  if not hold_id or (kind ~= 'converting' and kind ~= 'unreturned') then
    return redis.error_reply('ERR repairProduct: invalid arguments')
  end
  local raw = redis.call('HGET', KEYS[3], hold_id)
  local hold = raw and cjson.decode(raw)
  local still
  if kind == 'converting' then
    still = hold and hold.status == 'converting'
  else
    still = hold and hold.status == 'converted' and not hold.units_returned
  end
  if not still then
    return {CODE.HOLDS_CHANGED, hold_id}
  end
  local sign = kind == 'converting' and -1 or 1
  sold = sold + sign * hold.qty
  if hold.limited and hold.customer_id then
    bought[hold.customer_id] = (bought[hold.customer_id] or 0) + sign * hold.qty
  end
end

-- held, and each customer's held units, from the records as they are now.
local now = now_ms()
local held = 0
local units = bought -- bought units, then each customer's held units added
local reindexed = 0
local active = {}
local records = redis.call('HGETALL', KEYS[3])
for i = 1, #records, 2 do
  local hold_id = records[i]
  local hold = cjson.decode(records[i + 1])
  if hold.status == 'held' or hold.status == 'converting' then
    active[hold_id] = hold.status
    held = held + hold.qty
    if hold.limited and hold.customer_id then
      units[hold.customer_id] = (units[hold.customer_id] or 0) + hold.qty
    end
    -- Every active hold is in one index, so the sweeper expires it or recovery decides its conversion.
    if hold.status == 'held' and not redis.call('ZSCORE', KEYS[2], hold_id) then
      redis.call('ZADD', KEYS[2], hold.expires_at, hold_id)
      reindexed = reindexed + 1
    elseif hold.status == 'converting' and not redis.call('ZSCORE', KEYS[6], hold_id) then
      -- A lease already over: recovery decides it from Postgres on its next pass.
      redis.call('ZADD', KEYS[6], now, hold_id)
      reindexed = reindexed + 1
    end
  end
end

-- Index entries without an active hold of the right state cannot hold units: dropped.
local dropped = 0
local function drop_stale(key, status)
  local members = redis.call('ZRANGE', KEYS[key], 0, -1)
  for _, hold_id in ipairs(members) do
    if active[hold_id] ~= status then
      redis.call('ZREM', KEYS[key], hold_id)
      dropped = dropped + 1
    end
  end
end
drop_stale(2, 'held')
drop_stale(6, 'converting')

-- On a product without a limit nothing counts (no record is limited, ARGV[4] is empty): the hash empties.
local customers = 0
local stored = redis.call('HGETALL', KEYS[4])
local seen = {}
for i = 1, #stored, 2 do
  local customer_id, value = stored[i], tonumber(stored[i + 1])
  seen[customer_id] = true
  local expected = units[customer_id] or 0
  if expected <= 0 then
    redis.call('HDEL', KEYS[4], customer_id)
    customers = customers + 1
  elseif expected ~= value then
    redis.call('HSET', KEYS[4], customer_id, expected)
    customers = customers + 1
  end
end
for customer_id, expected in pairs(units) do
  if not seen[customer_id] and expected > 0 then
    redis.call('HSET', KEYS[4], customer_id, expected)
    customers = customers + 1
  end
end

redis.call('HSET', KEYS[1], 'stock', stock, 'stock_version', version, 'held', held, 'sold', sold)
return {CODE.PRODUCT_REPAIRED, tonumber(inventory[1]), tonumber(inventory[2] or '0'), tonumber(inventory[3] or '0'),
  stock, held, sold, customers, reindexed, dropped}
