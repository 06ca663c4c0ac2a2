-- cancel: ARGV = id, now; KEYS[NQ + 1], KEYS[NQ + 2] are the job's hash and data keys.
-- WAITING/DELAYED -> CANCELLED; ACTIVE -> cancel_requested; otherwise unchanged.
-- Returns the job's JSON, or false if unknown.
local id, now_s = ARGV[1], ARGV[2]
local jk, dk = KEYS[NQ + 1], KEYS[NQ + 2]
local v = load(jk)
if not v then return false end
local att = v.att or '0'
local d = redis.call('GET', dk)
if v.state == 'waiting' or v.state == 'delayed' then
  local err = '"cancelled before it started"'
  local exp = false
  if v.kfa then exp = string.format('%.17g', tonumber(now_s) + tonumber(v.kfa)) end
  local worker_json = v.worker and cjson.encode(v.worker) or 'null'
  leave(v.state, id, v.seq, v.ck)
  v.state, v.finished, v.err, v.expires = 'cancelled', now_s, err, exp
  d = record(dk, v, d, entry(now_s, 'cancelled', att, worker_json, '"cancelled"'))
  local f = {'state', 'cancelled', 'finished', now_s, 'err', err, 'nh', v.nh}
  if exp then f[#f + 1] = 'expires'; f[#f + 1] = exp else redis.call('HDEL', jk, 'expires') end
  redis.call('HSET', jk, unpack(f))
  enter('cancelled', id, now_s, v.seq, v.ck)
  if exp then redis.call('ZADD', EXP.cancelled, exp, fkey(v.seq, id)) end
  event(id, v.name, 'cancelled', 'cancelled', now_s, att)
elseif v.state == 'active' and v.cr ~= '1' then
  d = record(dk, v, d, entry(now_s, 'active', att, cjson.encode(v.worker), '"cancel requested"'))
  v.cr = '1'
  redis.call('HSET', jk, 'cr', 1, 'nh', v.nh)
  event(id, v.name, 'cancel-requested', 'active', now_s, att)
end
return compose(v, d)
