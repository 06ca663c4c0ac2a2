-- claim_jobs(now_s, lease, worker, limit, rate, per, names, caps): due delayed jobs become waiting, then up to
-- `limit` waiting jobs (only those named in the set `names`, if given; at most caps[name] of a name in the table
-- `caps`, if given) move to ACTIVE for `worker`. `rate` ('' = none) and `per` are the queue's rate limit; meta
-- field gc, the queue's global concurrency, bounds its active jobs. Returns retry_in ('' = none, or seconds as
-- text), the claimed jobs' JSON, and whether the queue ran dry: fewer jobs than allowed were ready, so nothing more
-- is claimable before retry_in or an event that wakes workers. retry_in is '' when a job was claimed and the queue
-- did not run dry.
local CONCURRENCY_RECHECK = '0.050000' -- base.CONCURRENCY_RECHECK: no event says a slot freed
local function claim_jobs(now_s, lease, worker, limit, rate, per, names, caps)
  local now = tonumber(now_s)
  -- Due delayed jobs become waiting; their seq keeps their FIFO place among equal priorities.
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', SET.delayed, '-inf', now_s, 'LIMIT', 0, 10000)) do
    local jk = JP .. id
    local v = redis.call('HMGET', jk, 'state', 'pri', 'seq', 'ck')
    redis.call('ZREM', SET.delayed, id)
    if v[1] == 'delayed' then
      redis.call('HSET', jk, 'state', 'waiting')
      redis.call('ZREM', IX.delayed, v[4])
      enter('waiting', id, tonumber(v[2]) * PRI + tonumber(v[3]), v[3], v[4])
    end
  end
  local retry_in = ''
  local nxt = redis.call('ZRANGE', SET.delayed, 0, 0, 'WITHSCORES')
  if nxt[2] then retry_in = string.format('%.6f', math.max(0, tonumber(nxt[2]) - now)) end
  local qm = redis.call('HMGET', K_META, 'paused', 'gc')
  if limit <= 0 or qm[1] == '1' then return '', {}, false end
  if qm[2] then
    local room = tonumber(qm[2]) - redis.call('ZCARD', SET.active)
    if room <= 0 then return CONCURRENCY_RECHECK, {}, true end
    limit = math.min(limit, room)
  end

  -- Fixed window, the arithmetic of jobkit/limiter.py: window start `ws`, starts used `wu`.
  local ws, wu
  if rate ~= '' then
    rate = tonumber(rate)
    per = tonumber(per)
    local w = redis.call('HMGET', K_META, 'ws', 'wu')
    ws, wu = tonumber(w[1] or '0'), tonumber(w[2] or '0')
    if now >= ws + per then ws, wu = now, 0 end
    local granted = math.max(0, math.min(limit, rate - wu))
    if granted == 0 then return string.format('%.6f', ws + per - now), {}, false end
    limit = granted
  end

  local ids, scanned = {}, true
  if names or caps then
    local start = 0
    scanned = false -- every waiting job was looked at
    while #ids < limit and start < 10000 do
      local chunk = redis.call('ZRANGE', SET.waiting, start, start + 199)
      for _, id in ipairs(chunk) do
        if #ids < limit then
          local name = redis.call('HGET', JP .. id, 'name')
          local room = caps and caps[name]
          if (not names or names[name]) and (not room or room > 0) then
            ids[#ids + 1] = id
            if room then caps[name] = room - 1 end
          end
        end
      end
      if #chunk < 200 then scanned = true; break end
      start = start + 200
    end
    for _, id in ipairs(ids) do redis.call('ZREM', SET.waiting, id) end
  else
    local popped = redis.call('ZPOPMIN', SET.waiting, limit)
    for i = 1, #popped, 2 do ids[#ids + 1] = popped[i] end
  end

  local out, b = {}, {}
  local worker_json = cjson.encode(worker)
  for _, id in ipairs(ids) do
    local jk, dk = JP .. id, DP .. id
    local v = load(jk)
    if v and v.state == 'waiting' then
      local att = tonumber(v.att or '0') + 1
      local d = record(dk, v, redis.call('GET', dk), entry(now_s, 'active', att, worker_json, '""'))
      v.state, v.worker, v.lease, v.att, v.started, v.cr = 'active', worker, lease, att, now_s, '0'
      redis.call('HSET', jk, 'state', 'active', 'worker', worker, 'lease', lease, 'att', att, 'started', now_s,
        'cr', 0, 'nh', v.nh)
      later(b, 'ZREM', IX.waiting, v.ck)
      later(b, 'ZADD', SET.active, lease, id) -- enter('active', ...), gathered
      later(b, 'ZADD', IX.active, 0, v.ck)
      event(id, v.name, 'active', 'active', now_s, att, nil, nil, v.ow)
      out[#out + 1] = compose(v, d)
    end
  end
  flush(b)
  if rate ~= '' then redis.call('HSET', K_META, 'ws', ws, 'wu', wu + #out) end
  local dry = scanned and #ids < limit
  if #out > 0 and not dry then retry_in = '' end
  return retry_in, out, dry
end

-- The name filter and caps of a claim from ARGV[first]: the number of names ('-1': any name), the names, then
-- (name, cap) pairs to ARGV[last] (default: the end).
local function claim_filter(first, last)
  local n, names, caps = tonumber(ARGV[first]), nil, nil
  if n >= 0 then
    names = {}
    for i = first + 1, first + n do names[ARGV[i]] = true end
  end
  for i = first + 1 + math.max(n, 0), last or #ARGV, 2 do
    caps = caps or {}
    caps[ARGV[i]] = tonumber(ARGV[i + 1])
  end
  return names, caps
end
