-- set_progress: ARGV = worker, id, progress JSON, now; KEYS[NQ + 1] is the job's hash. Returns 1 if held.
local jk = KEYS[NQ + 1]
local v = redis.call('HMGET', jk, 'state', 'worker', 'att', 'name')
if v[1] ~= 'active' or v[2] ~= ARGV[1] then return 0 end
redis.call('HSET', jk, 'progress', ARGV[3])
event(ARGV[2], v[4], 'progress', 'active', ARGV[4], v[3] or '0', 'p', ARGV[3])
return 1
