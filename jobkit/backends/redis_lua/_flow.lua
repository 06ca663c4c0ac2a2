-- Flows: the rules of backends/_flows.py, kept here for Redis. A script touches its own queue's keys only, so what a
-- job owes a parent (or a child) on another queue is a notice: written to this queue's outbox in the same script,
-- returned to the caller, who delivers it (flow_deliver.lua on the other queue) and then removes it from the outbox;
-- a worker's maintenance delivers what a crash left behind. Delivering is idempotent: a child's end carries its end
-- number `fe` (field fe, +1 at each end that is counted and at each re-run), and a parent counts a notice only when its
-- number is past the one it has; a release carries the parent's arming epoch `fr`, and a child lets go only of a hold
-- from that epoch or earlier. Notices for this queue's own jobs are worked through in the same script (WORK).
--
-- Job fields: fw = '1' on every job of a flow (load() then reads the next four); up = the parent "<queue>\n<id>"; dn = the dependents (JSON list of {queue, id}); fl = a parent's
-- FlowStatus JSON; fr = its arming epoch; us = '1' while not sealed (its flow still being added: it waits, whatever
-- its counts); hd = the parents holding the job back from retention (JSON object "<queue>\n<id>" -> epoch).
-- A parent's ledger: hash FL..id, "<queue>\n<child id>" -> "<state or -> <fe> <owned 0/1> <held 0/1>", and zset FO..id,
-- the same members by position.
local MYQ, WORK, OUT, WOKE
BINDS[#BINDS + 1] = function()
  MYQ = string.sub(K_META, 9, -7) -- K_META is "jobkit:{<queue>}:meta"
  WORK, OUT, WOKE = {}, {}, false
end
local UNSEALED_FOR = 600 -- seconds a parent may stay unsealed before maintenance fails it (its adder died)

local function split_ref(r)
  local i = string.find(r, '\n', 1, true)
  return string.sub(r, 1, i - 1), string.sub(r, i + 1)
end

local function parse_link(e)
  local st, fe, own, held = string.match(e, '^(%S+) (%d+) (%d) (%d)$')
  return st, tonumber(fe), own, held
end

local function link_text(st, fe, own, held)
  return st .. ' ' .. fe .. ' ' .. own .. ' ' .. held
end

local function notify(n, now_s)
  if n.q == MYQ then
    WORK[#WORK + 1] = n
  else
    local text = cjson.encode(n)
    redis.call('ZADD', K_OUTBOX, now_s, text)
    OUT[#OUT + 1] = text
  end
end

local function flow_out()
  if #OUT > 0 then return OUT end
  return false
end

local function decoded(err)
  if err and err ~= 'null' and err ~= '' then return cjson.decode(err) end
  return cjson.null
end

-- A finished job that no parent holds any more: back within retention's reach.
local function unhold(id, v)
  local m = fkey(v.seq, id)
  redis.call('ZADD', SET[v.state], v.finished, m)
  if v.expires then redis.call('ZADD', EXP[v.state], v.expires, m) end
  redis.call('HINCRBY', K_META, 'held:' .. v.state, -1)
end

local function hold(id, v, wkey, epoch)
  local hd = {}
  if v.hd then hd = cjson.decode(v.hd) end
  local was = next(hd) ~= nil
  hd[wkey] = epoch
  v.hd = cjson.encode(hd)
  redis.call('HSET', JP .. id, 'hd', v.hd, 'fw', 1)
  if not was and FINISHED[v.state] then
    local m = fkey(v.seq, id)
    redis.call('ZADD', SET[v.state], tonumber(v.finished) + HELD, m)
    redis.call('ZREM', EXP[v.state], m)
    redis.call('HINCRBY', K_META, 'held:' .. v.state, 1)
  end
end

local function summary(fl)
  local ended = fl.completed + fl.failed + fl.cancelled
  local pct = 100
  if fl.total > 0 then pct = 100 * ended / fl.total end
  return cjson.encode({percent = pct, message = ended .. ' of ' .. fl.total .. ' children ended',
    extra = {children = {total = fl.total, completed = fl.completed, failed = fl.failed, cancelled = fl.cancelled}}})
end

local flow_ended

-- Cancel as cancel.lua does (a job waiting for children too); a cancelled job then counts as ended.
local function cancel_job(id, v, now_s)
  local att = v.att or '0'
  if v.state == 'waiting' or v.state == 'delayed' or v.state == 'waiting-children' then
    local err = '"cancelled before it started"'
    local exp = false
    if v.kfa then exp = string.format('%.17g', tonumber(now_s) + tonumber(v.kfa)) end
    local worker_json = v.worker and cjson.encode(v.worker) or 'null'
    leave(v.state, id, v.seq, v.ck)
    if v.state == 'waiting-children' then redis.call('ZREM', K_UNSEALED, id) end
    v.state, v.finished, v.err, v.expires = 'cancelled', now_s, err, exp
    record(DP .. id, v, nil, entry(now_s, 'cancelled', att, worker_json, '"cancelled"'))
    local f = {'state', 'cancelled', 'finished', now_s, 'err', err, 'nh', v.nh}
    if exp then f[#f + 1] = 'expires'; f[#f + 1] = exp else redis.call('HDEL', JP .. id, 'expires') end
    redis.call('HSET', JP .. id, unpack(f))
    enter_finished('cancelled', id, v, now_s, exp)
    event(id, v.name, 'cancelled', 'cancelled', now_s, att)
    if v.up or v.dn or v.fl then flow_ended(id, v, err, now_s) end
  elseif v.state == 'active' and v.cr ~= '1' then
    record(DP .. id, v, nil, entry(now_s, 'active', att, cjson.encode(v.worker), '"cancel requested"'))
    v.cr = '1'
    redis.call('HSET', JP .. id, 'cr', 1, 'nh', v.nh)
    event(id, v.name, 'cancel-requested', 'active', now_s, att)
  end
end

-- A parent ended: its links stop holding their jobs; with `mode`, its unfinished children are cancelled
-- ('unstarted': those not running; 'all': running ones are asked to stop).
local function release_links(pid, mode, now_s)
  local epoch = tonumber(redis.call('HGET', JP .. pid, 'fr') or '1')
  local by_q, order = {}, {}
  for _, ck in ipairs(redis.call('ZRANGE', FO .. pid, 0, -1)) do
    local e = redis.call('HGET', FL .. pid, ck)
    if e then
      local st, fe, own, held = parse_link(e)
      if held == '1' then
        redis.call('HSET', FL .. pid, ck, link_text(st, fe, own, '0'))
        local cq, cid = split_ref(ck)
        if not by_q[cq] then by_q[cq] = {}; order[#order + 1] = cq end
        by_q[cq][#by_q[cq] + 1] = cid
      end
    end
  end
  for _, cq in ipairs(order) do
    local ids = by_q[cq]
    for i = 1, #ids, 1000 do
      notify({k = 'r', q = cq, wq = MYQ, w = pid, r = epoch, m = mode, ids = {unpack(ids, i, math.min(i + 999, #ids))}},
        now_s)
    end
  end
end

-- The job `id` (fields v) just reached a finished state (its error JSON `err`): its parent and dependents count it;
-- a parent releases its links.
flow_ended = function(id, v, err, now_s)
  local refs = {}
  if v.up then refs[#refs + 1] = v.up end
  if v.dn then for _, r in ipairs(cjson.decode(v.dn)) do refs[#refs + 1] = r.queue .. '\n' .. r.id end end
  if #refs > 0 then
    local fe = redis.call('HINCRBY', JP .. id, 'fe', 1)
    for _, r in ipairs(refs) do
      local wq, wid = split_ref(r)
      notify({k = 'e', q = wq, w = wid, cq = MYQ, c = id, s = v.state, f = fe, n = v.name, x = decoded(err)}, now_s)
    end
  end
  if v.fl then
    local mode = ''
    if v.state == 'cancelled' then mode = 'all' elseif v.state ~= 'completed' then mode = 'unstarted' end
    release_links(id, mode, now_s)
  end
end

local function ready(pid, v, fl, now_s)
  leave('waiting-children', pid, v.seq, v.ck)
  local st = 'waiting'
  if tonumber(v.run_at) > tonumber(now_s) then st = 'delayed' end
  if st == 'delayed' then
    enter('delayed', pid, v.run_at, v.seq, v.ck)
  else
    enter('waiting', pid, tonumber(v.pri) * PRI + tonumber(v.seq), v.seq, v.ck)
  end
  v.state = st
  local bad = fl.failed + fl.cancelled
  record(DP .. pid, v, nil, entry(now_s, st, v.att or '0', 'null',
    cjson.encode('children ended: ' .. fl.completed .. ' completed, ' .. bad .. ' did not')))
  redis.call('HSET', JP .. pid, 'state', st, 'nh', v.nh)
  event(pid, v.name, 'waiting', st, now_s, v.att or '0')
  WOKE = true
end

local function fail_parent(pid, v, text, now_s)
  local err = cjson.encode(text)
  local exp = false
  if v.kfa then exp = string.format('%.17g', tonumber(now_s) + tonumber(v.kfa)) end
  leave('waiting-children', pid, v.seq, v.ck)
  v.state, v.finished, v.err, v.expires = 'failed', now_s, err, exp
  record(DP .. pid, v, nil, entry(now_s, 'failed', v.att or '0', 'null', cjson.encode(string.sub(text, 1, 200))))
  local f = {'state', 'failed', 'finished', now_s, 'err', err, 'nh', v.nh}
  if exp then f[#f + 1] = 'expires'; f[#f + 1] = exp end
  redis.call('HSET', JP .. pid, unpack(f))
  redis.call('HDEL', JP .. pid, 'tb')
  enter_finished('failed', pid, v, now_s, exp)
  if v.wh == nil then v.wh = redis.call('HGET', JP .. pid, 'wh') end -- FLOW_FIELDS leave it out
  outbox_add(pid, v, 'failed', now_s, err)
  event(pid, v.name, 'failed', 'failed', now_s, v.att or '0', 'x', err)
  flow_ended(pid, v, err, now_s)
end

-- `blame`: {c = id, n = name, s = state, x = error or null, own = '0'/'1'}, the link whose end decided.
local function blame_text(b)
  if not b then return 'a child did not complete' end
  local what = 'child'
  if b.own == '0' then what = 'dependency' end
  local t = what .. ' ' .. b.c .. ' (' .. (b.n or '') .. ') ' .. b.s
  if b.s == 'failed' and b.x and b.x ~= cjson.null and b.x ~= '' then t = t .. ': ' .. b.x end
  return t
end

local function decide(pid, v, fl, now_s, blame)
  if v.state ~= 'waiting-children' or v.us then return end
  local bad = fl.failed + fl.cancelled
  local kind = fl.policy.kind
  if bad > 0 and kind == 'fail_fast' then
    fail_parent(pid, v, blame_text(blame), now_s)
  elseif bad > 0 and kind == 'continue_partial' and bad > fl.policy.max_failed * fl.total then
    fail_parent(pid, v, bad .. ' of ' .. fl.total .. ' children failed or were cancelled (' ..
      string.format('%.0f', 100 * bad / fl.total) .. '%), more than max_failed=' ..
      string.format('%g', fl.policy.max_failed) .. ' allows; first: ' .. blame_text(blame), now_s)
  elseif fl.total - fl.completed - bad == 0 then
    ready(pid, v, fl, now_s)
  end
end

local FLOW_FIELDS = {'state', 'fl', 'us', 'seq', 'ck', 'pri', 'run_at', 'att', 'name', 'kfa', 'up', 'dn', 'hd', 'nh',
                     'sl', 'wt'}

-- Notice k='e': child n.c of queue n.cq ended in state n.s (end number n.f); parent n.w counts it.
local function deliver_end(n, now_s)
  local v = load(JP .. n.w, FLOW_FIELDS)
  if not v or not v.fl then return end
  local ck = n.cq .. '\n' .. n.c
  local e = redis.call('HGET', FL .. n.w, ck)
  if not e then return end
  local st, fe, own, held = parse_link(e)
  if tonumber(n.f) <= fe then return end
  redis.call('HSET', FL .. n.w, ck, link_text(n.s, n.f, own, held))
  if st == n.s then return end
  local fl = cjson.decode(v.fl)
  if st ~= '-' then fl[st] = fl[st] - 1 end
  fl[n.s] = fl[n.s] + 1
  v.fl = cjson.encode(fl)
  redis.call('HSET', JP .. n.w, 'fl', v.fl)
  if v.state == 'waiting-children' then
    local p = summary(fl)
    redis.call('HSET', JP .. n.w, 'progress', p)
    event(n.w, v.name, 'progress', 'waiting-children', now_s, v.att or '0', 'p', p)
  end
  local blame = {c = n.c, n = n.n, s = n.s, x = n.x, own = own}
  if v.us and n.s ~= 'completed' then redis.call('HSETNX', JP .. n.w, 'fb', cjson.encode(blame)) end
  decide(n.w, v, fl, now_s, blame)
end

-- Notice k='r': parent n.w of queue n.wq (arming epoch n.r) lets go of these children, cancelling per n.m.
local function deliver_release(n, now_s)
  local wkey = n.wq .. '\n' .. n.w
  for _, cid in ipairs(n.ids) do
    local v = load(JP .. cid)
    if v and v.hd then
      local hd = cjson.decode(v.hd)
      local e = hd[wkey]
      if e and e <= n.r then
        hd[wkey] = nil
        if next(hd) == nil then
          redis.call('HDEL', JP .. cid, 'hd')
          v.hd = false
          if FINISHED[v.state] then unhold(cid, v) end
        else
          v.hd = cjson.encode(hd)
          redis.call('HSET', JP .. cid, 'hd', v.hd)
        end
        if n.m ~= '' and v.up == wkey and (n.m == 'all' or v.state ~= 'active') then cancel_job(cid, v, now_s) end
      end
    end
  end
end

local function run_work(now_s)
  local i = 1
  while i <= #WORK do
    local n = WORK[i]
    i = i + 1
    if n.k == 'e' then deliver_end(n, now_s) else deliver_release(n, now_s) end
  end
  WORK = {}
end

-- Seal a parent: take the reports of its children's steps (ck -> {s = state or 'pending' or 'missing', f = fe,
-- o = owned 0/1, n = name, x = error}), count its ledger, and let its policy decide.
local function seal(pid, reports, now_s)
  local v = load(JP .. pid, FLOW_FIELDS)
  if not v or not v.fl then return end
  local fl = cjson.decode(v.fl)
  fl.completed, fl.failed, fl.cancelled = 0, 0, 0
  local members = redis.call('ZRANGE', FO .. pid, 0, -1)
  local blame = nil
  for _, ck in ipairs(members) do
    local st, fe, own, held = parse_link(redis.call('HGET', FL .. pid, ck))
    local r = reports[ck]
    if r then
      local rs = r.s
      if rs == 'pending' then rs = '-' elseif rs == 'missing' then rs = 'failed' end
      if r.f > fe or (r.f == fe and st == '-' and rs ~= '-') then st, fe = rs, r.f end
      if r.o ~= nil then own = tostring(r.o) end
      redis.call('HSET', FL .. pid, ck, link_text(st, fe, own, held))
    end
    if st ~= '-' then
      fl[st] = fl[st] + 1
      if st ~= 'completed' and not blame then
        local cq, cid = split_ref(ck)
        blame = {c = cid, s = st, own = own}
        if r then blame.n, blame.x = r.n, r.x end
        if r and r.s == 'missing' then blame.s = 'was removed'; blame.x = nil end
      end
    end
  end
  fl.total = #members
  v.fl = cjson.encode(fl)
  v.us = false
  -- a failure delivered while unsealed told more (the child's error) than a report does
  local told = redis.call('HGET', JP .. pid, 'fb')
  if told and blame then
    told = cjson.decode(told)
    if told.c == blame.c then blame = told end
  end
  redis.call('HSET', JP .. pid, 'fl', v.fl)
  redis.call('HDEL', JP .. pid, 'us', 'fb')
  redis.call('ZREM', K_UNSEALED, pid)
  if v.state == 'waiting-children' then redis.call('HSET', JP .. pid, 'progress', summary(fl)) end
  decide(pid, v, fl, now_s, blame)
end
