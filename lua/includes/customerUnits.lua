-- Gives a customer's allowance back the units of a hold (held, or bought and now cancelled) on a product with
-- a per-customer limit; `customer_units_key` is the product's customer units hash.
local function give_back_customer_units(customer_units_key, hold)
  if hold.limited and hold.customer_id then
    if redis.call('HINCRBY', customer_units_key, hold.customer_id, -hold.qty) <= 0 then
      redis.call('HDEL', customer_units_key, hold.customer_id)
    end
  end
end
