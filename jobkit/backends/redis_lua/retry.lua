-- retry: ARGV = now, limit, mode, ids... With mode 'ids', KEYS[NQ + 2i - 1], KEYS[NQ + 2i] are the hash and
-- data keys of ids[i], and FAILED or CANCELLED jobs move; with mode 'all', the oldest `limit` FAILED jobs move.
-- Returns {moved, own event span or false}.
local now_s, limit, by_id = ARGV[1], tonumber(ARGV[2]), ARGV[3] == 'ids'
local ids, jks, dks = {}, {}, {}
if by_id then
  for i = 4, #ARGV do
    ids[#ids + 1] = ARGV[i]; jks[#jks + 1] = KEYS[NQ + 2 * (i - 3) - 1]; dks[#dks + 1] = KEYS[NQ + 2 * (i - 3)]
  end
elseif limit > 0 then
  for _, m in ipairs(redis.call('ZRANGE', SET.failed, 0, limit - 1)) do
    local id = after_colon(m)
    ids[#ids + 1] = id; jks[#jks + 1] = JP .. id; dks[#dks + 1] = DP .. id
  end
end
local moved = 0
for i, id in ipairs(ids) do
  local jk = jks[i]
  local v = load(jk)
  if v and (v.state == 'failed' or (by_id and v.state == 'cancelled')) then
    leave(v.state, id, v.seq, v.ck, v.hd)
    record(dks[i], v, nil, entry(now_s, 'waiting', 0, 'null', '"retried by request"'))
    redis.call('HSET', jk, 'state', 'waiting', 'att', 0, 'stalls', 0, 'cr', 0, 'run_at', now_s, 'nh', v.nh)
    redis.call('HDEL', jk, 'err', 'tb', 'finished', 'expires')
    enter('waiting', id, tonumber(v.pri) * PRI + tonumber(v.seq), v.seq, v.ck)
    event(id, v.name, 'waiting', 'waiting', now_s, 0)
    moved = moved + 1
  end
end
if moved > 0 then return {moved, span()} end
return {0, false}
