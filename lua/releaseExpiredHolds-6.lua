--[[
The sweeper's step for one product: expires a batch of holds past their expiry, purges records of holds that
ended longer ago than the retention period, hands back conversion claims whose lease has run out (their process
may have died: recovery decides them from Postgres) and says when this product next needs a sweep. Safe to run from
many instances at once: a hold leaves the expiry index in the same step that releases it, so it is released once.

KEYS[1] inventory       hash   stock, held, sold (units), ...
KEYS[2] hold expiries   zset   hold id -> expires_at (ms); active holds only
KEYS[3] holds           hash   hold id -> hold record (JSON)
KEYS[4] customer units  hash   customer id -> units held + bought
KEYS[5] ended holds     zset   hold id -> time its record is purged (ms)
KEYS[6] conversions     zset   hold id -> end of its claim's lease (ms)

ARGV[1] most holds to expire, and most records to purge, in this step (count)
ARGV[2] how long an ended hold stays readable (ms)
ARGV[3] longest wait before the next sweep of this product (ms): the hold time to live, since no hold made
        after this step can expire sooner than that
ARGV[4] claim lease (ms): a claim handed back is leased again for this long, so it is looked at once a lease

Returns {expired (count), purged (count), next sweep at (ms, Redis clock), hold id, claim id, hold id, ...}:
the pairs are the claims whose lease ran out.
]]

--- @include "includes/nowMs"
--- @include "includes/endHold"

local batch = tonumber(ARGV[1])
local retain_ms = tonumber(ARGV[2])
local max_wait_ms = tonumber(ARGV[3])
local lease_ms = tonumber(ARGV[4])
if not batch or batch < 1 or not retain_ms or not max_wait_ms or not lease_ms then
  return redis.error_reply('ERR releaseExpiredHolds: invalid arguments')
end

local now = now_ms()
local expired = expire_due_holds(PRODUCT_KEYS, now, batch, retain_ms)

local purgeable = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, batch)
if #purgeable > 0 then
  redis.call('HDEL', KEYS[3], unpack(purgeable))
  redis.call('ZREM', KEYS[5], unpack(purgeable))
end

local stale_claims = {}
for _, hold_id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, batch)) do
  local raw = redis.call('HGET', KEYS[3], hold_id)
  if raw then
    redis.call('ZADD', KEYS[6], now + lease_ms, hold_id)
    table.insert(stale_claims, hold_id)
    table.insert(stale_claims, cjson.decode(raw).claim_id or '')
  else
    redis.call('ZREM', KEYS[6], hold_id)
  end
end

local next_sweep = now + max_wait_ms
local next_expiry = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if next_expiry[2] then
  next_sweep = math.min(next_sweep, tonumber(next_expiry[2]))
end
local next_purge = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
if next_purge[2] then
  next_sweep = math.min(next_sweep, tonumber(next_purge[2]))
end
local next_claim = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
if next_claim[2] then
  next_sweep = math.min(next_sweep, tonumber(next_claim[2]))
end
return {expired, #purgeable, next_sweep, unpack(stale_claims)}
