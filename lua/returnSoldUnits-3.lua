--[[
Puts the units of a cancelled order back on sale (and back in the customer's allowance). Idempotent: the hold
record remembers that its units were returned.

KEYS[1] inventory       hash   stock, held, sold (units), ...
KEYS[2] holds           hash   hold id -> hold record (JSON)
KEYS[3] customer units  hash   customer id -> units held + bought

ARGV[1] hold id of the order

Returns {code, hold status}:
   8  UNITS_RETURNED
   0  UNCHANGED          already returned
  -4  HOLD_NOT_FOUND     the record was purged: nothing is changed rather than risk returning units twice
 -13  WRONG_HOLD_STATE   the hold is not converted (its status is the second element); nothing changed
(Codes: lua/includes/codes.lua.)
]]

--- @include "includes/codes"
--- @include "includes/customerUnits"

local hold_id = ARGV[1]
local raw = redis.call('HGET', KEYS[2], hold_id)
if not raw then
  return {CODE.HOLD_NOT_FOUND, ''}
end
local hold = cjson.decode(raw)
if hold.status ~= 'converted' then
  return {CODE.WRONG_HOLD_STATE, hold.status}
end
if hold.units_returned then
  return {CODE.UNCHANGED, hold.status}
end
redis.call('HINCRBY', KEYS[1], 'sold', -hold.qty)
give_back_customer_units(KEYS[3], hold)
hold.units_returned = true
redis.call('HSET', KEYS[2], hold_id, cjson.encode(hold))
return {CODE.UNITS_RETURNED, hold.status}
