-- publish: stores events with the runs they trigger and completes the waits
-- they match, all publications in order, each at its own time "at".
-- KEYS[1] engine prefix. ARGV[1] now (ms); ARGV[2] JSON array of pubArg
-- without their doc; ARGV[2 + i] the doc of the i-th (pubItem in engine.go).
-- Returns, per publication, {event id, 1 if duplicate else 0,
-- {{run id, function id, status, 1 if existing else 0, skip reason or ''}, ...}}.
local out = {}
for i, p in ipairs(cjson.decode(ARGV[2])) do
  NOW = p.at
  p.doc = ARGV[2 + i]
  out[i] = publish_one(p)
end
flush()
return out
