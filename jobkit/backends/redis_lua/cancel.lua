-- cancel: ARGV = id, now; KEYS[NQ + 1], KEYS[NQ + 2] are the job's hash and data keys.
-- WAITING/DELAYED/WAITING_CHILDREN -> CANCELLED (a parent's unfinished children too, see _flow.lua); ACTIVE ->
-- cancel_requested; otherwise unchanged. Returns {the job's JSON or false if unknown, notices for other queues or
-- false, own event span or false}.
local id, now_s = ARGV[1], ARGV[2]
local jk, dk = KEYS[NQ + 1], KEYS[NQ + 2]
local v = load(jk)
if not v then return {false, false, false} end
cancel_job(id, v, now_s)
run_work(now_s)
return {compose(v, redis.call('GET', dk)), flow_out(), WOKE and span() or false}
