-- kv_set: SET, replacing the ttl. ARGV[1] now; ARGV[2] value; ARGV[3] ttl (ms, 0: none).
-- Returns 1.
redis.call('SET', K, ARGV[2])
expire(tonumber(ARGV[3]))
return 1
