-- watch: ARGV[1] = a waiter's inbox token, ARGV[2] = '1' when the caller needs the job only if it has ended;
-- KEYS[NQ + 1], KEYS[NQ + 2] are the job's hash and data keys. Unless the job has ended, the token joins its field
-- wt (space-separated), so the job's end is pushed to that inbox (see notify_end in _lib.lua).
-- Returns the job's JSON (true instead while it runs, when ARGV[2] = '1'), or false if there is no such job.
local jk, dk, token = KEYS[NQ + 1], KEYS[NQ + 2], ARGV[1]
local v = load(jk)
if not v then return false end
if not FINISHED[v.state] then
  if not v.wt then
    redis.call('HSET', jk, 'wt', token)
  elseif not string.find(' ' .. v.wt .. ' ', ' ' .. token .. ' ', 1, true) then
    redis.call('HSET', jk, 'wt', v.wt .. ' ' .. token)
  end
  if ARGV[2] == '1' then return true end
end
return compose(v, redis.call('GET', dk))
