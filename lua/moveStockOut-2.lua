--[[
The first half of a move of stock between two buckets of one product (src/domain/rebalancer.ts): takes up to
the asked units of this bucket's available stock out of its share and journals the move, in one step, in this
bucket's slot. The second half (lua/moveStockIn-2.lua) adds them to the target bucket's share; until it has run
the units are in no bucket's share, so a crash between the halves can make them unsellable for a while, never
sellable twice. The journal entry is what recovery finishes the move from; it is deleted once the target has
the units.

KEYS[1] inventory   hash   stock (this bucket's share), held, sold (units), generation
KEYS[2] moves out   hash   move id -> JSON {to = target label, units, generation, at (ms, Redis clock)}

ARGV[1] move id       made by the caller; the same id again answers what the first call did
ARGV[2] target label  the bucket the units go to
ARGV[3] units         most units to move (integer >= 1)

Returns {code, units moved, generation of this copy, at (ms)}:
  12  MOVED_OUT          units > 0 left this bucket's share and are journaled
   0  UNCHANGED          no unit available (units 0), or the move id is journaled already (its units)
  -1  PRODUCT_NOT_FOUND
(Codes: lua/includes/codes.lua.)
]]

--- @include "includes/codes"
--- @include "includes/nowMs"

local units = tonumber(ARGV[3])
if #ARGV ~= 3 or ARGV[1] == '' or not tonumber(ARGV[2]) or not units or units < 1 or units ~= math.floor(units) then
  return redis.error_reply('ERR moveStockOut: invalid arguments')
end
local inventory = redis.call('HMGET', KEYS[1], 'stock', 'held', 'sold', 'generation')
if not inventory[1] then
  return {CODE.PRODUCT_NOT_FOUND, 0, 0, 0}
end
local generation = tonumber(inventory[4] or '0')
local journaled = redis.call('HGET', KEYS[2], ARGV[1])
if journaled then
  local move = cjson.decode(journaled)
  return {CODE.UNCHANGED, move.units, move.generation, move.at}
end
local available = tonumber(inventory[1]) - tonumber(inventory[2]) - tonumber(inventory[3])
local moved = math.min(units, available)
if moved <= 0 then
  return {CODE.UNCHANGED, 0, generation, 0}
end
local now = now_ms()
redis.call('HINCRBY', KEYS[1], 'stock', -moved)
redis.call('HSET', KEYS[2], ARGV[1],
  cjson.encode({to = tonumber(ARGV[2]), units = moved, generation = generation, at = now}))
return {CODE.MOVED_OUT, moved, generation, now}
