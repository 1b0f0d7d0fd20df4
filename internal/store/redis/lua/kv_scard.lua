-- kv_scard: SCARD. ARGV[1] now. Returns the cardinality, or WRONGTYPE.
if not live() then return 0 end
return redis.call('SCARD', K)
