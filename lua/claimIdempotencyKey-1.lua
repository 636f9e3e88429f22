--[[
Claims an Idempotency-Key for the fingerprint of the request that first used it, across all products (the
product's own record of the key is kept by reserveStock). Copies of one request find their own fingerprint.

KEYS[1] claim          string  fingerprint of the request that first used the key; expires with ARGV[2]
ARGV[1] fingerprint    of this request (never '')
ARGV[2] time to live   ms

Returns {KEYS[1], previous fingerprint or '' when the key was free (and is now this request's)}. The key comes
back so the caller can tell this reply from another command's: an answer for another key means the connection
is out of step.
]]

local previous = redis.call('GET', KEYS[1])
if not previous then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {KEYS[1], ''}
end
return {KEYS[1], previous}
