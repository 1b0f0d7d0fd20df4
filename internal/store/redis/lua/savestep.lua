-- savestep: records a step under a lease and publishes what it emits.
-- KEYS[1] engine prefix. ARGV[1] now; ARGV[2] run id; ARGV[3] token;
-- ARGV[4] step id; ARGV[5] step record (JSON, see stepRecord); ARGV[6] step
-- status; ARGV[7] name of the event a pending wait waits for ('' for none);
-- ARGV[8] the wait (JSON, see waitArg); ARGV[9] JSON array of pubArg to emit.
-- Returns 1, or the error LEASE_LOST.
local r = leased(ARGV[2], ARGV[3])
if not r then return redis.error_reply('LEASE_LOST') end
local id, step = r.id, ARGV[4]
if redis.call('HSET', P .. 'steps:' .. id, step, ARGV[5]) == 1 then
  redis.call('RPUSH', P .. 'steporder:' .. id, step)
end
redis.call('HDEL', P .. 'matched:' .. id, step)
local old = redis.call('HGET', P .. 'runwaits:' .. id, step)
if old then
  redis.call('HDEL', P .. 'waits:' .. old, id .. '\n' .. step)
  redis.call('HDEL', P .. 'runwaits:' .. id, step)
end
if ARGV[7] ~= '' then
  redis.call('HSET', P .. 'waits:' .. ARGV[7], id .. '\n' .. step, ARGV[8])
  redis.call('HSET', P .. 'runwaits:' .. id, step, ARGV[7])
end
change('step', '', '', id, r.fn, ARGV[6], step)
publish_all(cjson.decode(ARGV[9]))
flush()
return 1
