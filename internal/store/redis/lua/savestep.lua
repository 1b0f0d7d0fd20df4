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
local counted, err = kv_apply(KEYS, fx, NOW)
if err then return redis.error_reply(err) end
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
