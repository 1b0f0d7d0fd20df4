-- common: the helpers every engine script starts with.
--
-- KEYS[1] is the engine prefix with its hash tag (e.g. "cyberdrew:{engine}:").
-- Every key a script touches is KEYS[1] followed by one of the names listed
-- in keys.go, so they all share one Cluster slot; the scripts build those
-- names from KEYS[1] because run and event ids are only known inside them.
-- ARGV[1] is now, in unix milliseconds by the caller's clock (never TIME).
--
-- The same code runs two ways (scripts.go): as a script (EVALSHA), this
-- file then the script's own, and as a function of the engine's library
-- (FCALL, Redis 7), where this file runs once when the library loads and
-- each script's own file is the body of a function. Either way every call
-- starts with begin, which sets everything a call may change: a variable
-- that outlives a call must be declared here and set there.
local P, NOW, PARTS
local changes, zq, zkeys, stkeys, registered, nowaits
local now_at, now_num, now_pad -- now_cached
local kept_docs -- event id -> the event's JSON, read by kept_fields (event_doc)

local function begin(keys, argv)
  P, NOW, PARTS = keys[1], tonumber(argv[1]), nil
  changes, zq, zkeys, stkeys, nowaits = {}, {}, {}, {}, {}
  now_at = nil
  registered = {fns = {}, names = {}}
  kept_docs = {}
end

-- Partitions (store.Store.Partitions; keys.go). A partitioned keyspace's
-- prefixes end in the hash tag {engine:<i>/<n>}, any other prefix is the
-- whole keyspace's. parts returns every partition's prefix (found once
-- per call, from P), pfx the prefix of the partition an id belongs to (the
-- value of its last character in Crockford's base32, mod n:
-- store.PartitionOf). A script runs in the partition its caller names
-- (P); on one server it may reach into another for an event a rerun's run
-- does not share a partition with (pfx). The waits of other partitions
-- an event matches, and the emits a run stores in another partition, are
-- the caller's (matchElsewhere, emitArgs in engine.go).
local crockford -- digit -> value, built on first use (a constant)

local function parts()
  if PARTS then return PARTS end
  local i = string.find(P, '{engine:', 1, true)
  if not i then
    PARTS = {P}
    return PARTS
  end
  local base, n = string.sub(P, 1, i - 1), string.match(P, '/(%d+)}:$', i)
  PARTS = {}
  for i = 0, tonumber(n) - 1 do PARTS[i + 1] = base .. '{engine:' .. i .. '/' .. n .. '}:' end
  return PARTS
end

local function digits()
  if not crockford then
    crockford = {}
    for i = 1, 32 do crockford[string.sub('0123456789ABCDEFGHJKMNPQRSTVWXYZ', i, i)] = i - 1 end
  end
  return crockford
end

local function pfx(id)
  local ps = parts()
  if #ps == 1 then return P end
  return ps[(digits()[string.sub(id, -1)] or 0) % #ps + 1]
end

-- id_time is the time (unix ms) in the ULID id, as ulidTime in event.go:
-- for 26 digits of Crockford's base32 in upper case, the first at most 7;
-- nil for any other id.
local function id_time(id)
  if #id ~= 26 or string.find(id, '[^0-9A-HJKMNP-TV-Z]') or string.byte(id, 1) > 55 then return nil end
  local d, t = digits(), 0
  for i = 1, 10 do t = t * 32 + d[string.sub(id, i, i)] end
  return t
end

-- FC is the prefix of the flow-control keys (idempotency, client ids,
-- rate limits, singleton, debounce and concurrency keys): partition 0's,
-- wherever the run they decide on is (on a Redis Cluster the engine puts
-- every such run in partition 0: store.Publication.Pinned).
local function FC() return parts()[1] end

-- num formats a number exactly: integers (times in ms, counts) with %d,
-- which is the same text as %.17g below 1e17 and far cheaper, the rest
-- with %.17g.
local function num(x)
  if x % 1 == 0 and x > -1e17 and x < 1e17 then return string.format('%d', x) end
  return string.format('%.17g', x)
end
local function pad(ms) return string.format('%013d', ms) end
local function member(ms, id) return pad(ms) .. ':' .. id end

-- now_text is num(NOW) and now_member(id) member(NOW, id), each formatted
-- once for every value NOW takes (a publish script stores its runs at
-- the time of their publication); begin forgets them.
local function now_cached()
  if now_at ~= NOW then now_at, now_num, now_pad = NOW, num(NOW), pad(NOW) end
end
local function now_text()
  now_cached()
  return now_num
end
local function now_member(id)
  now_cached()
  return now_pad .. ':' .. id
end

-- put2 sets t[n + 1], t[n + 2] to a, b and returns n + 2: a field and its
-- value appended to a list of HSET arguments.
local function put2(t, n, a, b)
  t[n + 1], t[n + 2] = a, b
  return n + 2
end

-- run_member is member(tonumber(created), id) for created as num wrote
-- it: a 13-character integer is already padded, so it is used as it is.
local function run_member(created, id)
  if #created == 13 then return created .. ':' .. id end
  return member(tonumber(created), id)
end
local function set(v) return v ~= nil and v ~= false and v ~= '' end

-- change queues a notification; flush publishes them all as one message
-- (decodeChanges in notify.go): now, then one line per change, its fields
-- kind, event id, event name, run id, function id, status, step id and
-- available at, separated by tabs. A field that holds a tab, a newline or
-- a backslash has them escaped (\t, \n, \\); kinds, statuses and times
-- never do. Plain text costs a fraction of cjson.encode here and of
-- encoding/json in every daemon that reads it.
local escapes = {['\t'] = '\\t', ['\n'] = '\\n', ['\\'] = '\\\\'}

local function field(v)
  if not v then return '' end
  if string.find(v, '[\t\n\\]') then return (string.gsub(v, '[\t\n\\]', escapes)) end
  return v
end

local function change(kind, ev, evname, run, fn, status, step, avail)
  local a = ''
  if avail then a = num(avail) end
  changes[#changes + 1] = kind .. '\t' .. field(ev) .. '\t' .. field(evname) .. '\t' .. field(run) .. '\t' ..
    field(fn) .. '\t' .. (status or '') .. '\t' .. field(step) .. '\t' .. a
end

-- zadd and zrem queue writes to an index sorted set (events,
-- events:name:*, runs:fn:*, runs:fnst:*, runs:ev:*,
-- ended), so a script that moves many runs or stores many events sends one
-- ZADD or ZREM per index and stretch of like writes (zflush), in the order
-- they were queued. No script reads those indexes after writing them. The
-- queue, conc:*, rate and expiry sets are read by the scripts and written
-- at once. They are queued in zq (key -> writes) and zkeys (the keys in
-- first-use order).

local function zqueue(key, cmd, a, b)
  local q = zq[key]
  if not q then
    q = {}
    zq[key] = q
    zkeys[#zkeys + 1] = key
  end
  local last = q[#q]
  if not last or last.cmd ~= cmd then
    last = {cmd = cmd, args = {}}
    q[#q + 1] = last
  end
  local args = last.args
  args[#args + 1] = a
  if b then args[#args + 1] = b end
end

local function zadd(key, score, m) zqueue(key, 'ZADD', score, m) end

local function zrem(key, m) zqueue(key, 'ZREM', m) end

local function zflush()
  for _, key in ipairs(zkeys) do
    for _, w in ipairs(zq[key]) do
      local args = w.args
      for i = 1, #args, 1000 do
        redis.call(w.cmd, key, unpack(args, i, math.min(i + 999, #args)))
      end
    end
  end
  zq, zkeys = {}, {}
end

-- flush writes the queued index members and publishes the queued changes;
-- every script that writes calls it before it returns.
local function flush()
  zflush()
  if #changes > 0 then
    redis.call('PUBLISH', P .. 'changes', num(NOW) .. '\n' .. table.concat(changes, '\n'))
  end
end

-- A run's start and end are stored as ms after its creation, s and d
-- (a few bytes where a time took 13 digits; keys.go); runs written before
-- hold started and ended, unix ms. since_created reads one of them, as
-- num writes a time: abs when set (the earlier form), else created plus
-- lag, else nil (sinceCreated in read.go).
local function since_created(abs, created, lag)
  if set(abs) then return abs end
  if not set(lag) then return nil end
  return num(tonumber(created) + tonumber(lag))
end

-- An event is a string, event:<id>: the event as JSON (which holds no
-- raw newline), then a newline before the id of each run it fed, in the
-- order they were added (layout 4; keys.go). Events stored by earlier
-- versions are hashes {doc, name}, or strings of the JSON alone, with
-- their runs in the sorted set runs:ev:<id>; event_doc, event_name and
-- event_runs read every form.

-- event_value returns what event:<id> holds as a string (an earlier
-- version's hash: its doc), false when there is no such event, and
-- whether it is a hash.
local function event_value(id)
  local k = pfx(id) .. 'event:' .. id
  local v = redis.pcall('GET', k)
  if type(v) == 'table' and v.err then return redis.call('HGET', k, 'doc'), true end
  return v, false
end

-- A run that shares its event's id, created queued without flow control
-- or lease (plain_spec), is kept in its event until a script loads it
-- (layout 7; keys.go): its event's line for it is "\t<created>\t<fn>"
-- (then "\t<ftimeout>" when set) in place of its id, its queue entry holds
-- when it is available, and run:<id> is not written. <created> is "+<ms>"
-- or "-<ms>" after the time of the run's id when the id is a ULID
-- (id_time), else the time itself; a keyspace of layout 7 wrote
-- "<id>\t<created time>\t<fn>". The line stays once the run has its hash,
-- which a reader looks for first: a stale line costs its event fewer bytes
-- than the id it stands for. It is the usual run of an event (the engine
-- gives an event's first run the event's id): a queued run costs its event
-- a line, where its hash took about 220 bytes and a write
-- (docs/BENCHMARKS.md).

-- plain_spec reports whether the spec s of event eid is kept in its event
-- (keptInEvent in publishtx.go): its function id must fit on its line.
local function plain_spec(eid, s)
  return s.id == eid and not set(s.idem) and not set(s.rl_key) and not set(s.single) and not set(s.deb)
    and not set(s.ckey) and not set(s.lo) and not string.find(s.fn, '[\t\n]')
end

-- event_line is the event's line for the run s it keeps (plain_spec),
-- created at created (ms).
local function event_line(s, created)
  local c, t = num(created), id_time(s.id)
  if t then c = created >= t and '+' .. num(created - t) or num(created - t) end
  local line = '\t' .. c .. '\t' .. s.fn
  if s.ftimeout and s.ftimeout > 0 then line = line .. '\t' .. num(s.ftimeout) end
  return line
end

-- kept_fields returns the fields of the run id its event keeps, as the
-- run's hash would hold them, or nil when it keeps none: no line for it,
-- or the run is out of the queue. A caller looks for the run's hash
-- first: once written, it is the run. A caller that read the run from the
-- queue (queued) spares the check; the run's avail is then now, for the
-- caller sets its own.
local function kept_fields(id, queued)
  local avail = queued and now_text() or redis.call('ZSCORE', pfx(id) .. 'queue', id)
  if not avail then return nil end
  local v = event_value(id)
  if not v then return nil end
  local _, e = string.find(v, '\n\t', 1, true)
  local after = e and id_time(id) -- the line's <created> is after it
  if not e then _, e = string.find(v, '\n' .. id .. '\t', 1, true) end -- layout 7's line
  if not e then return nil end
  -- An event's JSON never changes: the claim that loads the run reads it
  -- from here (event_doc).
  kept_docs[id] = string.sub(v, 1, (string.find(v, '\n', 1, true)) - 1)
  local line = string.match(v, '^[^\n]*', e + 1)
  local created, fn, ft = string.match(line, '^([+-]?%d+)\t([^\t]+)\t?(%d*)$')
  if not created then return nil end
  if after then created = num(after + tonumber(created)) end
  local a = {'fn', fn, 'ev', id, 'status', 'Queued', 'created', created, 'avail', avail}
  if ft ~= '' then
    a[#a + 1] = 'ftimeout'
    a[#a + 1] = ft
  end
  return a
end

-- run_live reports whether the run id is stored: its hash, or kept in its
-- event.
local function run_live(id)
  return redis.call('EXISTS', pfx(id) .. 'run:' .. id) == 1 or kept_fields(id) ~= nil
end

-- in_event writes the hash of a run its event keeps (kept_fields) and
-- returns the run as load does, or nil: from then on it is an ordinary
-- run.
local function in_event(id)
  local a = kept_fields(id)
  if not a then return nil end
  redis.call('HSET', pfx(id) .. 'run:' .. id, unpack(a))
  local r = {}
  for i = 1, #a, 2 do r[a[i]] = a[i + 1] end
  r.id = id
  return r, a
end

-- load returns the run hash as a table (with its id, which the hash
-- holds only when an earlier version wrote it), nil when there is no such
-- run, and as HGETALL returned it (a flat list of fields and values).
--
-- The claim, which read id from the queue, loads it with claiming set: a
-- run kept in its event is then returned unwritten, with r.kept set, and
-- the claim writes its hash with its lease (claim.lua): one HSET, no
-- ZSCORE.
local function load(id, claiming)
  local a = redis.call('HGETALL', pfx(id) .. 'run:' .. id)
  if #a == 0 and claiming then
    a = kept_fields(id, true)
    if not a then return nil end
    local r = {id = id, kept = true}
    for i = 1, #a, 2 do r[a[i]] = a[i + 1] end
    return r, a
  end
  if #a == 0 then return in_event(id) end
  local r = {}
  for i = 1, #a, 2 do r[a[i]] = a[i + 1] end
  r.id = id
  r.started = since_created(r.started, r.created, r.s)
  r.ended = since_created(r.ended, r.created, r.d)
  return r, a
end

-- event_doc returns the event's JSON, false when there is no such event.
local function event_doc(id)
  local kept = kept_docs[id]
  if kept then return kept end
  local v = event_value(id)
  if not v then return v end
  local i = string.find(v, '\n', 1, true)
  if i then return string.sub(v, 1, i - 1) end
  return v
end

-- event_runs returns the ids of the runs the event fed (some may be gone),
-- from its string and from an earlier version's runs:ev:<id>.
local function event_runs(id)
  local out = {}
  local v = event_value(id)
  if v then
    for line in string.gmatch(v, '\n([^\n]*)') do
      local rid = string.match(line, '^[^\t]*')
      out[#out + 1] = rid == '' and id or rid -- a kept run's line leaves its id out
    end
  end
  for _, m in ipairs(redis.call('ZRANGE', pfx(id) .. 'runs:ev:' .. id, 0, -1)) do out[#out + 1] = string.sub(m, 15) end
  return out
end

-- runs_suffix is what follows an event's JSON for the runs refs name:
-- create_runs' result ({id, ...}, with line set for a run its event
-- keeps), or run specs ({id = ...}) of event eid.
local function runs_suffix(refs, eid)
  local ids = {}
  for i, ref in ipairs(refs) do
    if ref.id and plain_spec(eid, ref) then
      ids[i] = event_line(ref, NOW)
    else
      ids[i] = ref.line or ref[1] or ref.id
    end
  end
  if #ids == 0 then return '' end
  return '\n' .. table.concat(ids, '\n')
end

-- add_event_runs records that the stored event id fed the runs refs name.
-- SET, not APPEND: APPEND leaves the string room to grow (save_record).
local function add_event_runs(id, refs)
  local v, hash = event_value(id)
  if not hash then
    redis.call('SET', pfx(id) .. 'event:' .. id, v .. runs_suffix(refs))
    return
  end
  for _, ref in ipairs(refs) do zadd(pfx(id) .. 'runs:ev:' .. id, 0, member(NOW, ref[1])) end
end

-- event_name returns the event's name, false when there is no such event.
local function event_name(id)
  local doc = event_doc(id)
  return doc and cjson.decode(doc).name
end

-- run_evs returns the run's trigger events as a JSON array: its evs
-- field, which a run fed by one event (ev) has not written.
local function run_evs(r)
  if set(r.evs) then return r.evs end
  return '[' .. cjson.encode(r.ev) .. ']'
end

-- status_key returns the key of the status index runs:fnst:<fn>:<st>,
-- built once per script and pair (stkeys).

local function status_key(fn, st)
  local byst = stkeys[fn]
  if not byst then
    byst = {}
    stkeys[fn] = byst
  end
  local k = byst[st]
  if not k then
    k = P .. 'runs:fnst:' .. fn .. ':' .. st
    byst[st] = k
  end
  return k
end

-- indexed reports whether runs of status st have a status index (layout
-- 4): only the rare finished statuses do. Completed runs are most of
-- runs:fn:<fn>, so a listing of them walks that index; every unfinished
-- run is in the queue (statusIndexed in read.go).
local function indexed(st) return st == 'Failed' or st == 'Cancelled' or st == 'Skipped' end

-- index_status moves the run between the status indexes; the caller
-- writes the status field. It reports whether the status changed.
local function index_status(r, st)
  if r.status == st then return false end
  local m = run_member(r.created, r.id)
  if indexed(r.status) then zrem(status_key(r.fn, r.status), m) end
  if indexed(st) then zadd(status_key(r.fn, st), 0, m) end
  r.status = st
  return true
end

-- register adds a function id (registry 'fns') or an event name
-- ('names') to the registry the listings merge the per-function and
-- per-name indexes by (keys.go), once per script (registered).

local function register(registry, v)
  if registered[registry][v] then return end
  registered[registry][v] = true
  redis.call('SADD', P .. registry, v)
end

-- set_status moves the run to status st.
local function set_status(r, st)
  if index_status(r, st) then redis.call('HSET', P .. 'run:' .. r.id, 'status', st) end
end

-- load_end returns the fields of the run end_run and leased read (and its
-- id), nil when there is no such run. A missing field is false, not nil:
-- the constructor sizes the table at once, which filling it field by field
-- does not, and those readers treat false as absent.
local function load_end(id)
  local v = redis.call('HMGET', P .. 'run:' .. id, 'status', 'created', 'fn', 'ckey', 'single', 'deb', 'token',
    'ended', 'avail', 'd', 'w')
  if not v[1] then return nil end
  return {id = id, status = v[1], created = v[2], fn = v[3], ckey = v[4], single = v[5], deb = v[6], token = v[7],
    ended = since_created(v[8], v[2], v[10]) or false, avail = v[9], w = v[11]}
end

-- leased returns the run when token is its current, unlapsed lease: all
-- of it, or with only_end only the fields load_end reads.
local function leased(id, token, only_end)
  local r
  if only_end then r = load_end(id) else r = load(id) end
  if not r or r.token ~= token or set(r.ended) or tonumber(r.avail or '0') <= NOW then return nil end
  return r
end

-- drop_lease removes the lease and frees the concurrency slot.
local function drop_lease(r)
  redis.call('HDEL', P .. 'run:' .. r.id, 'owner', 'token', 'woken')
  if set(r.ckey) then redis.call('ZREM', FC() .. 'conc:' .. r.ckey, r.id) end
  r.owner, r.token, r.woken = nil, nil, nil
end

-- A run that has ever waited for an event has w set (layout 6): only
-- such a run can have pending waits (runwaits:<run>, its entries in
-- waits:<name>) or completed ones (matched:<run>), so the scripts look
-- for them only then, where they took two commands per step recorded and
-- one per run ended. mark_waiting sets it before the first wait is kept.
local function mark_waiting(r)
  if set(r.w) then return end
  redis.call('HSET', P .. 'run:' .. r.id, 'w', '1')
  r.w = '1'
end

-- drop_waits forgets every pending WaitForEvent of the run r (loaded).
local function drop_waits(r)
  if not set(r.w) then return end
  local id = r.id
  local w = redis.call('HGETALL', P .. 'runwaits:' .. id)
  if #w == 0 then return end
  for i = 1, #w, 2 do redis.call('HDEL', P .. 'waits:' .. w[i + 1], id .. '\n' .. w[i]) end
  redis.call('DEL', P .. 'runwaits:' .. id)
end

-- forget_wait drops the completed or pending wait the step of the run r
-- (loaded) had, whose record is being replaced.
local function forget_wait(r, step)
  if not set(r.w) then return end
  local id = r.id
  redis.call('HDEL', P .. 'matched:' .. id, step)
  local old = redis.call('HGET', P .. 'runwaits:' .. id, step)
  if old then
    redis.call('HDEL', P .. 'waits:' .. old, id .. '\n' .. step)
    redis.call('HDEL', P .. 'runwaits:' .. id, step)
  end
end

-- drop_run deletes the finished run id (loaded as r) with its steps and
-- its index entries.
local function drop_run(id, r)
  local m = member(tonumber(r.created), id)
  redis.call('ZREM', P .. 'runs:fn:' .. r.fn, m)
  if redis.call('EXISTS', P .. 'runs:fn:' .. r.fn) == 0 then
    redis.call('SREM', P .. 'fns', r.fn)
    redis.call('DEL', P .. 'prunefrom:' .. r.fn)
  end
  if indexed(r.status) then redis.call('ZREM', status_key(r.fn, r.status), m) end
  -- An earlier layout indexed runs by event.
  for _, eid in ipairs(cjson.decode(run_evs(r))) do redis.call('ZREM', P .. 'runs:ev:' .. eid, m) end
  redis.call('DEL', P .. 'run:' .. id, P .. 'steplog:' .. id, P .. 'steps:' .. id, P .. 'steporder:' .. id,
    P .. 'matched:' .. id)
  drop_waits(r)
  if set(r.idem) and redis.call('HGET', FC() .. 'idem', r.idem) == id then
    redis.call('HDEL', FC() .. 'idem', r.idem)
    redis.call('ZREM', FC() .. 'idemexp', r.idem)
  end
end

-- release_key frees a singleton or debounce key if id holds it.
local function release_key(kind, key, id)
  if not set(key) then return end
  local k = FC() .. kind .. ':' .. key
  if redis.call('GET', k) == id then redis.call('DEL', k) end
end

-- prune_finished drops (drop_run), up to limit, the runs of function fn
-- with the finished status st that ended before cutoff, scanning at most
-- scan_limit entries of their status index (for Completed, which has
-- none, of runs:fn:<fn>). It walks the index from its oldest entry up to
-- cutoff (a run that ended before cutoff was created before it), past the
-- runs that ended later or have another status; an entry of a status
-- index whose run is gone or unfinished leaves it. dropped(r), when
-- given, sees each run it dropped. Returns how many runs it dropped and
-- how many entries it scanned.
--
-- With resume, a walk of runs:fn:<fn> starts after the entry the last one
-- stopped at (prunefrom:<fn>) and starts from the oldest again once it
-- reaches the cutoff: more than scan_limit runs it must pass (unfinished,
-- such as long sleeps, or of another status) cannot keep it from the
-- Completed runs behind them.
local function prune_finished(fn, st, cutoff, limit, scan_limit, dropped, resume)
  local idx, own = status_key(fn, st), indexed(st)
  local from_key, lo = nil, '-'
  if not own then
    idx = P .. 'runs:fn:' .. fn
    if resume then
      from_key = P .. 'prunefrom:' .. fn
      local from = redis.call('GET', from_key)
      if from then lo = '(' .. from end
    end
  end
  local n, scanned, offset, last, ended_walk = 0, 0, 0, nil, false
  while n < limit and scanned < scan_limit do
    local ms = redis.call('ZRANGEBYLEX', idx, lo, '(' .. pad(cutoff), 'LIMIT', offset, limit - n)
    if #ms == 0 then
      ended_walk = true
      break
    end
    for _, m in ipairs(ms) do
      scanned = scanned + 1
      last = m
      local id = string.sub(m, 15)
      local v = redis.call('HMGET', P .. 'run:' .. id, 'ended', 'status', 'created', 'd')
      local ended = since_created(v[1], v[3], v[4])
      if own and not ended then
        redis.call('ZREM', idx, m)
      elseif not own and v[2] ~= st then
        offset = offset + 1
      elseif tonumber(ended) and tonumber(ended) < cutoff then
        local r = load(id)
        drop_run(id, r)
        n = n + 1
        if dropped then dropped(r) end
      else
        offset = offset + 1
      end
    end
  end
  if from_key then
    if ended_walk or not last or redis.call('EXISTS', idx) == 0 then
      redis.call('DEL', from_key)
    else
      redis.call('SET', from_key, last)
    end
  end
  return n, scanned
end

-- A run hash stays a listpack, a few bytes a field, while each value
-- takes at most 64 bytes (Redis's hash-max-listpack-value); one longer
-- value makes it a hash table of some 500 bytes more. So a run's output
-- or error longer than that, up to 64 parts, is stored in parts of 64
-- bytes: fields o1, o2, … or e1, e2, … (parseRun in read.go joins them).
local part_size, max_parts = 64, 64

-- put_long adds the field name (output or error) holding v to fields, as
-- parts named prefix .. i when it is long.
local function put_long(fields, name, prefix, v)
  if not set(v) then return end
  local n = #v
  if n <= part_size or n > part_size * max_parts then
    fields[#fields + 1], fields[#fields + 2] = name, v
    return
  end
  local i = 0
  for at = 1, n, part_size do
    i = i + 1
    fields[#fields + 1], fields[#fields + 2] = prefix .. i, string.sub(v, at, at + part_size - 1)
  end
end

-- end_run finishes the run as st; r needs at least the fields load_end
-- reads.
local function end_run(r, st, output, err)
  index_status(r, st)
  local k = P .. 'run:' .. r.id
  r.ended = num(NOW)
  local fields = {'status', st, 'd', num(NOW - tonumber(r.created))}
  put_long(fields, 'output', 'o', output)
  put_long(fields, 'error', 'e', err)
  redis.call('HSET', k, unpack(fields))
  redis.call('HDEL', k, 'avail', 'owner', 'token', 'woken')
  if set(r.ckey) then redis.call('ZREM', FC() .. 'conc:' .. r.ckey, r.id) end
  r.owner, r.token, r.woken, r.avail = nil, nil, nil, nil
  redis.call('ZREM', P .. 'queue', r.id)
  release_key('single', r.single, r.id)
  release_key('deb', r.deb, r.id)
  drop_waits(r)
  change('run', '', '', r.id, r.fn, st)
end

-- live_entry reads an expiring entry (idempotency key, client id): the
-- value in hash, unless exp (a sorted set of deadlines) says it expired.
local function live_entry(hash, exp, key)
  local v = redis.call('HGET', FC() .. hash, key)
  if not v then return nil end
  local e = redis.call('ZSCORE', FC() .. exp, key)
  if e and tonumber(e) <= NOW then return nil end
  return v
end

local function keep_entry(hash, exp, key, value, ttl)
  redis.call('HSET', FC() .. hash, key, value)
  if ttl > 0 then
    redis.call('ZADD', FC() .. exp, num(NOW + ttl), key)
  else
    redis.call('ZREM', FC() .. exp, key)
  end
end

local function keep_idem(s, id)
  if set(s.idem) then keep_entry('idem', 'idemexp', s.idem, id, s.idem_ttl) end
end

-- deb_at is when a debounced run created at created starts if an event
-- arrives now.
local function deb_at(created, s)
  local at = NOW + s.deb_period
  if s.deb_max > 0 and created + s.deb_max < at then at = created + s.deb_max end
  return at
end

-- allow is GCRA: the key's theoretical arrival time moves by period/limit
-- per run; a run is allowed while it stays within one period of now.
local function allow(key, limit, period)
  local interval = period / limit
  local tat = tonumber(redis.call('ZSCORE', FC() .. 'rate', key) or '0')
  tat = math.max(tat, NOW) + interval
  if tat - NOW > period then return false end
  redis.call('ZADD', FC() .. 'rate', num(tat), key)
  return true
end

-- create_run applies idempotency, rate limit, singleton and debounce, in
-- that order, then stores the run: Skipped, with the reason as its error,
-- when one of the first three refuses it. It returns {id, function id,
-- status, existing, skip reason} (store.SkipReason, '' when none).
local function create_run(eid, s)
  -- specArg leaves out what is zero, and the usual run (no flow control)
  -- has none of its numbers: only the options it sets are filled in,
  -- sparing the table a field (and a resize) per number it lacks.
  if set(s.idem) then s.idem_ttl = s.idem_ttl or 0 end
  if set(s.rl_key) then s.rl_limit, s.rl_period = s.rl_limit or 0, s.rl_period or 0 end
  if set(s.deb) then s.deb_period, s.deb_max = s.deb_period or 0, s.deb_max or 0 end
  local status, skip, reason = 'Queued', '', ''
  if set(s.idem) then
    local rid = live_entry('idem', 'idemexp', s.idem)
    if rid and redis.call('EXISTS', pfx(rid) .. 'run:' .. rid) == 1 then
      status, skip = 'Skipped', 'idempotency'
      reason = 'idempotency key "' .. s.idem .. '" already used by run ' .. rid
    end
  end
  if status == 'Queued' and set(s.rl_key) and s.rl_limit > 0 and s.rl_period > 0 then
    if not allow(s.rl_key, s.rl_limit, s.rl_period) then
      status, skip, reason = 'Skipped', 'rate_limit', 'rate limit exceeded'
    end
  end
  if status == 'Queued' and set(s.single) then
    local other = redis.call('GET', FC() .. 'single:' .. s.single)
    if other then
      local o = load(other)
      if o and not set(o.ended) then
        status, skip, reason = 'Skipped', 'singleton', 'singleton: run ' .. other .. ' is unfinished'
      end
    end
  end
  local debounce = status == 'Queued' and set(s.deb) and s.deb_period > 0
  if debounce then
    local did = redis.call('GET', FC() .. 'deb:' .. s.deb)
    local r = did and load(did)
    if r and r.status == 'Queued' and not set(r.started) then
      local at = deb_at(tonumber(r.created), s)
      local evs = string.sub(run_evs(r), 1, -2) .. ',' .. cjson.encode(eid) .. ']'
      redis.call('HSET', pfx(did) .. 'run:' .. did, 'ev', eid, 'evs', evs, 'avail', num(at))
      redis.call('ZADD', pfx(did) .. 'queue', num(at), did)
      keep_idem(s, did)
      change('run', eid, '', did, r.fn, 'Queued', '', at)
      return {did, r.fn, 'Queued', 1, 'debounce'}
    end
  end

  local avail = NOW
  if s.avail and s.avail > avail then avail = s.avail end
  if debounce then
    local at = deb_at(NOW, s)
    if at > avail then avail = at end
  end
  if status == 'Queued' and not debounce and plain_spec(eid, s) then
    -- Kept in its event (in_event): its line is the event's.
    redis.call('ZADD', P .. 'queue', avail == NOW and now_text() or num(avail), s.id)
    local m = now_member(s.id)
    zadd(P .. 'runs:fn:' .. s.fn, 0, m)
    register('fns', s.fn)
    keep_idem(s, s.id)
    change('run', eid, '', s.id, s.fn, status, '', avail)
    return {s.id, s.fn, status, 0, skip, line = event_line(s, NOW)}
  end
  local k = P .. 'run:' .. s.id
  -- Fields left empty are not written: evs while it is [ev], attempt
  -- while 0, and the options the spec does not use.
  -- A run asked for at once (specArg's lo, lt, lu: RunSpec.LeaseTo, which
  -- specArgs sets only on a spec that may start now, without debounce or
  -- concurrency key) is created leased, as claim.lua leases one, unless
  -- flow control skipped it.
  local leased = status == 'Queued' and set(s.lo)
  if leased then status, avail = 'Running', s.lu end
  local fields, n = {'fn', s.fn, 'ev', eid, 'status', status, 'created', now_text()}, 8
  if leased then
    n = put2(fields, n, 'owner', s.lo)
    n = put2(fields, n, 'token', s.lt)
    n = put2(fields, n, 's', '0') -- started when created
    if s.ftimeout and s.ftimeout > 0 then n = put2(fields, n, 'finish_by', num(NOW + s.ftimeout)) end
  end
  if set(s.idem) then n = put2(fields, n, 'idem', s.idem) end
  if set(s.single) then n = put2(fields, n, 'single', s.single) end
  if set(s.deb) then n = put2(fields, n, 'deb', s.deb) end
  if set(s.ckey) then n = put2(fields, n, 'ckey', s.ckey) end
  if s.climit and s.climit > 0 then n = put2(fields, n, 'climit', num(s.climit)) end
  if s.ftimeout and s.ftimeout > 0 then n = put2(fields, n, 'ftimeout', num(s.ftimeout)) end
  if status == 'Skipped' then
    fields[n + 1], fields[n + 2] = 'd', '0' -- ended when created
    put_long(fields, 'error', 'e', reason)
  else
    fields[n + 1], fields[n + 2] = 'avail', avail == NOW and now_text() or num(avail)
  end
  redis.call('HSET', k, unpack(fields))
  if status ~= 'Skipped' then
    redis.call('ZADD', P .. 'queue', fields[#fields], s.id)
    if set(s.single) then redis.call('SET', FC() .. 'single:' .. s.single, s.id) end
    if debounce then redis.call('SET', FC() .. 'deb:' .. s.deb, s.id) end
  end
  local m = now_member(s.id)
  zadd(P .. 'runs:fn:' .. s.fn, 0, m)
  register('fns', s.fn)
  if indexed(status) then zadd(status_key(s.fn, status), 0, m) end
  if status == 'Queued' then
    keep_idem(s, s.id)
    change('run', eid, '', s.id, s.fn, status, '', avail)
  else
    if leased then keep_idem(s, s.id) end
    change('run', eid, '', s.id, s.fn, status)
  end
  if leased then return {s.id, s.fn, status, 0, skip, s.lt, fields} end
  return {s.id, s.fn, status, 0, skip}
end

local function create_runs(eid, specs)
  local refs = {}
  for i, s in ipairs(specs) do refs[i] = create_run(eid, s) end
  return refs
end

-- deep_equal compares two decoded JSON values.
local function deep_equal(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= 'table' then return a == b end
  for k, v in pairs(a) do
    if not deep_equal(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

-- path_matches reports whether the value at path (dotted, an optional
-- leading "event." or "async.") inside doc equals the JSON value want. An
-- event without a value there (absent, null or "", as keypath.Lookup says)
-- matches nothing.
local function path_matches(doc, path, want)
  local segs = {}
  for seg in string.gmatch(path, '[^.]+') do segs[#segs + 1] = seg end
  if segs[1] == 'event' or segs[1] == 'async' then table.remove(segs, 1) end
  local cur = doc
  for _, seg in ipairs(segs) do
    if type(cur) ~= 'table' then return false end
    cur = cur[seg]
    if cur == nil then return false end
  end
  if cur == cjson.null or cur == '' then return false end
  return deep_equal(cur, cjson.decode(want))
end

-- complete_wait records the event id (its stored doc) as the output of
-- the waiting step and wakes its run (at its next Suspend when it is
-- leased).
local function complete_wait(field, w, id, doc)
  redis.call('HDEL', P .. 'waits:' .. w.event, field)
  redis.call('HDEL', P .. 'runwaits:' .. w.run, w.step)
  local r = load(w.run)
  if not r or set(r.ended) then return end
  redis.call('HSET', P .. 'matched:' .. w.run, w.step,
    '{"ended_at":' .. num(NOW) .. ',"event":' .. cjson.encode(id) .. ',"output":' .. doc .. '}')
  change('step', '', '', w.run, r.fn, 'Completed', w.step)
  if set(r.token) and tonumber(r.avail) > NOW then
    redis.call('HSET', P .. 'run:' .. w.run, 'woken', num(NOW))
    return
  end
  set_status(r, 'Running')
  local at = math.min(tonumber(r.avail), NOW)
  redis.call('HSET', P .. 'run:' .. w.run, 'avail', num(at))
  redis.call('ZADD', P .. 'queue', num(at), w.run)
  change('run', '', '', w.run, r.fn, 'Running', '', NOW)
end

-- match_waits completes the waits of event name that event id, stored as
-- doc, satisfies; ts is the event's ts when doc leaves it out (storedEvent
-- in event.go), so that a wait on it matches.
-- nowaits remembers the event names without pending waits within one
-- script: publications never add waits, so the answer holds.

local function match_waits(name, id, doc, ts)
  if nowaits[name] then return end
  local ws = redis.call('HGETALL', P .. 'waits:' .. name)
  if #ws == 0 then
    nowaits[name] = true
    return
  end
  local decoded
  for i = 1, #ws, 2 do
    local w = cjson.decode(ws[i + 1])
    if w.expires == 0 or w.expires > NOW then
      local ok = true
      if set(w.path) then
        if not decoded then
          decoded = cjson.decode(doc)
          if decoded.ts == nil then decoded.ts = ts end
        end
        ok = path_matches(decoded, w.path, w.value)
      end
      if ok then complete_wait(ws[i], w, id, doc) end
    end
  end
end

-- publish_one stores one publication (see pubArg in engine.go) and returns
-- {event id, 1 if duplicate else 0, run refs}.
local function publish_one(p)
  if set(p.cid) then
    local first = live_entry('cid', 'cidexp', p.cid)
    if first then return {first, 1, {}} end
  end
  -- The event is stored with the ids of the runs it is about to create
  -- (their specs'), by a SET NX that refuses a duplicate in the same
  -- command; a run it joins instead (debounce) has the event stored again.
  local k, expected = P .. 'event:' .. p.id, runs_suffix(p.runs, p.id)
  if not redis.call('SET', k, p.doc .. expected, 'NX') then return {p.id, 1, {}} end
  zadd(P .. 'events:name:' .. p.name, 0, member(NOW, p.id))
  register('names', p.name)
  if set(p.cid) then keep_entry('cid', 'cidexp', p.cid, p.id, p.cid_ttl or 0) end
  change('event', p.id, p.name)
  local refs = create_runs(p.id, p.runs)
  local suffix = runs_suffix(refs, p.id)
  if suffix ~= expected then redis.call('SET', k, p.doc .. suffix) end
  match_waits(p.name, p.id, p.doc, p.ts)
  return {p.id, 0, refs}
end

local function publish_all(pubs)
  local out = {}
  for i, p in ipairs(pubs) do out[i] = publish_one(p) end
  return out
end

-- A run's step records are one string, steplog:<run>: each record
-- (JSON on one line, its id first) after a newline, in the order first
-- recorded. Runs recorded in the earlier layout keep steps:<run> (step id
-- -> record) and steporder:<run> (their order) until pruned (keys.go).

-- run_steps returns the steps of the run r (loaded, started): its step
-- records and its completed waits as HGETALL gives matched:<run>: {log,
-- {step id, match, ...}}, or for the earlier layout {{record, ...}, {step
-- id, match, ...}}. A run started by layout 5 or later (s) has no
-- earlier layout: steplog is older than layout 5.
local function run_steps(r)
  local id = r.id
  local ids = set(r.s) and {} or redis.call('LRANGE', P .. 'steporder:' .. id, 0, -1)
  local docs
  if #ids > 0 then
    docs = redis.call('HMGET', P .. 'steps:' .. id, unpack(ids))
  else
    docs = redis.call('GET', P .. 'steplog:' .. id)
    if not docs then return {{}, {}} end
  end
  return {docs, set(r.w) and redis.call('HGETALL', P .. 'matched:' .. id) or {}}
end

-- step_log returns the step log of the run r (loaded, started) for
-- save_record: its text, '' when it has none yet, or false when the run
-- keeps its steps in the earlier layout (run_steps).
local function step_log(r)
  local log = redis.call('GET', P .. 'steplog:' .. r.id)
  if log then return log end
  if not set(r.s) and redis.call('EXISTS', P .. 'steporder:' .. r.id) == 1 then return false end
  return ''
end

-- save_record puts the record rec of step, which starts with head
-- ('{"id":' and the id as JSON), into log (as step_log returned it): in
-- place of the step's earlier record, else at the end. It returns the
-- log, which the caller writes once for all the records of its call with
-- SET, not APPEND: APPEND leaves the string room to grow, up to its size
-- again, which a log of a few records never uses. A run of the earlier
-- layout (log false) has the record written at once.
local function save_record(id, log, step, rec, head)
  if not log then
    if redis.call('HSET', P .. 'steps:' .. id, step, rec) == 1 then redis.call('RPUSH', P .. 'steporder:' .. id, step) end
    return false
  end
  local i = string.find(log, '\n' .. head .. ',', 1, true)
  if not i then return log .. '\n' .. rec end
  local j = string.find(log, '\n', i + 1, true)
  local rest = ''
  if j then rest = string.sub(log, j) end
  return string.sub(log, 1, i) .. rec .. rest
end

local function flat(r)
  local out = {}
  for k, v in pairs(r) do
    out[#out + 1] = k
    out[#out + 1] = v
  end
  return out
end
