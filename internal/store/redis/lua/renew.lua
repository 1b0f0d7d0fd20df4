-- renew: extends a lease.
-- KEYS[1] engine prefix. ARGV[1] now; ARGV[2] run id; ARGV[3] token; ARGV[4] new expiry (ms).
-- Returns 1, or the error LEASE_LOST.
local r = leased(ARGV[2], ARGV[3])
if not r then return redis.error_reply('LEASE_LOST') end
redis.call('HSET', P .. 'run:' .. r.id, 'avail', ARGV[4])
redis.call('ZADD', P .. 'queue', ARGV[4], r.id)
if set(r.ckey) then redis.call('ZADD', P .. 'conc:' .. r.ckey, ARGV[4], r.id) end
return 1
