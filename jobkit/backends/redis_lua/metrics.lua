-- metrics: ARGV = the first minute wanted. Returns {minute, {field, count, ...}, ...}, oldest first (see
-- _finish.lua); a minute whose hash has expired returns no fields.
local out = {}
for _, minute in ipairs(redis.call('ZRANGEBYSCORE', K_MINUTES, ARGV[1], '+inf')) do
  out[#out + 1] = minute
  out[#out + 1] = redis.call('HGETALL', MP .. minute)
end
return out
