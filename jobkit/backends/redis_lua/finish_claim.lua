-- finish_claim: a worker's finish and its next claim in one call. ARGV = worker, now, lease_until, limit,
-- rate limit ('' = none), rate per, number of outcomes n, keep (see keep_finished in _remove.lua), the caller's
-- inbox token (its ends come back in the answer; see HERE in _lib.lua), then n outcomes of 8
-- arguments each (see _finish.lua, whose keys follow the queue's in KEYS), then the name filter and caps (see
-- claim_filter in _claim.lua). Returns {own event span if a finished job is claimable again, else false; retry_in
-- ('' = none); ran dry (1/0); notices for other queues (see _flow.lua) or false; the ends for the caller's inbox
-- (see notify_end) or false; claimed job JSON...}.
local worker, now_s, n = ARGV[1], ARGV[2], tonumber(ARGV[7])
if ARGV[9] ~= '' then HERE = ARGV[9] end
local again = finish_outcomes(worker, now_s, 10, 9 + 8 * n, false)
keep_finished(ARGV[8], now_s)
local names, caps = claim_filter(10 + 8 * n)
local retry_in, jobs, dry = claim_jobs(now_s, ARGV[3], worker, tonumber(ARGV[4]), ARGV[5], ARGV[6], names, caps)
local out = {again and span() or false, retry_in, dry and 1 or 0, flow_out(), #HERE_ENDS > 0 and HERE_ENDS}
for _, j in ipairs(jobs) do out[#out + 1] = j end
return out
