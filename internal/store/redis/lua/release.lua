-- release: hands a leased run back, claimable now and otherwise unchanged.
-- KEYS[1] engine prefix. ARGV[1] now; ARGV[2] run id; ARGV[3] token.
-- Returns 1, or the error LEASE_LOST.
local r = leased(ARGV[2], ARGV[3])
if not r then return redis.error_reply('LEASE_LOST') end
drop_lease(r)
redis.call('HSET', P .. 'run:' .. r.id, 'avail', num(NOW))
redis.call('ZADD', P .. 'queue', num(NOW), r.id)
change('run', '', '', r.id, r.fn, r.status, '', NOW)
flush()
return 1
