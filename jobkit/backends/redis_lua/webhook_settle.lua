-- webhook_settle: ARGV = sender, delivery id, attempt JSON, ok ('1'/'0'), next_at ('' = no tries left), now.
-- Records an attempt of a delivery `sender` still holds: delivered, pending again at next_at, or dead. The newest
-- DELIVERIES_KEPT delivered and dead deliveries are kept. Returns 1, or 0 when `sender` does not hold it.
local sender, n, next_at, now_s = ARGV[1], ARGV[2], ARGV[5], ARGV[6]
local text = redis.call('HGET', WH.status, n)
if not text then return 0 end
local st = cjson.decode(text)
if st.state ~= 'pending' or st.sender ~= sender then return 0 end
local history = {}
if type(st.history) == 'table' then history = st.history end
history[#history + 1] = ARGV[3]
while #history > ATTEMPTS_KEPT do table.remove(history, 1) end
st.history, st.attempts, st.sender, st.lease_until = history, st.attempts + 1, nil, nil
if ARGV[4] == '1' then
  st.state, st.next_at = 'delivered', nil
elseif next_at == '' then
  st.state, st.next_at = 'dead', nil
else
  st.next_at = next_at
end
redis.call('HSET', WH.status, n, cjson.encode(st))
if st.state == 'pending' then
  redis.call('ZADD', WH.due, next_at, n)
else
  redis.call('ZREM', WH.due, n)
  redis.call('ZADD', WH.ended, now_s, n)
  local over = redis.call('ZCARD', WH.ended) - DELIVERIES_KEPT
  if over > 0 then
    for _, old in ipairs(redis.call('ZRANGE', WH.ended, 0, over - 1)) do
      redis.call('HDEL', WH.fixed, old)
      redis.call('HDEL', WH.status, old)
      redis.call('ZREM', WH.ended, old)
    end
  end
end
return 1
