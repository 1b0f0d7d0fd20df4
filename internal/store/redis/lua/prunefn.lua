-- prunefn: deletes up to batch Completed runs of one function that ended
-- before cutoff (with their steps), and the events they leave without any
-- run. An event is found in the event indexes under its run's creation
-- time, as publish stored both at once; an event whose run was created
-- later (a rerun) is left to prune.
-- KEYS[1] engine prefix. ARGV[1] now; ARGV[2] function id; ARGV[3] cutoff
-- (ms); ARGV[4] batch.
-- Returns how many runs and events were deleted.
local fn, cutoff, batch = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local idx = P .. 'runs:fnst:' .. fn .. ':' .. 'Completed'
local runs, removed, offset = 0, 0, 0
while runs < batch do
  -- A run created at or after cutoff cannot have ended before it.
  local ms = redis.call('ZRANGEBYLEX', idx, '-', '(' .. pad(cutoff), 'LIMIT', offset, batch)
  if #ms == 0 then break end
  for _, m in ipairs(ms) do
    local id = string.sub(m, 15)
    local ended = redis.call('HGET', P .. 'run:' .. id, 'ended')
    local r = ended and tonumber(ended) and tonumber(ended) < cutoff and load(id)
    if r then
      drop_run(id, r)
      runs, removed = runs + 1, removed + 1
      for _, eid in ipairs(cjson.decode(run_evs(r))) do
        if redis.call('EXISTS', P .. 'runs:ev:' .. eid) == 0 then
          local name = event_name(eid)
          if name and redis.call('ZREM', P .. 'events:name:' .. name, run_member(r.created, eid)) == 1 then
            redis.call('DEL', P .. 'event:' .. eid)
            removed = removed + 1
          end
        end
      end
      if runs == batch then break end
    else
      offset = offset + 1
    end
  end
end
return removed
