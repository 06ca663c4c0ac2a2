-- finish: ARGV = worker, now, keep (see keep_finished in _remove.lua), then the outcomes, 8 arguments each
-- (see _finish.lua); KEYS[NQ + 2i - 1] and KEYS[NQ + 2i] are the hash and data keys of outcome i. Returns {own
-- event span if any job is claimable again, else false; notices for other queues (see _flow.lua) or false; moved
-- job JSON...}.
local again, jobs = finish_outcomes(ARGV[1], ARGV[2], 4, #ARGV, true)
keep_finished(ARGV[3], ARGV[2])
local out = {again and span() or false, flow_out()}
for _, j in ipairs(jobs) do out[#out + 1] = j end
return out
