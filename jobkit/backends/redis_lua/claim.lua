-- claim: ARGV = now, lease_until, worker, limit, rate limit ('' = none), rate per, names given ('1'/'0'),
-- names... Returns {retry_in ('' = none), ran dry (1/0), job JSON...} (see _claim.lua).
local names = nil
if ARGV[7] == '1' then
  names = {}
  for i = 8, #ARGV do names[ARGV[i]] = true end
end
local retry_in, jobs, dry = claim_jobs(ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], names)
local out = {retry_in, dry and 1 or 0}
for _, j in ipairs(jobs) do out[#out + 1] = j end
return out
