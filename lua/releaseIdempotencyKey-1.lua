--[[
Gives back an Idempotency-Key claimed by lua/claimIdempotencyKey-1.lua for a request that was then refused
before anything was decided (its product does not exist, or it needs a customer it did not name): a 4xx leaves
nothing behind, and the key can be used again.

KEYS[1] claim          string  fingerprint of the request that claimed the key
ARGV[1] fingerprint    of the refused request: the claim is removed only if it is still this request's

Returns 1 when the claim was removed, 0 when it was another request's or gone already.
]]

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
