--[[
Hands a sweeper the products whose next sweep is due, and leases them to it: their next sweep moves `lease`
ahead, so other instances skip them meanwhile, and take them over if this one dies before rescheduling them.

KEYS[1] sweep schedule  zset   product id -> next sweep at (ms, Redis clock)
ARGV[1] most products to claim (count)
ARGV[2] lease (ms)

Returns the claimed product ids.
]]

--- @include "includes/nowMs"

local limit = tonumber(ARGV[1])
local lease_ms = tonumber(ARGV[2])
if not limit or limit < 1 or not lease_ms then
  return redis.error_reply('ERR claimDueProducts: invalid arguments')
end
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
for _, product_id in ipairs(due) do
  redis.call('ZADD', KEYS[1], now + lease_ms, product_id)
end
return due
