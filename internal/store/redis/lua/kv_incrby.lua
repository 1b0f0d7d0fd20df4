-- kv_incrby: INCRBY; a key it creates gets the ttl. ARGV[1] now; ARGV[2]
-- delta; ARGV[3] ttl (ms, 0: none).
-- Returns the new value, or the errors WRONGTYPE / not an integer.
local existed = live()
local n = redis.call('INCRBY', K, ARGV[2])
if not existed then expire(tonumber(ARGV[3])) end
return n
