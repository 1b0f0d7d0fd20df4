-- savestep: records steps of a run under its lease, with their KV effects,
-- publishes what they emit, and may finish the run with them.
-- KEYS[1] engine prefix; KEYS[2i], KEYS[2i+1] the site key i of the
-- effects and its deadline key (lua/kvfn.lua). ARGV[1] now; ARGV[2] run
-- id; ARGV[3] token; ARGV[4] the effects of every step merged (JSON, see
-- effectsArg):
-- {"c": 1 when the last step is counted (CommitStepsCount: its record
--  holds COUNT_MARK as its output, which becomes the value the last write,
--  an increment, left), "n": 1 on the real clock (kv_native),
--  "r": reads [[i, "string"|"member"|"card", "1"|"0" exists, value|member|card]],
--  "w": writes [[i, "set"|"incrby"|"sadd"|"del", value|delta, ttl ms, "1"|"0" blind, members...]]};
-- ARGV[5] '' or the run's finish after the steps (JSON: {status, output
-- (JSON or ''), error, pubs (pubArg array)}); ARGV[6] the number of steps;
-- then 7 arguments per step, in order (stepArgs): its id, its record
-- (JSON, see stepRecord), its status, the name of the event a pending wait
-- waits for ('' for none), the wait (JSON, see waitArg, or ''), the
-- record's start up to its id (see save_record), and the JSON array of
-- pubArg it emits.
-- Returns 1 (counted: the value), or the errors LEASE_LOST, CONFLICT (a
-- read no longer holds), WRONGTYPE or "not an integer" (a blind write
-- would fail); nothing is written then.
-- COUNT_MARK is the output field of a counted step's record (countMark in
-- engine.go), as its JSON holds it: "o": cannot occur inside a string of
-- the record, whose quotes are escaped, so the first match is the field.
local COUNT_MARK = '"o":"\\u0000count"'
local r = leased(ARGV[2], ARGV[3])
if not r then return redis.error_reply('LEASE_LOST') end
local fx = cjson.decode(ARGV[4])
kv_native = fx.n == 1
-- types caches each site key's type (key_type), kept up to date by the
-- writes below: a key is read once however many reads and writes name it.
local types = {}
local function key_type(i)
  local t = types[i]
  if not t then
    t = kv_type(KEYS[2 * i], KEYS[2 * i + 1], NOW)
    types[i] = t
  end
  return t
end
for _, rd in ipairs(fx.r) do
  local K = KEYS[2 * rd[1]]
  local t = key_type(rd[1])
  local ok
  if rd[2] == 'string' then
    if rd[3] == '1' then ok = t == 'string' and redis.call('GET', K) == rd[4] else ok = t == 'none' end
  elseif rd[2] == 'member' then
    if t == 'set' then ok = (redis.call('SISMEMBER', K, rd[4]) == 1) == (rd[3] == '1') else ok = t == 'none' and rd[3] ~= '1' end
  else
    if t == 'set' then ok = redis.call('SCARD', K) == tonumber(rd[4]) else ok = t == 'none' and tonumber(rd[4]) == 0 end
  end
  if not ok then return redis.error_reply('CONFLICT') end
end
-- A blind write (store.Tx.IncrByBlind, SetAddBlind) read nothing: refuse
-- one that Redis would refuse halfway, before anything is written.
local wrongtype = 'WRONGTYPE Operation against a key holding the wrong kind of value'
for _, w in ipairs(fx.w) do
  if w[5] == '1' then
    local i = w[1]
    local value
    if w[2] == 'incrby' and kv_native and not types[i] then
      -- On the real clock one GET tells an increment's key's type and
      -- value: an error for another type, nil for none.
      value = redis.pcall('GET', KEYS[2 * i])
      if type(value) == 'table' then return redis.error_reply(wrongtype) end
      types[i] = value and 'string' or 'none'
    end
    local t = key_type(i)
    if w[2] == 'sadd' and t ~= 'none' and t ~= 'set' or w[2] == 'incrby' and t ~= 'none' and t ~= 'string' then
      return redis.error_reply(wrongtype)
    end
    if w[2] == 'incrby' and t == 'string' and not string.match(value or redis.call('GET', KEYS[2 * i]), '^%-?%d+$') then
      return redis.error_reply('ERR value is not an integer or out of range')
    end
  end
end
-- counted is the value the last increment left (fx.c: the last write).
local counted
for _, w in ipairs(fx.w) do
  local K, D = KEYS[2 * w[1]], KEYS[2 * w[1] + 1]
  local op, ttl = w[2], tonumber(w[4])
  if op == 'set' then
    redis.call('SET', K, w[3])
    kv_expire(K, D, NOW, ttl)
    types[w[1]] = 'string'
  elseif op == 'del' then
    redis.call('DEL', K, D)
    types[w[1]] = 'none'
  else
    local existed = key_type(w[1]) ~= 'none'
    if op == 'incrby' then
      counted = redis.call('INCRBY', K, w[3])
      types[w[1]] = 'string'
    else
      redis.call('SADD', K, unpack(w, 6))
      types[w[1]] = 'set'
    end
    if not existed then kv_expire(K, D, NOW, ttl) end
  end
end
local id, n = r.id, tonumber(ARGV[6])
-- The log is read once and written once for all the records.
local log = n > 0 and step_log(r)
for i = 0, n - 1 do
  local a = 7 + 7 * i
  local step, wev, rec = ARGV[a], ARGV[a + 3], ARGV[a + 1]
  if fx.c and i == n - 1 then
    local j = string.find(rec, COUNT_MARK, 1, true)
    rec = string.sub(rec, 1, j - 1) .. '"o":' .. num(counted) .. string.sub(rec, j + #COUNT_MARK)
  end
  log = save_record(id, log, step, rec, ARGV[a + 5])
  forget_wait(r, step)
  if wev ~= '' then
    mark_waiting(r)
    redis.call('HSET', P .. 'waits:' .. wev, id .. '\n' .. step, ARGV[a + 4])
    redis.call('HSET', P .. 'runwaits:' .. id, step, wev)
  end
  change('step', '', '', id, r.fn, ARGV[a + 2], step)
  if ARGV[a + 6] ~= '[]' then publish_all(cjson.decode(ARGV[a + 6])) end
end
if log then redis.call('SET', P .. 'steplog:' .. id, log) end
if ARGV[5] ~= '' then
  local f = cjson.decode(ARGV[5])
  end_run(r, f.status, f.output, f.error)
  publish_all(f.pubs)
end
flush()
if fx.c then return counted end
return 1
