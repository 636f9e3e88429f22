--[[
Counts requests against rate limits, for a batch of requests that arrived in the same moment, in order. Each
counter is a fixed window: it starts at a request's first count and expires with the window, so a client's
counters cost Redis one small key per window and limit, and nothing once it stops. A call costs Redis one INCRBY
per distinct counter, whatever the number of requests in it; PTTL only for a counter that refuses one.

Called with a variable number of keys (the first argument is their count):
KEYS[1..] counters  string  requests counted in the current window (all under one hash tag, one cluster slot)

ARGV[1] window (ms)
ARGV[2] the requests, one line each, in arrival order; a line is the counters the request counts against, as
        tab-separated pairs `i:limit` (KEYS[i], most requests allowed in a window)

Returns one string: a line per request, in request order: 0 when every counter is within its limit, else the
time (ms) until the first counter over its limit starts a new window. A refused request is counted too, so a
client that keeps hammering stays refused until it pauses for a window.
]]

local window_ms = tonumber(ARGV[1])
if #ARGV ~= 2 or not window_ms or window_ms < 1 then
  return redis.error_reply('ERR countRequests: invalid arguments')
end
local requests = {}
for line in string.gmatch(ARGV[2], '[^\n]+') do
  local counters = {}
  for i, limit in string.gmatch(line, '(%d+):(%d+)') do
    i, limit = tonumber(i), tonumber(limit)
    if i < 1 or i > #KEYS or limit < 1 then
      return redis.error_reply('ERR countRequests: invalid arguments')
    end
    counters[#counters + 1] = {i, limit}
  end
  requests[#requests + 1] = counters
end

-- One INCRBY per counter for the whole batch: the k-th of a counter's n requests saw the count it would have seen
-- alone, (after - n + k), so each is decided exactly as separate INCRs in arrival order would decide it.
local batch_counts = {}
local positions = {}
for r = 1, #requests do
  local at = {}
  for c, counter in ipairs(requests[r]) do
    local i = counter[1]
    batch_counts[i] = (batch_counts[i] or 0) + 1
    at[c] = batch_counts[i]
  end
  positions[r] = at
end
local before = {}
for i, n in pairs(batch_counts) do
  local after = redis.call('INCRBY', KEYS[i], n)
  -- A new counter starts its window here.
  if after == n then
    redis.call('PEXPIRE', KEYS[i], window_ms)
  end
  before[i] = after - n
end

-- Time to wait on a spent counter, asked of Redis once per counter and only when something is refused.
local retry_of = {}
local function retry_ms_of(i)
  local ms = retry_of[i]
  if ms == nil then
    ms = redis.call('PTTL', KEYS[i])
    -- A counter without an expiry would refuse for ever: give it one (it cannot happen unless it was edited).
    if ms < 1 then
      redis.call('PEXPIRE', KEYS[i], window_ms)
      ms = window_ms
    end
    retry_of[i] = ms
  end
  return ms
end

local reply = {}
for r = 1, #requests do
  local retry_ms = 0
  for c, counter in ipairs(requests[r]) do
    local i = counter[1]
    if before[i] + positions[r][c] > counter[2] then
      retry_ms = retry_ms_of(i)
      break
    end
  end
  reply[r] = tostring(retry_ms)
end
return table.concat(reply, '\n')
