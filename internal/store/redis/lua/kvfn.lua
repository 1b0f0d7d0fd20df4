-- kvfn: the key-value helpers, for a site key K and its deadline key D
-- (see kvDeadlineKey in keys.go, same Cluster slot): the key's expiry in
-- unix ms by the engine's clock, next to the key's native TTL. Redis
-- expires both natively; the deadline lets the store honour its injected
-- clock too (the conformance suite's fake clock). now is in unix ms.

-- kv_native is set when the store runs on the real clock: the key's
-- native TTL is then its expiry, and deadline keys are neither read nor
-- written. One written before expires with its key.
local kv_native = false

-- kv_live reports whether K exists and has not expired by now, deleting
-- it when it has.
local function kv_live(K, D, now)
  if redis.call('EXISTS', K) == 0 then return false end
  if kv_native then return true end
  local d = redis.call('GET', D)
  if not d then return true end
  if redis.call('PTTL', K) < 0 then
    -- The key lost its TTL outside the store (a plain SET): the deadline is stale.
    redis.call('DEL', D)
    return true
  end
  if tonumber(d) <= now then
    redis.call('DEL', K, D)
    return false
  end
  return true
end

-- kv_type returns K's type, 'none' when it is absent or has expired by
-- now (deleting it then).
local function kv_type(K, D, now)
  if not kv_native and not kv_live(K, D, now) then return 'none' end
  return redis.call('TYPE', K).ok
end

-- kv_expire gives K, just SET or created, a ttl (ms), or none when ttl is 0.
local function kv_expire(K, D, now, ttl)
  if ttl > 0 then
    redis.call('PEXPIRE', K, ttl)
    if not kv_native then redis.call('SET', D, string.format('%d', now + ttl), 'PX', ttl) end
  elseif not kv_native then
    -- On the real clock the callers' keys have no TTL here: they were
    -- just SET (which drops it) or created.
    redis.call('PERSIST', K)
    redis.call('DEL', D)
  end
end

-- Integers as Redis keeps them: int64, written canonically (no sign on
-- 0, no leading zeros). kv_int parses one, nil for a value INCRBY refuses;
-- kv_int_add adds two and reports whether the sum fits an int64. A double
-- holds integers exactly up to 2^53 only: one of up to 15 digits is a
-- number, a longer one a pair {hi, lo} of one sign (hi * 1e9 + lo), held
-- exactly.
local function kv_int(v)
  if not (v == '0' or string.match(v, '^%-?[1-9]%d*$')) then return nil end
  if #v <= 15 then return tonumber(v) end
  if #v > 20 then return nil end
  local neg = string.sub(v, 1, 1) == '-'
  local d = neg and string.sub(v, 2) or v
  local hi, lo = tonumber(string.sub(d, 1, #d - 9)), tonumber(string.sub(d, #d - 8))
  if neg then hi, lo = -hi, -lo end
  if hi > 9223372036 or hi == 9223372036 and lo > 854775807 or hi < -9223372036 or hi == -9223372036 and lo < -854775808 then
    return nil
  end
  return {hi, lo}
end

local function kv_int_add(a, b)
  if type(a) == 'number' and type(b) == 'number' and a < 1e15 and a > -1e15 and b < 1e15 and b > -1e15 then
    return a + b, true -- under 2^51: exact, and far within an int64
  end
  local function pair(x)
    if type(x) == 'table' then return x[1], x[2] end
    local lo = math.fmod(x, 1e9)
    return (x - lo) / 1e9, lo
  end
  local ah, al = pair(a)
  local bh, bl = pair(b)
  local hi, lo = ah + bh, al + bl
  if lo >= 1e9 then hi, lo = hi + 1, lo - 1e9 elseif lo <= -1e9 then hi, lo = hi - 1, lo + 1e9 end
  if hi > 0 and lo < 0 then hi, lo = hi - 1, lo + 1e9 elseif hi < 0 and lo > 0 then hi, lo = hi + 1, lo - 1e9 end
  local ok = not (hi > 9223372036 or hi == 9223372036 and lo > 854775807 or hi < -9223372036 or hi == -9223372036 and lo < -854775808)
  return {hi, lo}, ok
end

-- kv_apply checks a step's reads and applies its writes: fx is the
-- effects argument effectsArg encodes (see lua/savestep.lua), K the keys,
-- site key i being K[2i] and its deadline key K[2i+1]. It returns the
-- value the last increment left (nil without one), or nil and an error
-- reply's text when a read no longer holds (CONFLICT) or a blind write
-- would fail; nothing is written then. K is a parameter: in the engine's
-- library each function has KEYS of its own.
local function kv_apply(K, fx, now)
  kv_native = fx.n == 1
  -- types caches each site key's type (key_type), kept up to date by the
  -- writes below: a key is read once however many reads and writes name it.
  local types = {}
  local function key_type(i)
    local t = types[i]
    if not t then
      t = kv_type(K[2 * i], K[2 * i + 1], now)
      types[i] = t
    end
    return t
  end
  for _, rd in ipairs(fx.r) do
    local k = K[2 * rd[1]]
    local t = key_type(rd[1])
    local ok
    if rd[2] == 'string' then
      if rd[3] == '1' then ok = t == 'string' and redis.call('GET', k) == rd[4] else ok = t == 'none' end
    elseif rd[2] == 'member' then
      if t == 'set' then ok = (redis.call('SISMEMBER', k, rd[4]) == 1) == (rd[3] == '1') else ok = t == 'none' and rd[3] ~= '1' end
    else
      if t == 'set' then ok = redis.call('SCARD', k) == tonumber(rd[4]) else ok = t == 'none' and tonumber(rd[4]) == 0 end
    end
    if not ok then return nil, 'CONFLICT' end
  end
  -- A blind write (store.Tx.IncrByBlind, SetAddBlind) read nothing: refuse
  -- one that Redis would refuse halfway, before anything is written: a
  -- key of another type, a value that is not an integer, an increment that
  -- would overflow (sums: each blindly incremented key's value so far; an
  -- increment the transaction read for was checked by it).
  local wrongtype = 'WRONGTYPE Operation against a key holding the wrong kind of value'
  local sums = {}
  for _, w in ipairs(fx.w) do
    if w[5] == '1' then
      local i = w[1]
      local value
      if w[2] == 'incrby' and kv_native and not types[i] then
        -- On the real clock one GET tells an increment's key's type and
        -- value: an error for another type, nil for none.
        value = redis.pcall('GET', K[2 * i])
        if type(value) == 'table' then return nil, wrongtype end
        types[i] = value and 'string' or 'none'
      end
      local t = key_type(i)
      if w[2] == 'sadd' and t ~= 'none' and t ~= 'set' or w[2] == 'incrby' and t ~= 'none' and t ~= 'string' then
        return nil, wrongtype
      end
      if w[2] == 'incrby' then
        if not sums[i] then
          sums[i] = kv_int(t == 'string' and (value or redis.call('GET', K[2 * i])) or '0')
          if not sums[i] then return nil, 'ERR value is not an integer or out of range' end
        end
        -- The delta is an int64 the store wrote (canonical): up to 15
        -- characters it is a number as it is.
        local ok
        sums[i], ok = kv_int_add(sums[i], #w[3] <= 15 and tonumber(w[3]) or kv_int(w[3]))
        if not ok then return nil, 'ERR increment or decrement would overflow' end
      end
    end
  end
  local counted
  for _, w in ipairs(fx.w) do
    local k, d = K[2 * w[1]], K[2 * w[1] + 1]
    local op, ttl = w[2], tonumber(w[4])
    if op == 'set' then
      redis.call('SET', k, w[3])
      kv_expire(k, d, now, ttl)
      types[w[1]] = 'string'
    elseif op == 'del' then
      redis.call('DEL', k, d)
      types[w[1]] = 'none'
    else
      local existed = key_type(w[1]) ~= 'none'
      if op == 'incrby' then
        counted = redis.call('INCRBY', k, w[3])
        types[w[1]] = 'string'
      else
        redis.call('SADD', k, unpack(w, 6))
        types[w[1]] = 'set'
      end
      if not existed then kv_expire(k, d, now, ttl) end
    end
  end
  return counted
end
