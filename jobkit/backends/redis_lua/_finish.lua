-- finish_outcomes(worker, now_s, first, last, want): ARGV[first..last] are outcomes, 8 arguments each
-- (OUTCOME_FIELDS in redis.py): id, state, result JSON (other states: 'u' if the attempt never started, which gives
-- its attempt back, else ''), error JSON, traceback JSON, run_at, expires_at ('' = none), history note JSON.
-- KEYS[NQ + 2k - 1], KEYS[NQ + 2k] are the hash and data keys of the k-th of them. Only jobs still ACTIVE and
-- held by `worker` move. Returns whether a job became claimable again, and (when `want`) the moved jobs' JSON.
local EV = {completed = 'completed', failed = 'failed', cancelled = 'cancelled',
            waiting = 'retrying', delayed = 'retrying'}
-- What finishing reads when it need not hand the whole job back.
local RESULT_IN_EVENT = 1024 -- bytes of result JSON a "completed" event carries (kind r), so waiters need no read
local FINISH_FIELDS = {'sl', 'state', 'seq', 'att', 'worker', 'ck', 'pri', 'nh', 'name', 'fw', 'wt', 'started',
                       'wh', 'run_at', 'ow'}

local function finish_outcomes(worker, now_s, first, last, want)
  local now = tonumber(now_s)
  local out, b = {}, {} -- b: the loop's sorted-set writes (see later in _lib.lua)
  local again = false
  for i = first, last, 8 do
    local o = {unpack(ARGV, i, i + 7)}
    local k = (i - first) / 8 + 1
    local jk, dk = KEYS[NQ + 2 * k - 1], KEYS[NQ + 2 * k]
    local id, wanted = o[1], o[2]
    local v = load(jk, (not want) and FINISH_FIELDS or nil)
    if v and v.state == 'active' and v.worker == worker then
      local att, seq, ck, err = v.att or '0', v.seq, v.ck, o[4]
      local state = wanted
      local f = {'cr', 0}
      local del = {'worker', 'lease'}
      v.worker, v.lease, v.cr = false, false, '0'
      if wanted == 'completed' then
        f[#f + 1] = 'result'; f[#f + 1] = o[3]
        del[#del + 1] = 'err'; del[#del + 1] = 'tb'
        v.result, v.err, v.tb = o[3], false, false
        err = 'null'
      else
        f[#f + 1] = 'err'; f[#f + 1] = err; f[#f + 1] = 'tb'; f[#f + 1] = o[5]
        v.err, v.tb = err, o[5]
      end
      later(b, 'ZREM', SET.active, id)
      later(b, 'ZREM', IX.active, ck)
      if FINISHED[wanted] then
        local exp = o[7]
        f[#f + 1] = 'finished'; f[#f + 1] = now_s
        v.finished = now_s
        if exp ~= '' then
          f[#f + 1] = 'expires'; f[#f + 1] = exp
          v.expires = exp
        else
          del[#del + 1] = 'expires'
          v.expires = false
        end
        v.seq, v.ck = seq, ck
        enter_finished(state, id, v, now_s, exp, b)
        if wanted == 'completed' then
          outbox_add(id, v, wanted, now_s, o[3])
        elseif wanted == 'failed' then
          outbox_add(id, v, wanted, now_s, err)
        end
      else
        local run_at = o[6]
        if o[3] == 'u' then
          att = tostring(math.max((tonumber(att) or 1) - 1, 0))
          f[#f + 1] = 'att'; f[#f + 1] = att
          v.att = att
        end
        seq = redis.call('HINCRBY', K_META, 'seq', 1)
        ck = reseq(ck, seq, id)
        if tonumber(run_at) > now then state = 'delayed' else state = 'waiting' end
        f[#f + 1] = 'run_at'; f[#f + 1] = run_at; f[#f + 1] = 'seq'; f[#f + 1] = seq
        f[#f + 1] = 'ck'; f[#f + 1] = ck
        v.run_at, v.seq, v.ck = run_at, seq, ck
        if state == 'delayed' then
          enter('delayed', id, run_at, seq, ck)
        else
          enter('waiting', id, tonumber(v.pri) * PRI + seq, seq, ck)
        end
        again = true
      end
      v.state = state
      local d = record(dk, v, want and redis.call('GET', dk), entry(now_s, state, att, 'null', o[8]))
      f[#f + 1] = 'state'; f[#f + 1] = state; f[#f + 1] = 'nh'; f[#f + 1] = v.nh
      redis.call('HSET', jk, unpack(f))
      redis.call('HDEL', jk, unpack(del))
      if wanted == 'completed' and #o[3] <= RESULT_IN_EVENT then
        event(id, v.name, EV[wanted], state, now_s, att, 'r', o[3], v.ow)
      elseif err ~= 'null' then
        event(id, v.name, EV[wanted], state, now_s, att, 'x', err, v.ow)
      else
        event(id, v.name, EV[wanted], state, now_s, att, nil, nil, v.ow)
      end
      if state == 'completed' or state == 'failed' then count_metrics(v, state, now) end
      if FINISHED[state] and (v.up or v.dn or v.fl) then
        flush(b) -- a flow's rules may read and move other jobs of this queue
        flow_ended(id, v, err, now_s)
      end
      if want then out[#out + 1] = compose(v, d) end
    end
  end
  flush(b)
  flush_metrics()
  run_work(now_s)
  return again or WOKE, out
end
