--- @include "includes/customerUnits"
--- @include "includes/productKeys"

-- Ends an active hold: its units go back to sale (and to the customer's allowance), its record stays readable
-- until `retain_ms` from now, then the sweeper purges it. The caller has checked that the hold is active.
-- keys: PRODUCT_KEYS (or the same five keys in that order).
local function end_hold(keys, hold_id, hold, status, now, retain_ms)
  redis.call('HINCRBY', keys[1], 'held', -hold.qty)
  redis.call('ZREM', keys[2], hold_id)
  give_back_customer_units(keys[4], hold)
  hold.status = status
  hold.ended_at = now
  redis.call('HSET', keys[3], hold_id, cjson.encode(hold))
  redis.call('ZADD', keys[5], now + retain_ms, hold_id)
end

-- Expires up to `limit` holds whose expiry is at or before `now`; returns how many it expired. The same
-- changes as end_hold for each, made with one command per key for the whole batch: the sweeper's speed in an
-- expiry storm is this loop's.
local function expire_due_holds(keys, now, limit, retain_ms)
  local due = redis.call('ZRANGEBYSCORE', keys[2], '-inf', now, 'LIMIT', 0, limit)
  if #due == 0 then
    return 0
  end
  local records = redis.call('HMGET', keys[3], unpack(due))
  local units = 0
  local updates = {}
  local ended = {}
  for i, hold_id in ipairs(due) do
    -- An index entry without a record cannot hold units: it is only dropped from the index.
    if records[i] then
      local hold = cjson.decode(records[i])
      units = units + hold.qty
      give_back_customer_units(keys[4], hold)
      hold.status = 'expired'
      hold.ended_at = now
      table.insert(updates, hold_id)
      table.insert(updates, cjson.encode(hold))
      table.insert(ended, now + retain_ms)
      table.insert(ended, hold_id)
    end
  end
  redis.call('ZREM', keys[2], unpack(due))
  if units > 0 then
    redis.call('HINCRBY', keys[1], 'held', -units)
  end
  if #updates > 0 then
    redis.call('HSET', keys[3], unpack(updates))
    redis.call('ZADD', keys[5], unpack(ended))
  end
  return #due
end
