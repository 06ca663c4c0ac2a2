-- renew: ARGV = worker, lease_until, ids...; KEYS[NQ + i] is the hash of ids[i].
-- Returns per id: 1 (held, cancel requested), 0 (held), -1 (lost).
local worker, lease = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV do
  local jk = KEYS[NQ + i - 2]
  local v = redis.call('HMGET', jk, 'state', 'worker', 'cr')
  if v[1] == 'active' and v[2] == worker then
    redis.call('HSET', jk, 'lease', lease)
    redis.call('ZADD', SET.active, lease, ARGV[i])
    out[#out + 1] = (v[3] == '1') and 1 or 0
  else
    out[#out + 1] = -1
  end
end
return out
