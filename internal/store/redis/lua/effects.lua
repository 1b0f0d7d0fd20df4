-- effects: applies a step's KV effects ahead of its record, where the two
-- are in different Cluster slots (a partitioned store on a Cluster:
-- commitAhead in ahead.go), and keeps a receipt, so that they apply once
-- across the commits of the step, whoever makes them.
-- KEYS[1] the receipt, in the site keys' slot; KEYS[2i], KEYS[2i+1] the
-- site key i of the effects and its deadline key, as savestep's; then the
-- receipts of earlier commits whose steps are recorded since, in the same
-- slot.
-- ARGV[1] now; ARGV[2] the effects (savestep's ARGV[4]); ARGV[3] the
-- arguments of the steps' commit (savestep's from ARGV[7], a JSON array),
-- kept in the receipt; ARGV[4] the receipt's TTL in ms; ARGV[5] how many
-- of the last KEYS are receipts to make tombstones of ('', expiring
-- ARGV[7] ms from now), whatever this call answers; ARGV[6] '1' when the
-- commit is counted (CommitStepsCount: its last step's record holds the
-- value the last increment left).
-- Returns {1, the value the last increment left when counted, else ''}
-- when it applied the effects, or {0, the receipt} when the receipt was
-- there: '' once the steps were recorded, else that value, a newline and
-- the arguments the receipt holds. Errors as savestep's (CONFLICT,
-- WRONGTYPE, "not an integer", "would overflow"); nothing is written then.
local done = tonumber(ARGV[5])
for i = #KEYS - done + 1, #KEYS do redis.call('SET', KEYS[i], '', 'XX', 'PX', ARGV[7]) end
local got = redis.call('GET', KEYS[1])
if got then return {0, got} end
local counted, err = kv_apply(KEYS, cjson.decode(ARGV[2]), NOW)
if err then return redis.error_reply(err) end
local c = ARGV[6] == '1' and num(counted) or ''
redis.call('SET', KEYS[1], c .. '\n' .. ARGV[3], 'PX', ARGV[4])
return {1, c}
