-- take: sliding-window counters, every ask granted or none. KEYS = per ask, its grants zset then its totals hash
-- (jobkit:{queue}:w:<key>, jobkit:{queue}:wt:<key>). ARGV[1] = now, then per ask: amount, limit, window.
-- A grant is a member "<n>:<amount>" scored by when it lapses; the hash holds t (total of unlapsed grants) and
-- n (for unique members). Lapsed grants are removed first, so t is what counts now. Returns the seconds to wait
-- until every ask fits, as text ("0" when they were granted and recorded).
local now = tonumber(ARGV[1])

local function fmt(x) return string.format('%.17g', x) end

local function amount_of(member) return tonumber(string.sub(member, string.find(member, ':', 1, true) + 1)) end

local function used(zk, hk)
  local total = tonumber(redis.call('HGET', hk, 't') or '0')
  local lapsed = redis.call('ZRANGEBYSCORE', zk, '-inf', now)
  if #lapsed > 0 then
    for _, m in ipairs(lapsed) do total = total - amount_of(m) end
    redis.call('ZREMRANGEBYSCORE', zk, '-inf', now)
    if redis.call('ZCARD', zk) == 0 then total = 0 end -- no drift left over from float sums
    redis.call('HSET', hk, 't', fmt(total))
  end
  return total
end

local n = #KEYS / 2
local wait = 0
local totals = {}
for i = 1, n do
  local zk, hk = KEYS[2 * i - 1], KEYS[2 * i]
  local amount, limit = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  local total = used(zk, hk)
  totals[i] = total
  local excess = total + amount - limit
  if excess > 0 then
    local grants = redis.call('ZRANGE', zk, 0, -1, 'WITHSCORES')
    for j = 1, #grants, 2 do
      excess = excess - amount_of(grants[j])
      if excess <= 0 then
        wait = math.max(wait, tonumber(grants[j + 1]) - now)
        break
      end
    end
  end
end
if wait > 0 then return fmt(wait) end
for i = 1, n do
  local zk, hk = KEYS[2 * i - 1], KEYS[2 * i]
  local amount, window = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i + 1])
  local seq = redis.call('HINCRBY', hk, 'n', 1)
  redis.call('ZADD', zk, now + window, seq .. ':' .. fmt(amount))
  redis.call('HSET', hk, 't', fmt(totals[i] + amount))
  local ttl = math.ceil(window * 1000) + 60000 -- idle counters vanish a minute after their last grant lapses
  if redis.call('PTTL', zk) < ttl then
    redis.call('PEXPIRE', zk, ttl)
    redis.call('PEXPIRE', hk, ttl)
  end
end
return '0'
