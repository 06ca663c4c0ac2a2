-- flow_add: add this queue's jobs of a flow, or arm them again (the rules of backends/_flows.py; see _flow.lua).
-- ARGV[1] = now; then 20 arguments per node: the 13 of add.lua (blanks but the id for a 'dep' node), then op ('add': a
-- job of the flow; 'dep': an existing job a parent depends on), the parent "<queue>\n<id>" ('' for the root), the
-- parent's arming epoch ('' when the parent is armed in this script, '-' when it was not armed), the parent ledger's fe
-- for this child ('' when unknown), the flow JSON and links JSON ([[queue, id, owned], ...]) of a parent ('' else), and
-- '1' to seal that parent here (all its links are in this script). Parents come before their children.
-- Returns {own event span or false, notices or false, then per node {stored: the new job's seq, or its JSON (a parent,
-- or a job that existed), or false; its report to its parent (JSON) or false; {epoch, ledger fes} (JSON) of a parent
-- armed here, or false}}.
local now_s = ARGV[1]
local N = 20
local ARMED, REPORTS, SEAL, results = {}, {}, {}, {}

local function report_of(id, v, owned)
  local s = 'pending'
  if FINISHED[v.state] then s = v.state end
  return {s = s, f = tonumber(redis.call('HGET', JP .. id, 'fe') or '0'), o = owned, n = v.name, x = decoded(v.err)}
end

local function add_new(f, state, up, epoch, fe)
  local id = f[1]
  local seq = redis.call('HINCRBY', K_META, 'seq', 1)
  local h, ck, x = new_job_fields(f, state, seq)
  if up ~= '' then
    h[#h + 1] = 'up'; h[#h + 1] = up
    h[#h + 1] = 'hd'; h[#h + 1] = cjson.encode({[up] = epoch})
  end
  h[#h + 1] = 'fw'; h[#h + 1] = 1
  if fe > 0 then h[#h + 1] = 'fe'; h[#h + 1] = fe end
  redis.call('HSET', JP .. id, unpack(h))
  if x then index_job(id, x.ow, x.tg, ck, seq, true) end
  if state == 'delayed' then
    enter('delayed', id, f[6], seq, ck)
  elseif state == 'waiting' then
    enter('waiting', id, tonumber(f[5]) * PRI + seq, seq, ck)
  else
    enter('waiting-children', id, seq, seq, ck)
  end
  event(id, f[8], 'added', state, now_s, f[9], nil, nil, x and x.ow or false)
  return seq
end

local function register(id, v, up)
  if v.up == up then return end
  local dn = {}
  if v.dn then dn = cjson.decode(v.dn) end
  local q, wid = split_ref(up)
  for _, r in ipairs(dn) do if r.queue == q and r.id == wid then return end end
  dn[#dn + 1] = {queue = q, id = wid}
  v.dn = cjson.encode(dn)
  redis.call('HSET', JP .. id, 'dn', v.dn, 'fw', 1)
end

-- A failed or cancelled child of a parent armed again runs again, past any end its parent counted.
local function rerun(id, v, lfe)
  leave(v.state, id, v.seq, v.ck, v.hd)
  record(DP .. id, v, nil, entry(now_s, 'waiting', 0, 'null', '"retried by request"'))
  local fe = math.max(tonumber(redis.call('HGET', JP .. id, 'fe') or '0'), lfe) + 1
  redis.call('HSET', JP .. id, 'state', 'waiting', 'att', 0, 'stalls', 0, 'cr', 0, 'run_at', now_s, 'nh', v.nh, 'fe', fe)
  redis.call('HDEL', JP .. id, 'err', 'tb', 'finished', 'expires')
  enter('waiting', id, tonumber(v.pri) * PRI + tonumber(v.seq), v.seq, v.ck)
  event(id, v.name, 'waiting', 'waiting', now_s, 0)
  v.state, v.err, v.finished, v.expires = 'waiting', false, false, false
  WOKE = true
end

-- Link a parent to its children and dependencies and make it wait (unsealed), if new or to run again.
local function arm(id, v, new, fl_json, links, lfe)
  if new then
    redis.call('DEL', FL .. id, FO .. id)
  else
    if redis.call('EXISTS', FO .. id) == 0 then return false end -- a job added some other way: left as it is
    if v.state == 'waiting' or v.state == 'delayed' or v.state == 'active' then return false end
    if v.state == 'completed' then
      local all = true
      for _, e in ipairs(redis.call('HVALS', FL .. id)) do
        if string.sub(e, 1, 10) ~= 'completed ' then all = false; break end
      end
      if all then return false end
    end
  end
  local epoch = redis.call('HINCRBY', JP .. id, 'fr', 1)
  local fes = {}
  for pos, l in ipairs(links) do
    local ck = l[1] .. '\n' .. l[2]
    local e = redis.call('HGET', FL .. id, ck)
    local st, fe, own = '-', 0, (l[3] and '1' or '0')
    if e then st, fe, own = parse_link(e) end
    redis.call('HSET', FL .. id, ck, link_text(st, fe, own, '1'))
    redis.call('ZADD', FO .. id, pos, ck)
    fes[#fes + 1] = fe
  end
  local fl = cjson.decode(fl_json)
  fl.total, fl.completed, fl.failed, fl.cancelled = #links, 0, 0, 0
  if v.state ~= 'waiting-children' then
    leave(v.state, id, v.seq, v.ck, v.hd)
    v.att = '0'
    record(DP .. id, v, nil, entry(now_s, 'waiting-children', 0, 'null', '"run again with its flow"'))
    -- past any end its own parent counted, as a child run again is (see rerun)
    local fe = math.max(tonumber(redis.call('HGET', JP .. id, 'fe') or '0'), lfe) + 1
    redis.call('HSET', JP .. id, 'state', 'waiting-children', 'att', 0, 'stalls', 0, 'cr', 0, 'nh', v.nh, 'fe', fe)
    redis.call('HDEL', JP .. id, 'err', 'tb', 'finished', 'expires', 'result', 'worker', 'lease')
    enter('waiting-children', id, v.seq, v.seq, v.ck)
    event(id, v.name, 'waiting-children', 'waiting-children', now_s, 0)
    v.state = 'waiting-children'
  end
  v.fl, v.us = cjson.encode(fl), '1'
  redis.call('HSET', JP .. id, 'fl', v.fl, 'us', 1, 'fw', 1)
  redis.call('ZADD', K_UNSEALED, tonumber(now_s) + UNSEALED_FOR, id)
  return epoch, fes
end

local function ledger_fe(up, id)
  local pq, pid = split_ref(up)
  if pq ~= MYQ then return 0 end
  local e = redis.call('HGET', FL .. pid, MYQ .. '\n' .. id)
  if not e then return 0 end
  local _, fe = parse_link(e)
  return fe
end

for i = 2, #ARGV, N do
  local f = {unpack(ARGV, i, i + 12)}
  local op, up, pep, pfe, fl, links, here = unpack(ARGV, i + 13, i + 19)
  local id = f[1]
  local epoch = nil
  if up ~= '' then
    if pep == '' then epoch = ARMED[up] elseif pep ~= '-' then epoch = tonumber(pep) end
  end
  local res = {false, false, false}
  local lfe = 0
  if pfe ~= '' then lfe = tonumber(pfe) elseif up ~= '' and pep == '' then lfe = ledger_fe(up, id) end
  if up ~= '' and not epoch then
    if op == 'add' then res[1] = job_json(JP .. id, DP .. id) end -- its parent stays as it is: so does it
  elseif op == 'dep' then
    local v = load(JP .. id)
    local rep = {s = 'missing', f = lfe + 1, o = 0}
    if v then
      register(id, v, up)
      hold(id, v, up, epoch)
      rep = report_of(id, v, (v.up == up) and 1 or 0)
    end
    res[2] = cjson.encode(rep)
    REPORTS[up] = REPORTS[up] or {}
    REPORTS[up][MYQ .. '\n' .. id] = rep
  else
    local new = redis.call('SET', DP .. id, f[2], 'NX')
    local v
    if new then
      local state = f[4]
      if links ~= '' then state = 'waiting-children' end
      local fe0 = 0
      if lfe > 0 then fe0 = lfe + 1 end
      res[1] = add_new(f, state, up, epoch, fe0)
      v = load(JP .. id)
    else
      v = load(JP .. id)
      if up ~= '' then
        register(id, v, up)
        if links == '' and (v.state == 'failed' or v.state == 'cancelled') then rerun(id, v, lfe) end
        hold(id, v, up, epoch)
      end
    end
    if links ~= '' then
      local ep, fes = arm(id, v, new, fl, cjson.decode(links), lfe)
      if ep then
        ARMED[MYQ .. '\n' .. id] = ep
        res[3] = cjson.encode({ep, fes})
        if here == '1' then SEAL[#SEAL + 1] = id end
      end
    end
    if up ~= '' then -- after arming: a parent armed again reports it waits
      local rep = report_of(id, v, (v.up == up) and 1 or 0)
      res[2] = cjson.encode(rep)
      REPORTS[up] = REPORTS[up] or {}
      REPORTS[up][MYQ .. '\n' .. id] = rep
    end
    if not new or links ~= '' then res[1] = false end
  end
  results[#results + 1] = res
end
for _, pid in ipairs(SEAL) do seal(pid, REPORTS[MYQ .. '\n' .. pid] or {}, now_s) end
run_work(now_s)
-- Jobs that existed, and parents, as they now are (after sealing).
local out = {WOKE and span() or false, flow_out()}
for k, res in ipairs(results) do
  local i = 2 + (k - 1) * N
  if ARGV[i + 13] == 'add' and res[1] == false and redis.call('EXISTS', JP .. ARGV[i]) == 1 then
    res[1] = job_json(JP .. ARGV[i], DP .. ARGV[i])
  end
  out[#out + 1] = res
end
return out
