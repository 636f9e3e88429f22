-- The five keys of one product, as every product script takes them in KEYS[1..5] (src/redis/keys.ts):
-- {inventory, hold expiries, holds, customer units, ended holds}.
local PRODUCT_KEYS = {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]}
