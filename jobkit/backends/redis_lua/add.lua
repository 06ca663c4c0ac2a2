-- add: ARGV[1] = now; ARGV[2] = k, the number of arguments of an idle worker's offer that follow ('0' = none):
-- worker, lease_until, limit, rate limit ('' = none), rate per, then the name filter and caps (see claim_filter in
-- _claim.lua); then 13 arguments per job (ADD_FIELDS in redis.py): id, data string (see _lib.lua),
-- its length before the history entries, state, priority, run_at, created_at (fixed width, for the index),
-- name, attempts, max_stalls, keep_failed age ('' = none), history length, extra hash fields as a JSON object
-- of strings ('' = none; rare but for owner and tags, ow and tg, which index_job indexes). Absent attempts, stalls and cancel_requested fields read as 0; `o` keeps the
-- first seq, the order jobs were added in.
-- With an offer, the jobs are added, then claimed for that worker as its own claim would (claim_jobs): a job
-- handed over so needs no claim of its own, and wakes no other worker unless some added job is left claimable.
-- Returns {own event span (of the events that woke workers) or false, the offer's claim {retry_in, ran dry (1/0),
-- job JSON...} or false, then per job: its new seq, or the stored job's JSON when the id exists}.
local now = ARGV[1]
local k = tonumber(ARGV[2])
local jobs, new = {}, {}
for i = 3 + k, #ARGV, 13 do
  local f = {unpack(ARGV, i, i + 12)}
  jobs[#jobs + 1] = f
  -- SET NX is both the existence check and the first write (refused as a whole under OOM).
  if redis.call('SET', DP .. f[1], f[2], 'NX') then new[#new + 1] = f end
end
local out = {false, false}
if #new > 0 then
  HOLD_WAKE = k > 0
  local base = redis.call('HINCRBY', K_META, 'seq', #new) - #new
  for i, f in ipairs(new) do
    local id, seq = f[1], base + i
    local h, ck, x = new_job_fields(f, f[4], seq)
    redis.call('HSET', JP .. id, unpack(h))
    if x then index_job(id, x.ow, x.tg, ck, seq, true) end
    if f[4] == 'delayed' then
      enter('delayed', id, f[6], seq, ck)
    else
      enter('waiting', id, tonumber(f[5]) * PRI + seq, seq, ck)
    end
    event(id, f[8], 'added', f[4], now, f[9], nil, nil, x and x.ow or false)
    f.seq = seq
  end
  if k > 0 then
    local names, caps = claim_filter(8, 2 + k)
    local retry_in, claimed, dry = claim_jobs(now, ARGV[4], ARGV[3], tonumber(ARGV[5]), ARGV[6], ARGV[7], names, caps)
    out[2] = {retry_in, dry and 1 or 0, unpack(claimed)}
    local left = #claimed < #new
    for _, f in ipairs(left and {} or new) do
      if redis.call('HGET', JP .. f[1], 'state') ~= 'active' then left = true end
    end
    HOLD_WAKE = false
    if left then wake_held() end
  end
  out[1] = woke_stream and span()
end
for _, f in ipairs(jobs) do
  if f.seq then out[#out + 1] = f.seq else out[#out + 1] = job_json(JP .. f[1], DP .. f[1]) end
end
return out
