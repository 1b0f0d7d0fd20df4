-- match: completes the waits of this partition that events stored in
-- another satisfy (matchElsewhere in engine.go; a publication matches its
-- own partition's waits itself). Completing a wait twice does nothing: its
-- entry is gone after the first.
-- KEYS[1] the partition's prefix. ARGV[1] now; ARGV[2] JSON array of
-- {id, name, ts} (ts: the event's ts when its doc leaves it out);
-- ARGV[2 + i] the doc of the i-th, as stored.
-- Returns the number of events.
local evs = cjson.decode(ARGV[2])
for i, e in ipairs(evs) do match_waits(e.name, e.id, ARGV[2 + i], e.ts) end
flush()
return #evs
