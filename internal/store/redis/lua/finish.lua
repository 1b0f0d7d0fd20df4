-- finish: ends runs, each under its lease, and publishes what each emits.
-- Each run's transition is checked and applied on its own, in order: a
-- lost lease leaves that run alone and the others proceed.
-- KEYS[1] engine prefix. ARGV[1] now; ARGV[2] JSON array of finishArg
-- ({at, run, token, status, output (JSON or ''), error, pubs (pubArg
-- array)}), each applied at its own time "at".
-- Returns, per finish, 1, or 0 when the lease was lost.
local out = {}
for i, f in ipairs(cjson.decode(ARGV[2])) do
  NOW = f.at
  local r = leased(f.run, f.token, true)
  if r then
    end_run(r, f.status, f.output, f.error)
    publish_all(f.pubs)
    out[i] = 1
  else
    out[i] = 0
  end
end
flush()
return out
