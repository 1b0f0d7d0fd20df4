-- createruns: creates runs for an event already stored.
-- KEYS[1] engine prefix. ARGV[1] now; ARGV[2] event id; ARGV[3] JSON array of specArg.
-- Returns {{run id, function id, status, existing, skip reason}, ...}, or the error NOT_FOUND.
if redis.call('EXISTS', pfx(ARGV[2]) .. 'event:' .. ARGV[2]) == 0 then return redis.error_reply('NOT_FOUND') end
local refs = create_runs(ARGV[2], cjson.decode(ARGV[3]))
add_event_runs(ARGV[2], refs)
flush()
return refs
