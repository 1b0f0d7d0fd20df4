-- prune: deletes up to batch runs that ended before cutoff (with their
-- steps), up to batch events received before cutoff that have no unfinished
-- run, and up to batch expired idempotency keys, client ids and rate states.
-- KEYS[1] engine prefix. ARGV[1] now; ARGV[2] cutoff (ms); ARGV[3] batch.
-- Returns how many were deleted.
local cutoff, batch = tonumber(ARGV[2]), tonumber(ARGV[3])
local removed, scanned = 0, 0

-- Finished runs, function by function (the registry 'fns'), through the
-- indexes of the finished statuses, and runs:fn:<fn> for Completed ones,
-- each walk going on where the last call stopped (prune_finished).
for _, fn in ipairs(redis.call('SMEMBERS', P .. 'fns')) do
  for _, st in ipairs({'Completed', 'Failed', 'Cancelled', 'Skipped'}) do
    if removed >= batch or scanned >= 4096 then break end
    local n, sc = prune_finished(fn, st, cutoff, batch - removed, 4096 - scanned, nil, true)
    removed, scanned = removed + n, scanned + sc
  end
end

-- Events, name by name (the registry 'names'); a name whose index is
-- left empty leaves the registry.
local gone = 0
scanned = 0
for _, name in ipairs(redis.call('SMEMBERS', P .. 'names')) do
  if gone >= batch or scanned >= 4096 then break end
  local idx = P .. 'events:name:' .. name
  local offset = 0
  while gone < batch and scanned < 4096 do
    local ms = redis.call('ZRANGEBYLEX', idx, '-', '(' .. pad(cutoff), 'LIMIT', offset, batch - gone)
    if #ms == 0 then break end
    for _, m in ipairs(ms) do
      scanned = scanned + 1
      local id = string.sub(m, 15)
      local busy = false
      for _, rid in ipairs(event_runs(id)) do
        -- A run that is gone (an id the event's string still names) is done.
        local v = redis.call('HMGET', pfx(rid) .. 'run:' .. rid, 'created', 'ended', 'd')
        if (v[1] and not since_created(v[2], v[1], v[3])) or (not v[1] and kept_fields(rid)) then
          busy = true
          break
        end
      end
      if busy then
        offset = offset + 1
      else
        redis.call('DEL', P .. 'event:' .. id, P .. 'runs:ev:' .. id)
        redis.call('ZREM', idx, m)
        gone = gone + 1
      end
    end
  end
  if redis.call('EXISTS', idx) == 0 then redis.call('SREM', P .. 'names', name) end
end
removed = removed + gone

-- The flow-control keys are partition 0's (FC): pruned by its call.
if P ~= FC() then return removed end
for _, e in ipairs({{'idem', 'idemexp'}, {'cid', 'cidexp'}}) do
  local keys = redis.call('ZRANGEBYSCORE', P .. e[2], '-inf', num(NOW), 'LIMIT', 0, batch)
  if #keys > 0 then
    redis.call('HDEL', P .. e[1], unpack(keys))
    redis.call('ZREM', P .. e[2], unpack(keys))
    removed = removed + #keys
  end
end
local rates = redis.call('ZRANGEBYSCORE', P .. 'rate', '-inf', num(NOW), 'LIMIT', 0, batch)
if #rates > 0 then
  redis.call('ZREM', P .. 'rate', unpack(rates))
  removed = removed + #rates
end
return removed
