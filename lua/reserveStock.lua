--[[
Puts units of one product on hold for a batch of buyers' requests, in order, granting each one only if its
units are available. The invariant available = stock - held - sold >= 0 is kept here and nowhere else.
A batch is what concurrent requests for one product sent in the same moment: one call costs Redis one
script run, one read of the inventory and one write per key, whatever the number of holds in it.

Called with a variable number of keys (the first argument is their count):
KEYS[1] inventory       hash   stock, held, sold (units), per_customer_limit (units, 0 = none), price_cents
KEYS[2] hold expiries   zset   hold id -> expires_at (ms, Redis clock); active holds only
KEYS[3] holds           hash   hold id -> hold record (JSON)
KEYS[4] customer units  hash   customer id -> units held + bought (only on products with a limit)
KEYS[5] ended holds     zset   hold id -> time its record is purged (ms)
KEYS[6..] idempotency   string the stored decision for one request's Idempotency-Key (one per such request)

ARGV[1] hold time to live (ms)
ARGV[2] most due holds to expire in place when stock looks short (count)
ARGV[3] idempotency record time to live (ms)
ARGV[4] how long an ended hold stays readable (ms)
ARGV[5] deadline (ms, Redis clock): the callers have given up by then, so the script does nothing after it
ARGV[6] the requests (1..MAX_BATCH), one line each, in arrival order; a line is five tab-separated fields:
  hold id         made by the caller, so a command sent twice cannot reserve twice
  qty             units, integer >= 1
  customer id     or '' for none
  fingerprint     of the request, for its Idempotency-Key; '' when it has none
  key index       i of its idempotency record KEYS[i], or 0 when it has none
(One string rather than five arguments a request: the service spent more time encoding arguments than Redis
spends splitting lines.)

Returns one string: a line per request, in request order, of five tab-separated fields:
code, hold id ('' unless HELD), a, b, replayed (0|1)
   1  HELD                      a = expires_at (ms)
  -1  PRODUCT_NOT_FOUND
  -2  INSUFFICIENT_STOCK        a = available units, b = requested units
  -3  CUSTOMER_LIMIT_EXCEEDED   a = units the customer already has, b = the limit
  -7  IDEMPOTENCY_KEY_REUSED    the key was used for another request
  -8  CUSTOMER_ID_REQUIRED
  -9  DEADLINE_PASSED           the command reached Redis after its callers timed out; nothing was done
With replayed = 1 the answer is the stored decision of the key's first request (HELD, -2 or -3).
(Codes: lua/includes/codes.lua.)
]]

--- @include "includes/codes"
--- @include "includes/nowMs"
--- @include "includes/endHold"

-- The same bound as MAX_HOLD_BATCH in src/settings.ts (test/settings.test.ts checks): ~1 ms of Redis a call.
local MAX_BATCH = 256
local ttl_ms = tonumber(ARGV[1])
local inline_expiry_limit = tonumber(ARGV[2])
local idempotency_ttl_ms = tonumber(ARGV[3])
local retain_ms = tonumber(ARGV[4])
local deadline = tonumber(ARGV[5])
if #ARGV ~= 6 or not ttl_ms or ttl_ms < 1 or not retain_ms or not deadline then
  return redis.error_reply('ERR reserveStock: invalid arguments')
end
-- Everything is checked before the first write: a script is never rolled back.
local requests = {}
local hold_ids = {}
for line in string.gmatch(ARGV[6], '[^\n]+') do
  local hold_id, qty, customer_id, fingerprint, key_index =
    string.match(line, '^([^\t]+)\t(%d+)\t([^\t]*)\t([^\t]*)\t(%d+)$')
  qty, key_index = tonumber(qty), tonumber(key_index)
  if not hold_id or qty < 1 or (key_index ~= 0 and (key_index < 6 or key_index > #KEYS)) then
    return redis.error_reply('ERR reserveStock: invalid arguments')
  end
  local n = #requests + 1
  requests[n] = {hold_id, qty, customer_id, fingerprint, key_index}
  hold_ids[n] = hold_id
end
local n = #requests
if n < 1 or n > MAX_BATCH then
  return redis.error_reply('ERR reserveStock: invalid arguments')
end

local reply = {}
local function answer(code, hold_id, a, b, replayed)
  reply[#reply + 1] = string.format('%d\t%s\t%d\t%d\t%d', code, hold_id, a, b, replayed)
end
local function answer_all(code)
  for _ = 1, n do
    answer(code, '', 0, 0, 0)
  end
  return table.concat(reply, '\n')
end

local now = now_ms()
-- A command delayed past its callers' timeout (Redis paused, a slow network) must not hold units nobody
-- was told about.
if now > deadline then
  return answer_all(CODE.DEADLINE_PASSED)
end

local inventory = redis.call('HMGET', KEYS[1], 'stock', 'held', 'sold', 'per_customer_limit', 'price_cents', 'generation')
if not inventory[1] then
  return answer_all(CODE.PRODUCT_NOT_FOUND)
end
local stock = tonumber(inventory[1])
local held = tonumber(inventory[2])
local sold = tonumber(inventory[3])
local limit = tonumber(inventory[4])
local price_cents = tonumber(inventory[5])
local generation = tonumber(inventory[6] or '0')
local expires_at = now + ttl_ms
local expired_in_place = false

-- The same hold id again means the same command was delivered twice: answer what the first did.
local existing = redis.call('HMGET', KEYS[3], unpack(hold_ids))

local new_records = {}
local new_expiries = {}
local units_granted = 0
for i = 1, n do
  local hold_id, qty, customer_id, fingerprint, key_index = unpack(requests[i])
  local code, a, b, replayed = CODE.HELD, 0, 0, 0
  local decided = false

  if key_index ~= 0 then
    local stored = redis.call('GET', KEYS[key_index])
    local decision = stored and cjson.decode(stored)
    -- A decision from before the product was rebuilt names a hold that is gone: decide afresh.
    if decision and (decision.generation or 0) == generation then
      decided = true
      if decision.fingerprint ~= fingerprint then
        code, hold_id = CODE.IDEMPOTENCY_KEY_REUSED, ''
      else
        code, hold_id, a, b, replayed = decision.code, decision.hold_id, decision.a, decision.b, 1
      end
    end
  end
  if not decided and existing[i] then
    decided = true
    a = cjson.decode(existing[i]).expires_at
  end
  if not decided and limit > 0 and customer_id == '' then
    decided = true
    code, hold_id = CODE.CUSTOMER_ID_REQUIRED, ''
  end

  if not decided then
    if stock - held - sold < qty and not expired_in_place then
      -- Holds past their expiry give their units back now rather than when the sweeper comes by. The holds
      -- granted earlier in this batch are not written yet and not due, so they are not touched.
      expired_in_place = true
      if expire_due_holds(PRODUCT_KEYS, now, inline_expiry_limit, retain_ms) > 0 then
        held = tonumber(redis.call('HGET', KEYS[1], 'held')) + units_granted
      end
    end
    local available = stock - held - sold
    local customer_units = 0
    if limit > 0 then
      customer_units = tonumber(redis.call('HGET', KEYS[4], customer_id) or '0')
    end
    if available < qty then
      code, a, b = CODE.INSUFFICIENT_STOCK, available, qty
    elseif limit > 0 and customer_units + qty > limit then
      code, a, b = CODE.CUSTOMER_LIMIT_EXCEEDED, customer_units, limit
    else
      -- Only what is needed, and empty fields left out: this record is most of a hold's memory.
      local hold = {qty = qty, status = 'held', price_cents = price_cents, expires_at = expires_at}
      if customer_id ~= '' then
        hold.customer_id = customer_id
      end
      if limit > 0 then
        hold.limited = true
        redis.call('HINCRBY', KEYS[4], customer_id, qty)
      end
      table.insert(new_records, hold_id)
      table.insert(new_records, cjson.encode(hold))
      table.insert(new_expiries, expires_at)
      table.insert(new_expiries, hold_id)
      held = held + qty
      units_granted = units_granted + qty
      a = expires_at
    end
    if code ~= CODE.HELD then
      hold_id = ''
    end
    if key_index ~= 0 then
      local decision = {fingerprint = fingerprint, code = code, hold_id = hold_id, a = a, b = b, generation = generation}
      redis.call('SET', KEYS[key_index], cjson.encode(decision), 'PX', idempotency_ttl_ms)
    end
  end

  answer(code, hold_id, a, b, replayed)
end

if units_granted > 0 then
  redis.call('HSET', KEYS[3], unpack(new_records))
  redis.call('ZADD', KEYS[2], unpack(new_expiries))
  redis.call('HINCRBY', KEYS[1], 'held', units_granted)
end
return table.concat(reply, '\n')
