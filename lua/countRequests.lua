--[[
Counts requests against rate limits, for a batch of requests that arrived in the same moment, in order. Each
counter is a fixed window: it starts at a request's first count and expires with the window, so a client's
counters cost Redis one small key per window and limit, and nothing once it stops.

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

local reply = {}
for r = 1, #requests do
  local retry_ms = 0
  for _, counter in ipairs(requests[r]) do
    local key = KEYS[counter[1]]
    local count = redis.call('INCR', key)
    if count == 1 then
      redis.call('PEXPIRE', key, window_ms)
    end
    if count > counter[2] and retry_ms == 0 then
      retry_ms = redis.call('PTTL', key)
      -- A counter without an expiry would refuse for ever: give it one (it cannot happen unless it was edited).
      if retry_ms < 1 then
        redis.call('PEXPIRE', key, window_ms)
        retry_ms = window_ms
      end
    end
  end
  reply[r] = tostring(retry_ms)
end
return table.concat(reply, '\n')
