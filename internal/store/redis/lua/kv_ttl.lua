-- kv_ttl: the remaining ttl by the engine clock. ARGV[1] now.
-- Returns ms left, -1 for no expiry, -2 when absent.
if not live() then return -2 end
local d = not kv_native and redis.call('GET', D)
if d then return tonumber(d) - NOW end
local p = redis.call('PTTL', K)
if p > 0 then return p end
return -1
