-- recover: ARGV = now. ACTIVE jobs whose lease ended before now: stalls + 1, then FAILED past max_stalls (counted
-- in the metrics), else WAITING with a new seq, in the order the jobs were added. Returns {own event span or false,
-- notices for other queues or false, moved job JSON...}.
local now_s = ARGV[1]
local out = {false}
local lost = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', SET.active, '-inf', '(' .. now_s)) do
  local v = load(JP .. id)
  if not v or v.state ~= 'active' then
    redis.call('ZREM', SET.active, id)
  else
    v.id = id
    lost[#lost + 1] = v
  end
end
table.sort(lost, function(a, b) return tonumber(a.o or a.seq) < tonumber(b.o or b.seq) end)
for _, v in ipairs(lost) do
  local id = v.id
  local jk, dk = JP .. id, DP .. id
  do
    local lost_by, att = v.worker or 'None', v.att or '0'
    local stalls, ms = tonumber(v.stalls or '0') + 1, tonumber(v.ms)
    leave('active', id, v.seq, v.ck)
    event(id, v.name, 'stalled', 'active', now_s, att)
    v.worker, v.lease, v.cr, v.stalls = false, false, '0', stalls
    local f = {'stalls', stalls, 'cr', 0}
    if stalls > ms then
      local err = cjson.encode('job stalled ' .. stalls .. ' times (its worker stopped renewing the lease, last '
        .. lost_by .. '); max_stalls=' .. ms)
      local exp = false
      if v.kfa then exp = string.format('%.17g', tonumber(now_s) + tonumber(v.kfa)) end
      v.state, v.finished, v.err, v.expires = 'failed', now_s, err, exp
      f[#f + 1] = 'finished'; f[#f + 1] = now_s; f[#f + 1] = 'err'; f[#f + 1] = err
      if exp then f[#f + 1] = 'expires'; f[#f + 1] = exp else redis.call('HDEL', jk, 'expires') end
      enter_finished('failed', id, v, now_s, exp)
      outbox_add(id, v, 'failed', now_s, err)
      event(id, v.name, 'failed', 'failed', now_s, att, 'x', err)
      if v.up or v.dn or v.fl then flow_ended(id, v, err, now_s) end
      count_metrics(v, 'failed', tonumber(now_s))
    else
      local seq = redis.call('HINCRBY', K_META, 'seq', 1)
      v.state, v.seq, v.ck, v.run_at = 'waiting', seq, reseq(v.ck, seq, id), now_s
      f[#f + 1] = 'seq'; f[#f + 1] = seq; f[#f + 1] = 'ck'; f[#f + 1] = v.ck; f[#f + 1] = 'run_at'; f[#f + 1] = now_s
      enter('waiting', id, tonumber(v.pri) * PRI + seq, seq, v.ck)
      event(id, v.name, 'waiting', 'waiting', now_s, att)
    end
    local d = record(dk, v, redis.call('GET', dk), entry(now_s, v.state, att, 'null',
      cjson.encode('lease of ' .. lost_by .. ' expired (stall ' .. stalls .. ')')))
    f[#f + 1] = 'state'; f[#f + 1] = v.state; f[#f + 1] = 'nh'; f[#f + 1] = v.nh
    redis.call('HSET', jk, unpack(f))
    redis.call('HDEL', jk, 'worker', 'lease')
    out[#out + 1] = compose(v, d)
  end
end
flush_metrics()
run_work(now_s)
if #out > 1 or WOKE then out[1] = span() end
table.insert(out, 2, flow_out())
return out
