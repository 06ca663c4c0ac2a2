-- quarantine: ARGV = worker, now, error JSON, traceback JSON, expires_at ('' = none), reset options ('1'/'0'),
-- history note JSON; KEYS[NQ + 1], KEYS[NQ + 2] are the job's hash and data keys. An ACTIVE job held by `worker`
-- whose record cannot be read as a Job (a non-finite number from an older jobkit, a hand edit) becomes FAILED,
-- with what can make a record unreadable reset: numbers that are not finite, its progress and, when asked, its
-- options (the last member of the data string's static part, see add.lua). Returns {1 if it moved, else 0;
-- notices for other queues or false}.
local jk, dk = KEYS[NQ + 1], KEYS[NQ + 2]
local worker, now_s, err, exp = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local v = load(jk)
if not (v and v.state == 'active' and v.worker == worker) then return {0, false} end
local id = string.sub(jk, #JP + 1)
local function finite(x)
  local n = tonumber(x)
  return n ~= nil and n == n and n ~= math.huge and n ~= -math.huge
end
local f = {'state', 'failed', 'cr', 0, 'err', err, 'tb', ARGV[4], 'finished', now_s}
local del = {'worker', 'lease', 'progress'}
v.worker, v.lease, v.progress, v.cr, v.err, v.tb, v.finished = false, false, false, '0', err, ARGV[4], now_s
for _, name in ipairs({'run_at', 'started'}) do
  if not finite(v[name]) then f[#f + 1] = name; f[#f + 1] = now_s; v[name] = now_s end
end
if exp ~= '' then
  f[#f + 1] = 'expires'; f[#f + 1] = exp
  v.expires = exp
else
  del[#del + 1] = 'expires'
  v.expires = false
end
if ARGV[6] == '1' then
  local d = redis.call('GET', dk)
  local sl = tonumber(v.sl)
  local static = string.sub(d, 1, sl - 12)
  local at, from = nil, 1
  while true do
    local i = string.find(static, ',"options":', from, true)
    if not i then break end
    at, from = i, i + 1
  end
  if at then
    static = string.sub(static, 1, at - 1) .. ',"options":{}'
    redis.call('SET', dk, static .. string.sub(d, sl - 11))
    v.sl = #static + 12
    f[#f + 1] = 'sl'; f[#f + 1] = v.sl
  end
end
leave('active', id, v.seq, v.ck)
enter_finished('failed', id, v, now_s, exp)
v.state = 'failed'
record(dk, v, nil, entry(now_s, 'failed', v.att or '0', 'null', ARGV[7]))
f[#f + 1] = 'nh'; f[#f + 1] = v.nh
redis.call('HSET', jk, unpack(f))
redis.call('HDEL', jk, unpack(del))
event(id, v.name, 'failed', 'failed', now_s, v.att or '0', 'x', err)
if v.up or v.dn or v.fl then flow_ended(id, v, err, now_s) end
run_work(now_s)
return {1, flow_out()}
