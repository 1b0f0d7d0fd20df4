-- prunefn: deletes up to batch Completed runs of one function that ended
-- before cutoff (with their steps), and the events they leave without any
-- run. An event is found in the event indexes under its run's creation
-- time, as publish stored both at once; an event whose run was created
-- later (a rerun) is left to prune.
-- KEYS[1] engine prefix. ARGV[1] now; ARGV[2] function id; ARGV[3] cutoff
-- (ms); ARGV[4] batch.
-- Returns how many runs and events were deleted.
local fn, cutoff, batch = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local events = 0
-- orphan reports whether no run of event eid is left.
local function orphan(eid)
  for _, rid in ipairs(event_runs(eid)) do
    if run_live(rid) then return false end
  end
  return true
end

local runs = prune_finished(fn, 'Completed', cutoff, batch, math.huge, function(r)
  for _, eid in ipairs(cjson.decode(run_evs(r))) do
    if orphan(eid) then
      local name = event_name(eid)
      if name and redis.call('ZREM', pfx(eid) .. 'events:name:' .. name, run_member(r.created, eid)) == 1 then
        redis.call('DEL', pfx(eid) .. 'event:' .. eid, pfx(eid) .. 'runs:ev:' .. eid)
        events = events + 1
      end
    end
  end
end)
return runs + events
