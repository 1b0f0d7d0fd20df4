-- kv_sadd: SADD; a set it creates gets the ttl. ARGV[1] now; ARGV[2] ttl
-- (ms, 0: none); ARGV[3...] members.
-- Returns how many members were new, or WRONGTYPE.
local existed = live()
local n = redis.call('SADD', K, unpack(ARGV, 3))
if not existed then expire(tonumber(ARGV[2])) end
return n
