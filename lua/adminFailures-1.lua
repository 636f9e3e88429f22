--[[
Counts the wrong admin tokens one client address presented in the current window, and reads the count: the
admin throttle of src/plugins/admin-auth.ts. A fixed window: it starts at an address's first failure and ends
ARGV[1] ms later, with the key.

KEYS[1] failures       string  wrong tokens presented by one address in the window; expires with the window
ARGV[1] window         ms
ARGV[2] add            1: count one more failure; 0: only read

Returns {KEYS[1], failures in the window (count), ms until the window ends (0 when there is none)}. The key comes
back so the caller can tell this reply from another command's.
]]

local failures
if ARGV[2] == '1' then
  failures = redis.call('INCR', KEYS[1])
  if failures == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
else
  failures = tonumber(redis.call('GET', KEYS[1]) or '0')
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then left = 0 end
return {KEYS[1], failures, left}
