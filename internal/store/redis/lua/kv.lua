-- kv: the helpers every key-value script starts with.
--
-- KEYS[1] is the site's key, a native string or set that the website reads
-- as it is. KEYS[2] is its deadline key (see kvDeadlineKey in keys.go, same
-- Cluster slot): the key's expiry in unix ms by the engine's clock, next to
-- the key's native TTL. Redis expires both natively; the deadline lets the
-- store honour its injected clock too (the conformance suite's fake clock).
-- ARGV[1] is now in unix ms.
local K, D = KEYS[1], KEYS[2]
local NOW = tonumber(ARGV[1])

-- live reports whether K exists and has not expired by the engine clock,
-- deleting it when it has.
local function live()
  if redis.call('EXISTS', K) == 0 then return false end
  local d = redis.call('GET', D)
  if not d then return true end
  if redis.call('PTTL', K) < 0 then
    -- The key lost its TTL outside the store (a plain SET): the deadline is stale.
    redis.call('DEL', D)
    return true
  end
  if tonumber(d) <= NOW then
    redis.call('DEL', K, D)
    return false
  end
  return true
end

-- expire gives K a ttl (ms), or none when ttl is 0.
local function expire(ttl)
  if ttl > 0 then
    redis.call('PEXPIRE', K, ttl)
    redis.call('SET', D, string.format('%d', NOW + ttl), 'PX', ttl)
  else
    redis.call('PERSIST', K)
    redis.call('DEL', D)
  end
end
