-- kv: what every key-value script starts with, after lua/kvfn.lua.
--
-- KEYS[1] is the site's key, a native string or set that the website reads
-- as it is. KEYS[2] is its deadline key (lua/kvfn.lua).
local K, D = KEYS[1], KEYS[2]
-- ARGV[1] is now in unix ms, followed by "n" on the real clock (kv_native).
local NOW = tonumber(ARGV[1])
if not NOW then
  NOW = tonumber(string.sub(ARGV[1], 1, -2))
  kv_native = true
end

-- live reports whether K exists and has not expired by the engine clock,
-- deleting it when it has.
local function live() return kv_live(K, D, NOW) end

-- expire gives K a ttl (ms), or none when ttl is 0.
local function expire(ttl) kv_expire(K, D, NOW, ttl) end
