-- Redis's own clock in milliseconds: every instance of the service agrees on it, whatever its local clock says.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
