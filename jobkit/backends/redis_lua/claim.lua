-- claim: ARGV = now, lease_until, worker, limit, rate limit ('' = none), rate per, then the name filter and caps
-- (see claim_filter in _claim.lua). Returns {retry_in ('' = none), ran dry (1/0), job JSON...} (see _claim.lua).
local names, caps = claim_filter(7)
local retry_in, jobs, dry = claim_jobs(ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], names, caps)
local out = {retry_in, dry and 1 or 0}
for _, j in ipairs(jobs) do out[#out + 1] = j end
return out
