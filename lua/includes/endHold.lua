-- Ends an active hold: its units go back to sale (and to the customer's allowance), its record stays readable
-- until `retain_ms` from now, then the sweeper purges it. The caller has checked that the hold is active.
-- keys: {inventory, expiries, holds, customer_units, ended}. Needs includes/customerUnits.
local function end_hold(keys, hold_id, hold, status, now, retain_ms)
  redis.call('HINCRBY', keys[1], 'held', -hold.qty)
  redis.call('ZREM', keys[2], hold_id)
  give_back_customer_units(keys[4], hold)
  hold.status = status
  hold.ended_at = now
  redis.call('HSET', keys[3], hold_id, cjson.encode(hold))
  redis.call('ZADD', keys[5], now + retain_ms, hold_id)
end

-- Expires up to `limit` holds whose expiry is at or before `now`; returns how many it expired.
local function expire_due_holds(keys, now, limit, retain_ms)
  local due = redis.call('ZRANGEBYSCORE', keys[2], '-inf', now, 'LIMIT', 0, limit)
  for _, hold_id in ipairs(due) do
    local raw = redis.call('HGET', keys[3], hold_id)
    if raw then
      end_hold(keys, hold_id, cjson.decode(raw), 'expired', now, retain_ms)
    else
      -- An index entry without a record cannot hold units; drop it so it is not seen again.
      redis.call('ZREM', keys[2], hold_id)
    end
  end
  return #due
end
