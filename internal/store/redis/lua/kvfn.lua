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
