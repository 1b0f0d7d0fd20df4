-- cancel: cancels an unfinished run; its lease, if any, is lost.
-- KEYS[1] engine prefix. ARGV[1] now; ARGV[2] run id; ARGV[3] reason.
-- Returns the run hash as a flat list, or the error NOT_FOUND or FINISHED.
local r = load(ARGV[2])
if not r then return redis.error_reply('NOT_FOUND') end
if set(r.ended) then return redis.error_reply('FINISHED') end
end_run(r, 'Cancelled', '', ARGV[3])
r.error = ARGV[3]
flush()
return flat(load(ARGV[2]))
