-- set_checkpoint: ARGV = worker, checkpoint JSON; KEYS[NQ + 1] is the job's hash. Returns 1 if held.
local jk = KEYS[NQ + 1]
local v = redis.call('HMGET', jk, 'state', 'worker')
if v[1] ~= 'active' or v[2] ~= ARGV[1] then return 0 end
redis.call('HSET', jk, 'checkpoint', ARGV[2])
return 1
