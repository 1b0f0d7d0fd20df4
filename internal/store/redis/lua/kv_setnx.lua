-- kv_setnx: SET NX. ARGV[1] now; ARGV[2] value; ARGV[3] ttl (ms, 0: none).
-- Returns 1 when set, 0 when the key exists.
if live() then return 0 end
redis.call('SET', K, ARGV[2])
expire(tonumber(ARGV[3]))
return 1
