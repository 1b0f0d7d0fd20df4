-- kv_get: GET that honours the engine clock. ARGV[1] now.
-- Returns the value, nil when absent, or WRONGTYPE.
if not live() then return false end
return redis.call('GET', K)
