-- kv_smembers: SMEMBERS. ARGV[1] now. Returns the members, or WRONGTYPE.
if not live() then return {} end
return redis.call('SMEMBERS', K)
