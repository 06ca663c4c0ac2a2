-- Prepended to every queue script. KEYS[1..NQ] are the queue's keys (QUEUE_KEYS in redis.py). A job has
-- two keys: its hash JP..id (small scalar fields, so Redis keeps it a compact listpack) and its data string
-- DP..id = the static Job JSON members, then `,"history":[` and the history entries joined by ",\n"
-- (appended with APPEND; a raw newline never occurs inside compact JSON). Hash field `sl` is the length of
-- that data string before the first entry. Every key carries the queue's {hash tag}, so a
-- script touches one cluster slot only; callers pass job keys in KEYS when they know the ids.
-- Numbers arrive as text and are stored as that text, so no float is re-printed with Lua's 14 digits.
-- Invariant: a job is in exactly one state set and one index set, those of its `state` field.
-- Each script checks before it writes, so a refused first write (OOM) leaves nothing half-done.
-- Per-call state, set by bind() at the start of every call: the queue's key names (from KEYS) and what one call
-- gathers (events, ends, held wake-up). With EVAL the code above a script's body runs at every call; loaded as a
-- function library (FUNCTION LOAD, Redis 7) it runs once, and only bind() runs per call. A part that keeps state of
-- its own adds its reset to BINDS.
local K_META, K_EVENTS, JP, DP
local SET, IX, EXP = {}, {}, {}
-- Flows (see _flow.lua): notices for other queues, parents not yet sealed, and each parent's ledger (prefixes).
local K_OUTBOX, K_UNSEALED, FL, FO
-- Webhooks' outbox (see _outbox.lua) and the queue's own webhook (the record hash of kind "webhook").
local WH = {}
-- Metrics (see _metrics.lua): the prefix of the per-minute hashes, and the zset of their minutes.
local MP, K_MINUTES
-- Waiters' inboxes (see notify_end), and the wake stream (see event).
local INBOX, K_WAKE
-- The caller's own inbox token (the finish scripts set it): the ends its waiters wait for go back in the script's
-- answer (HERE_ENDS), not through its inbox.
local HERE, HERE_ENDS
-- The event ids of this call (see span), and its wake-up (see event).
local first_event, last_event, n_events, woke_stream
-- While HOLD_WAKE is set (add.lua with an idle worker's offer), the first waking event is only noted in `held_wake`:
-- the script writes the wake entry later (wake_held) only if the jobs it added were not all handed to that worker.
local HOLD_WAKE, held_wake
local BINDS = {}

local function bind()
  K_META, K_EVENTS = KEYS[1], KEYS[2]
  SET.waiting, SET.delayed, SET.active, SET.completed, SET.failed, SET.cancelled = KEYS[3], KEYS[4], KEYS[5],
    KEYS[6], KEYS[7], KEYS[8]
  SET['waiting-children'] = KEYS[20]
  IX.waiting, IX.delayed, IX.active, IX.completed, IX.failed, IX.cancelled = KEYS[9], KEYS[10], KEYS[11],
    KEYS[12], KEYS[13], KEYS[14]
  IX['waiting-children'] = KEYS[21]
  EXP.completed, EXP.failed, EXP.cancelled = KEYS[15], KEYS[16], KEYS[17]
  JP, DP = KEYS[18], KEYS[19]
  K_OUTBOX, K_UNSEALED, FL, FO = KEYS[22], KEYS[23], KEYS[24], KEYS[25]
  WH.fixed, WH.status, WH.due, WH.ended, WH.url = KEYS[26], KEYS[27], KEYS[28], KEYS[29], KEYS[30]
  MP, K_MINUTES = KEYS[31], KEYS[32]
  INBOX, K_WAKE = string.sub(JP, 1, -3) .. 'done:', string.sub(JP, 1, -3) .. 'wake'
  HERE, HERE_ENDS = false, {}
  first_event, last_event, n_events, woke_stream = false, false, 0, false
  HOLD_WAKE, held_wake = false, false
  for i = 1, #BINDS do BINDS[i]() end
end
local NQ = 32
local HELD = 10000000000000 -- added to a finished job's score while a parent holds it: out of retention's reach
local PRI = 1099511627776 -- 2^40: waiting score = priority * 2^40 + seq, exact FIFO within a priority
local FINISHED = {completed = true, failed = true, cancelled = true}
local EVENTS_MAX = 10000
local HIST_MAX = 50 -- models.HISTORY_LIMIT

-- Finished sets order ties of finished_at by seq: member "<seq, 12 digits>:<id>".
local function fkey(seq, id)
  return string.format('%012d:', seq) .. id
end

local function after_colon(s)
  return string.sub(s, string.find(s, ':', 1, true) + 1)
end

-- Index member "<created_at, fixed width>:<seq, 12 digits>:<id>": members sort by (created_at, seq).
local function reseq(ck, seq, id)
  return string.sub(ck, 1, string.find(ck, ':', 1, true) - 1) .. string.format(':%012d:', seq) .. id
end

-- The end of a job that waiters registered on (watch.lua: field wt, their inbox tokens) is pushed to each inbox
-- "done:<token>" as "<state>\0<the fields of an event entry>" (a small result included). An inbox nobody reads keeps
-- its newest INBOX_MAX ends and expires a minute after the last.
local INBOX_TTL_MS, INBOX_MAX, INBOX_RESULT_MAX = 60000, 1000, 1024

local function notify_end(state, id, v, at)
  local packed = state .. '\0' .. id .. '\0' .. v.name .. '\0' .. state .. '\0' .. at .. '\0' .. (v.att or '0')
  if state == 'completed' and v.result and #v.result <= INBOX_RESULT_MAX then
    packed = packed .. '\0r\0' .. v.result
  end
  for token in string.gmatch(v.wt, '%S+') do
    if token == HERE then
      HERE_ENDS[#HERE_ENDS + 1] = packed
    else
      if redis.call('LPUSH', INBOX .. token, packed) > INBOX_MAX then redis.call('RPOP', INBOX .. token) end
      redis.call('PEXPIRE', INBOX .. token, INBOX_TTL_MS)
    end
  end
end

-- Owner and tag indexes: a job with an owner (hash field ow) is in the sorted set K_META:owner:<owner>, and one with
-- tags (field tg, a JSON list of "key=value") in K_META:tag:<key=value> for each, from its add to its removal. Score
-- 0, member "<created_at>:<first seq (field o)>:<id>": newest first by ZREVRANGEBYLEX, like the state indexes.
local function owner_key(owner) return K_META .. ':owner:' .. owner end
local function tag_key(tag) return K_META .. ':tag:' .. tag end

-- A new job's hash fields from its add arguments f (add.lua's 13; flow_add.lua's nodes start with the same), in
-- `state` with sequence number `seq`; also its claim key and its extra fields (owner, tags, ...) decoded, or false.
local function new_job_fields(f, state, seq)
  local ck = f[7] .. string.format(':%012d:', seq) .. f[1]
  local h = {'sl', f[3], 'state', state, 'pri', f[5], 'seq', seq, 'o', seq, 'run_at', f[6], 'name', f[8],
             'ms', f[10], 'ck', ck, 'nh', f[12]}
  if f[9] ~= '0' then h[#h + 1] = 'att'; h[#h + 1] = f[9] end
  if f[11] ~= '' then h[#h + 1] = 'kfa'; h[#h + 1] = f[11] end
  local x = f[13] ~= '' and cjson.decode(f[13])
  if x then
    for name, value in pairs(x) do h[#h + 1] = name; h[#h + 1] = value end
  end
  return h, ck, x
end

local function index_job(id, ow, tg, ck, o, add)
  if not ow and not tg then return end
  local m = reseq(ck, o, id)
  local function put(key) if add then redis.call('ZADD', key, 0, m) else redis.call('ZREM', key, m) end end
  if ow then put(owner_key(ow)) end
  if tg then for _, t in ipairs(cjson.decode(tg)) do put(tag_key(t)) end end
end

-- Sorted-set writes of a loop over many jobs, sent at its end as one call per key and command (a call costs a few
-- microseconds whatever its size): `later(b, cmd, key, ...)` gathers ZADD score-member pairs or ZREM members in
-- b, `flush(b)` sends them. A loop flushes before anything reads those sets.
local CHUNK = 4000 -- arguments per call: unpack() gives at most ~8000 values

-- Runs command t[1] (with the key t[2] when `keyed`) on the rest of t, CHUNK arguments per call.
local function in_chunks(t, keyed)
  local first = keyed and 3 or 2
  for i = first, #t, CHUNK do
    local j = math.min(#t, i + CHUNK - 1)
    if keyed then redis.call(t[1], t[2], unpack(t, i, j)) else redis.call(t[1], unpack(t, i, j)) end
  end
end

local function later(b, cmd, key, a, m)
  local k = cmd .. ' ' .. key
  local t = b[k]
  if not t then
    t = {cmd, key}
    b[k] = t
    b[#b + 1] = t
  end
  t[#t + 1] = a
  if m then t[#t + 1] = m end
end

local function flush(b)
  for _, t in ipairs(b) do
    b[t[1] .. ' ' .. t[2]] = nil
    in_chunks(t, true)
  end
  for i = #b, 1, -1 do b[i] = nil end
end

-- A finished job held by a parent (field hd) sorts past every other in its state's set, out of retention's reach
-- (the meta counter held:<state> says how many), and has no expiry entry until it is released (see _flow.lua).
-- With `b`, the sorted-set writes are gathered there (see later).
local function enter_finished(state, id, v, at, exp, b)
  local own = not b
  b = b or {}
  if v.wt then notify_end(state, id, v, at) end
  if v.hd then
    redis.call('ZADD', SET[state], tonumber(at) + HELD, fkey(v.seq, id))
    redis.call('HINCRBY', K_META, 'held:' .. state, 1)
  else
    later(b, 'ZADD', SET[state], at, fkey(v.seq, id))
    if exp and exp ~= '' then later(b, 'ZADD', EXP[state], exp, fkey(v.seq, id)) end
  end
  later(b, 'ZADD', IX[state], 0, v.ck)
  if own then flush(b) end
end

local function held_count(state)
  return tonumber(redis.call('HGET', K_META, 'held:' .. state) or '0')
end

local function enter(state, id, score, seq, ck)
  if FINISHED[state] then
    redis.call('ZADD', SET[state], score, fkey(seq, id))
  else
    redis.call('ZADD', SET[state], score, id)
  end
  redis.call('ZADD', IX[state], 0, ck)
end

local function leave(state, id, seq, ck, held)
  if FINISHED[state] then
    local m = fkey(seq, id)
    redis.call('ZREM', SET[state], m)
    redis.call('ZREM', EXP[state], m)
    if held then redis.call('HINCRBY', K_META, 'held:' .. state, -1) end
  else
    redis.call('ZREM', SET[state], id)
  end
  redis.call('ZREM', IX[state], ck)
end

local function entry(at, state, attempt, worker_json, note_json)
  return '{"at":' .. at .. ',"state":"' .. state .. '","attempt":' .. attempt .. ',"worker":' .. worker_json
    .. ',"note":' .. note_json .. '}'
end

-- Event entries are {e = kind, v = "<job id>\0<name>\0<state>\0<at>\0<attempt>[\0p|x\0<JSON>]"}; kinds "added",
-- "retrying", "waiting" and the job-less "resumed" also wake workers. The stream is trimmed before a script's
-- first event and every 1000th, not on each XADD. A script's events are contiguous in the stream; `span()`
-- tells the caller which ids were its own. The first waking event of a script also goes, by its id (field f), to
-- the short stream "wake", which is all that workers waiting for work read.
local WAKE_MAX = 100
local WAKING = {added = true, retrying = true, waiting = true, resumed = true}

local function wake_held()
  if held_wake and not woke_stream then
    woke_stream = true
    redis.call('XADD', K_WAKE, 'MAXLEN', '~', WAKE_MAX, '*', 'f', held_wake)
  end
end

-- An event of a job with an owner (hash field ow) carries it in a third field, o, so a feed can be scoped to it.
-- `ow`: the owner when the caller read it (false: none); nil to read it here.
local function event(id, name, ev, state, at, attempt, k, v, ow)
  if n_events % 1000 == 0 then redis.call('XTRIM', K_EVENTS, 'MAXLEN', '~', EVENTS_MAX) end
  n_events = n_events + 1
  local packed = id .. '\0' .. name .. '\0' .. state .. '\0' .. at .. '\0' .. attempt
  if k then packed = packed .. '\0' .. k .. '\0' .. v end
  if ow == nil then ow = id ~= '' and redis.call('HGET', JP .. id, 'ow') end
  local eid
  if ow then
    eid = redis.call('XADD', K_EVENTS, '*', 'e', ev, 'v', packed, 'o', ow)
  else
    eid = redis.call('XADD', K_EVENTS, '*', 'e', ev, 'v', packed)
  end
  if not first_event then first_event = eid end
  last_event = eid
  if not woke_stream and WAKING[ev] then
    if HOLD_WAKE then
      held_wake = held_wake or eid
    else
      woke_stream = true
      redis.call('XADD', K_WAKE, 'MAXLEN', '~', WAKE_MAX, '*', 'f', eid)
    end
  end
end

local function span()
  if not first_event then return false end
  return first_event .. ' ' .. last_event
end

-- Every hash field a script may need; load() returns them by name (absent ones are false, as Redis gives them).
local F = {'sl', 'state', 'seq', 'run_at', 'att', 'stalls', 'cr', 'worker', 'lease', 'started', 'finished',
           'expires', 'result', 'progress', 'checkpoint', 'err', 'tb', 'pri', 'ck', 'nh', 'name', 'ms', 'kfa', 'o',
           'fw', 'wt', 'wh', 'ow'}
local OPTIONAL = {{'lease', 'lease_until'}, {'started', 'started_at'}, {'finished', 'finished_at'},
                  {'expires', 'expires_at'}, {'result', 'result'}, {'checkpoint', 'checkpoint'}, {'err', 'error'},
                  {'tb', 'traceback'}}

-- `fields` (default F) must list 'state' second: a job without it does not exist. A job of a flow (field fw) has its
-- flow fields read too (see _flow.lua), so that jobs in no flow pay one field for flows, not four.
local function load(jk, fields)
  fields = fields or F
  local a = redis.call('HMGET', jk, unpack(fields))
  if not a[2] then return nil end
  local v = {}
  for i = 1, #fields do v[fields[i]] = a[i] end
  if v.fw and v.up == nil then
    local x = redis.call('HMGET', jk, 'up', 'dn', 'fl', 'hd')
    v.up, v.dn, v.fl, v.hd = x[1], x[2], x[3], x[4]
  end
  return v
end

-- The whole Job as JSON text (for Job.model_validate_json in Python) from its fields and data string.
local function compose(v, d)
  local p = {'{', d, '],"state":"', v.state, '","seq":', v.seq, ',"run_at":', v.run_at,
             ',"attempts":', v.att or '0', ',"stalls":', v.stalls or '0', ',"cancel_requested":',
             (v.cr == '1') and 'true' or 'false', ',"progress":', v.progress or '{}'}
  if v.worker then p[#p + 1] = ',"worker":'; p[#p + 1] = cjson.encode(v.worker) end
  if v.fl then p[#p + 1] = ',"flow":'; p[#p + 1] = v.fl end
  if v.dn then p[#p + 1] = ',"dependents":'; p[#p + 1] = v.dn end
  for _, o in ipairs(OPTIONAL) do
    local x = v[o[1]]
    if x then p[#p + 1] = ',"' .. o[2] .. '":'; p[#p + 1] = x end
  end
  p[#p + 1] = '}'
  return table.concat(p)
end

local function job_json(jk, dk)
  local v = load(jk)
  if not v then return false end
  return compose(v, redis.call('GET', dk))
end

-- Appends a history entry to the loaded job `v` (setting v.nh) and to its data string, keeping the last
-- HIST_MAX entries. Returns the new data string when given the current one `d` (nil is fine otherwise).
local function record(dk, v, d, e)
  local nh = tonumber(v.nh) + 1
  v.nh = nh
  if nh <= HIST_MAX then
    local add = (nh == 1) and e or (',\n' .. e)
    redis.call('APPEND', dk, add)
    return d and (d .. add)
  end
  d = d or redis.call('GET', dk)
  local sl = tonumber(v.sl)
  local h = string.sub(d, sl + 1) .. ',\n' .. e
  while nh > HIST_MAX do
    h = string.sub(h, string.find(h, ',\n', 1, true) + 2)
    nh = nh - 1
  end
  v.nh = nh
  d = string.sub(d, 1, sl) .. h
  redis.call('SET', dk, d)
  return d
end
