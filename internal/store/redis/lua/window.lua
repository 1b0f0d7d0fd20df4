-- window: counts one request against a fixed-window rate limit that every
-- daemon on this Redis shares (the site routes' limits). A window opens at
-- a key's first request and admits limit requests until it ends; the
-- in-memory counter in internal/site follows the same rule.
--
-- KEYS[1]: engine prefix.
-- ARGV[1]: now (ms); ARGV[2]: the limit's key; ARGV[3]: the limit;
-- ARGV[4]: the window (ms).
-- Writes window:<key>, a hash {n, reset}, which expires with its window.
-- Returns {allowed (1 or 0), requests left in the window, its end (ms)}.
local k = P .. 'window:' .. ARGV[2]
local limit, window = tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', k, 'n', 'reset')
local n, reset = tonumber(state[1]) or 0, tonumber(state[2]) or 0
if reset <= NOW then n, reset = 0, NOW + window end
local ok = n < limit
if ok then
  n = n + 1
  redis.call('HSET', k, 'n', n, 'reset', num(reset))
  redis.call('PEXPIRE', k, num(reset - NOW))
end
return {ok and 1 or 0, limit - n, reset}
