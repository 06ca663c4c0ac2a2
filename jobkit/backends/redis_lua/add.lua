-- add: ARGV[1] = now; then 13 arguments per job (ADD_FIELDS in redis.py): id, data string (see _lib.lua),
-- its length before the history entries, state, priority, run_at, created_at (fixed width, for the index),
-- name, attempts, max_stalls, keep_failed age ('' = none), history length, extra hash fields as a JSON object
-- of strings ('' = none; rare but for owner and tags, ow and tg, which index_job indexes). Absent attempts, stalls and cancel_requested fields read as 0; `o` keeps the
-- first seq, the order jobs were added in.
-- Returns {own event span or false, then per job: its new seq, or the stored job's JSON when the id exists}.
local now = ARGV[1]
local jobs, new = {}, {}
for i = 2, #ARGV, 13 do
  local f = {unpack(ARGV, i, i + 12)}
  jobs[#jobs + 1] = f
  -- SET NX is both the existence check and the first write (refused as a whole under OOM).
  if redis.call('SET', DP .. f[1], f[2], 'NX') then new[#new + 1] = f end
end
local out = {false}
if #new > 0 then
  local base = redis.call('HINCRBY', K_META, 'seq', #new) - #new
  for k, f in ipairs(new) do
    local id, seq = f[1], base + k
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
  out[1] = span()
end
for _, f in ipairs(jobs) do
  if f.seq then out[#out + 1] = f.seq else out[#out + 1] = job_json(JP .. f[1], DP .. f[1]) end
end
return out
