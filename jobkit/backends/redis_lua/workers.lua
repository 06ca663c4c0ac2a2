-- workers (global keys): KEYS = worker info hash, worker expiry zset; ARGV = now.
-- Returns the WorkerInfo JSON of every worker alive at `now`.
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf')) do
  local info = redis.call('HGET', KEYS[1], id)
  if info then out[#out + 1] = info end
end
return out
