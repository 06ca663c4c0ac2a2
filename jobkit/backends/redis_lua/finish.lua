-- finish: ARGV = worker, now, keep (see keep_finished in _remove.lua), the caller's inbox token (its ends come
-- back in the answer, not through its inbox; see HERE in _lib.lua), then the outcomes, 8 arguments
-- each (see _finish.lua); KEYS[NQ + 2i - 1] and KEYS[NQ + 2i] are the hash and data keys of outcome i. Returns
-- {own event span if any job is claimable again, else false; notices for other queues (see _flow.lua) or false;
-- the ends for the caller's inbox (see notify_end) or false; moved job JSON...}.
if ARGV[4] ~= '' then HERE = ARGV[4] end
local again, jobs = finish_outcomes(ARGV[1], ARGV[2], 5, #ARGV, true)
keep_finished(ARGV[3], ARGV[2])
local out = {again and span() or false, flow_out(), #HERE_ENDS > 0 and HERE_ENDS}
for _, j in ipairs(jobs) do out[#out + 1] = j end
return out
