-- webhook_claim: ARGV = sender, now, lease_until, limit. Leases the due pending deliveries (oldest due first) to
-- `sender`: each sorts in WH.due at its lease's end, so no other sender claims it before. Returns {id, fixed JSON,
-- status JSON} per delivery.
local sender, now_s, until_s = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', WH.due, '-inf', now_s, 'LIMIT', 0, tonumber(ARGV[4]))) do
  local st = cjson.decode(redis.call('HGET', WH.status, n))
  st.sender, st.lease_until = sender, until_s
  local text = cjson.encode(st)
  redis.call('HSET', WH.status, n, text)
  redis.call('ZADD', WH.due, until_s, n)
  out[#out + 1] = {n, redis.call('HGET', WH.fixed, n), text}
end
return out
