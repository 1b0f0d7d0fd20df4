-- kv_sismember: SISMEMBER for each member. ARGV[1] now; ARGV[2...] members.
-- Returns 1 or 0 per member (all 0 when the key is absent), or WRONGTYPE.
local out = {}
if not live() then
  for i = 2, #ARGV do out[i - 1] = 0 end
  return out
end
for i = 2, #ARGV do out[i - 1] = redis.call('SISMEMBER', K, ARGV[i]) end
return out
