-- suspend: ends a lease; the run is claimable at the given time, or at once
-- when one of its waits matched while it was leased.
-- KEYS[1] engine prefix. ARGV[1] now; ARGV[2] run id; ARGV[3] token;
-- ARGV[4] status; ARGV[5] available at (ms); ARGV[6] attempt.
-- Returns 1, or the error LEASE_LOST.
local r = leased(ARGV[2], ARGV[3])
if not r then return redis.error_reply('LEASE_LOST') end
local st, at = ARGV[4], tonumber(ARGV[5])
if set(r.woken) then
  st = 'Running'
  at = math.min(at, tonumber(r.woken))
end
set_status(r, st)
redis.call('HSET', P .. 'run:' .. r.id, 'attempt', ARGV[6], 'avail', num(at))
drop_lease(r)
redis.call('ZADD', P .. 'queue', num(at), r.id)
change('run', '', '', r.id, r.fn, st, '', at)
flush()
return 1
