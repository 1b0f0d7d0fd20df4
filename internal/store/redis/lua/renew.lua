-- renew: extends leases, each on its own.
-- KEYS[1] engine prefix. ARGV[1] now; ARGV[2] new expiry (ms); ARGV[3] JSON
-- array of [run id, token].
-- Returns, per lease, 1, or 0 when it was lost.
local untl = ARGV[2]
local out = {}
for i, l in ipairs(cjson.decode(ARGV[3])) do
  local r = leased(l[1], l[2])
  if r then
    redis.call('HSET', P .. 'run:' .. r.id, 'avail', untl)
    redis.call('ZADD', P .. 'queue', untl, r.id)
    if set(r.ckey) then redis.call('ZADD', FC() .. 'conc:' .. r.ckey, untl, r.id) end
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
