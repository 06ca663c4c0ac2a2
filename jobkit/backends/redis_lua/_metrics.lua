-- Metrics, as backends/_metrics.py counts them: per minute hash MP..minute, field "<task>\0<s><w>,<r>" counts the
-- jobs of a task that ended in state s (c, f) with wait and run times in buckets w and r; field "#" the minute's
-- total, whose first increment tells that the minute is new.
local KEPT_MINUTES = 20160 -- _metrics.KEPT_MINUTES: 14 days
local LN2 = 0.69314718055994530942 -- math.log(2): the standard libraries are not there while a function library loads
local metric_counts, metric_total, metric_minute -- this call's counts, added by flush_metrics
local metric_fields -- task name -> its field names, made once per call (number to text costs ~1 us)
BINDS[#BINDS + 1] = function() metric_counts, metric_total, metric_minute, metric_fields = {}, 0, false, {} end

local function bucket(s)
  if s < 0.001 then return 0 end
  return math.min(199, 1 + math.floor(4 * math.log(s / 0.001) / LN2))
end

local function count_metrics(v, state, now)
  metric_minute = math.floor(now / 60)
  local names = metric_fields[v.name]
  if not names then
    names = {p = v.name .. '\0', c = {}, f = {}}
    metric_fields[v.name] = names
  end
  local started = tonumber(v.started) or now
  local due = tonumber(v.run_at) or 0
  if due == 0 then due = tonumber(string.sub(v.ck, 1, string.find(v.ck, ':', 1, true) - 1)) end
  local s = state == 'completed' and 'c' or 'f'
  local w, r = bucket(started - due), bucket(now - started)
  local field = names[s][w * 256 + r]
  if not field then
    field = names.p .. s .. w .. ',' .. r
    names[s][w * 256 + r] = field
  end
  metric_counts[field] = (metric_counts[field] or 0) + 1
  metric_total = metric_total + 1
end

-- Adds the counts to this minute's hash, one HINCRBY per field; a new minute expires in 14 days, older ones go.
local function flush_metrics()
  if not metric_minute then return end
  local mk = MP .. metric_minute
  for field, n in pairs(metric_counts) do redis.call('HINCRBY', mk, field, n) end
  if redis.call('HINCRBY', mk, '#', metric_total) == metric_total then
    redis.call('EXPIRE', mk, KEPT_MINUTES * 60)
    redis.call('ZADD', K_MINUTES, metric_minute, metric_minute)
    for _, old in ipairs(redis.call('ZRANGEBYSCORE', K_MINUTES, '-inf', metric_minute - KEPT_MINUTES)) do
      redis.call('DEL', MP .. old)
    end
    redis.call('ZREMRANGEBYSCORE', K_MINUTES, '-inf', metric_minute - KEPT_MINUTES)
  end
  metric_counts, metric_total, metric_minute = {}, 0, false
end
