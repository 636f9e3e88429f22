--[[
The second half of a move of stock between two buckets of one product: adds the units a journaled move took
out of its source bucket (lua/moveStockOut-2.lua) to this bucket's share, once per move id, whoever sends it
(the mover, or recovery after the mover died) and however often.

KEYS[1] inventory   hash   stock (this bucket's share), generation
KEYS[2] moves in    zset   move id -> when it was applied here (ms, Redis clock)

ARGV[1] move id
ARGV[2] units                (integer >= 1)
ARGV[3] generation           of the source bucket's copy when the units left it
ARGV[4] at                   when the units left the source (ms, Redis clock)
ARGV[5] memory (ms)          how long applied move ids are remembered; a move older than half of it is not
                             applied (the other half covers clock differences between two shards)

Returns {code}:
  13  MOVED_IN           the units are in this bucket's share now
   0  UNCHANGED          applied before
 -15  STALE_MOVE         not applied: the move was made in another copy of the product (a rebuild from
                         Postgres since has counted every unit afresh), or it is older than the memory (it may
                         have been applied and forgotten: better a few units unsellable, found by reconcile,
                         than sold twice)
  -1  PRODUCT_NOT_FOUND  this bucket's copy is missing (the rebuild of the product will count the units)
(Codes: lua/includes/codes.lua.)
]]

--- @include "includes/codes"
--- @include "includes/nowMs"

local units = tonumber(ARGV[2])
local generation = tonumber(ARGV[3])
local at = tonumber(ARGV[4])
local memory_ms = tonumber(ARGV[5])
if #ARGV ~= 5 or ARGV[1] == '' or not units or units < 1 or units ~= math.floor(units) or not generation
  or not at or not memory_ms or memory_ms < 1 then
  return redis.error_reply('ERR moveStockIn: invalid arguments')
end
local current = redis.call('HGET', KEYS[1], 'generation')
if not current then
  return {CODE.PRODUCT_NOT_FOUND}
end
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return {CODE.UNCHANGED}
end
local now = now_ms()
if tonumber(current) ~= generation or now - at >= memory_ms / 2 then
  return {CODE.STALE_MOVE}
end
redis.call('HINCRBY', KEYS[1], 'stock', units)
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - memory_ms)
return {CODE.MOVED_IN}
