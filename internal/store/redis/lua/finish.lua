-- finish: ends a run under a lease and publishes what it emits.
-- KEYS[1] engine prefix. ARGV[1] now; ARGV[2] run id; ARGV[3] token;
-- ARGV[4] status; ARGV[5] output (JSON or ''); ARGV[6] error; ARGV[7] JSON
-- array of pubArg to emit.
-- Returns 1, or the error LEASE_LOST.
local r = leased(ARGV[2], ARGV[3])
if not r then return redis.error_reply('LEASE_LOST') end
end_run(r, ARGV[4], ARGV[5], ARGV[6])
publish_all(cjson.decode(ARGV[7]))
flush()
return 1
