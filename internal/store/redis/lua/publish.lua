-- publish: stores events with the runs they trigger and completes the waits
-- they match, all publications in order.
-- KEYS[1] engine prefix. ARGV[1] now (ms); ARGV[2] JSON array of pubArg.
-- Returns, per publication, {event id, 1 if duplicate else 0,
-- {{run id, function id, status, 1 if existing else 0}, ...}}.
local out = publish_all(cjson.decode(ARGV[2]))
flush()
return out
