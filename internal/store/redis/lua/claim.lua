-- claim: leases up to n claimable runs, oldest available first, skipping
-- the runs whose concurrency key is at its limit.
-- KEYS[1] engine prefix. ARGV[1] now; ARGV[2] owner; ARGV[3] n; ARGV[4]
-- lease expiry (ms); ARGV[5] token base (the i-th lease gets base:i).
-- Returns {{run id, token, run hash as a flat list, steps, taken over,
-- trigger event doc}, ...} (see run_steps); taken over is 1 when the run
-- still held a (lapsed) lease that this claim replaced, else 0; the event
-- doc is '' when the event is gone. The flat list is the hash as read,
-- then started and finish_by when the claim wrote them (a later pair
-- wins): the caller sets the status, owner and avail the claim wrote
-- itself, and ignores token and woken.
local owner, n, untl, base = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local out, counts, skipped, scanned = {}, {}, 0, 0
local now_s, untl_s = num(NOW), num(untl)

-- lease leases the run r, a the hash it was read from (as load returns
-- them).
local function lease(r, a)
  local id = r.id
  local k = P .. 'run:' .. id
  -- A run that never started has recorded no steps.
  local steps = set(r.started) and run_steps(r) or {{}, {}}
  local token = base .. ':' .. (#out + 1)
  local taken = set(r.token) and 1 or 0
  index_status(r, 'Running')
  r.owner, r.token, r.avail = owner, token, untl_s
  local fields = {'status', 'Running', 'owner', owner, 'token', token, 'avail', r.avail}
  if not set(r.started) then
    r.started = now_s
    fields[#fields + 1] = 's' -- ms after its creation (since_created)
    fields[#fields + 1] = num(tonumber(now_s) - tonumber(r.created))
  end
  if not set(r.finish_by) and tonumber(r.ftimeout or '0') > 0 then
    r.finish_by = num(tonumber(r.started) + tonumber(r.ftimeout))
    fields[#fields + 1] = 'finish_by'
    fields[#fields + 1] = r.finish_by
  end
  if r.kept then
    -- Kept in its event (load): its hash is written whole, with the lease.
    for i = 1, #a, 2 do
      if a[i] ~= 'status' and a[i] ~= 'avail' then
        fields[#fields + 1] = a[i]
        fields[#fields + 1] = a[i + 1]
      end
    end
  end
  redis.call('HSET', k, unpack(fields))
  if set(r.woken) then
    redis.call('HDEL', k, 'woken')
    r.woken = nil
  end
  redis.call('ZADD', P .. 'queue', r.avail, id)
  if set(r.ckey) then redis.call('ZADD', FC() .. 'conc:' .. r.ckey, r.avail, id) end
  release_key('deb', r.deb, id)
  change('run', '', '', id, r.fn, 'Running')
  local doc = event_doc(r.ev) or ''
  -- The reply adds what follows status, owner, token and avail.
  for i = 9, #fields do a[#a + 1] = fields[i] end
  out[#out + 1] = {id, token, a, steps, taken, doc}
end

while #out < n and scanned < 4096 do
  local limit = n - #out + math.min(skipped, 64)
  local cands = redis.call('ZRANGEBYSCORE', P .. 'queue', '-inf', now_s, 'LIMIT', skipped, limit)
  for _, id in ipairs(cands) do
    scanned = scanned + 1
    local r, a = load(id, true)
    local ok = true
    if not r then
      -- No run to lease: neither a hash nor a line in its event (an
      -- event deleted by hand). Its entry would stop every claim here.
      redis.call('ZREM', P .. 'queue', id)
      ok = false
    elseif set(r.ckey) and tonumber(r.climit or '0') > 0 then
      local cnt = counts[r.ckey]
      if not cnt then
        redis.call('ZREMRANGEBYSCORE', FC() .. 'conc:' .. r.ckey, '-inf', now_s)
        cnt = redis.call('ZCARD', FC() .. 'conc:' .. r.ckey)
      end
      if cnt >= tonumber(r.climit) then
        skipped = skipped + 1
        ok = false
      end
      counts[r.ckey] = ok and cnt + 1 or cnt
    end
    if ok then
      lease(r, a)
      if #out == n then break end
    end
  end
  if #cands < limit then break end
end
flush()
return out
