-- restrict: let a sliding-window counter grant at most `remaining` more before `until`. KEYS = its grants zset and
-- totals hash (as take.lua); ARGV = now, remaining, limit, until. Records a grant of limit - used - remaining, lasting
-- until `until`, when that is more than 0.
local now, remaining, limit, till = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local zk, hk = KEYS[1], KEYS[2]

local function fmt(x) return string.format('%.17g', x) end

local total = tonumber(redis.call('HGET', hk, 't') or '0')
local lapsed = redis.call('ZRANGEBYSCORE', zk, '-inf', now)
if #lapsed > 0 then
  for _, m in ipairs(lapsed) do total = total - tonumber(string.sub(m, string.find(m, ':', 1, true) + 1)) end
  redis.call('ZREMRANGEBYSCORE', zk, '-inf', now)
  if redis.call('ZCARD', zk) == 0 then total = 0 end
  redis.call('HSET', hk, 't', fmt(total))
end
local extra = limit - total - remaining
if extra <= 0 or till <= now then return 0 end
local seq = redis.call('HINCRBY', hk, 'n', 1)
redis.call('ZADD', zk, till, seq .. ':' .. fmt(extra))
redis.call('HSET', hk, 't', fmt(total + extra))
local ttl = math.ceil((till - now) * 1000) + 60000
if redis.call('PTTL', zk) < ttl then
  redis.call('PEXPIRE', zk, ttl)
  redis.call('PEXPIRE', hk, ttl)
end
return 1
