-- webhook_replay: ARGV = delivery id, now. Makes the delivery pending and due now, from the first try of the
-- schedule, keeping its id and attempts so far. Returns {fixed JSON, status JSON}, or false if unknown.
local n, now_s = ARGV[1], ARGV[2]
local text = redis.call('HGET', WH.status, n)
if not text then return false end
local st = cjson.decode(text)
st.state, st.attempts, st.next_at, st.sender, st.lease_until = 'pending', 0, now_s, nil, nil
text = cjson.encode(st)
redis.call('HSET', WH.status, n, text)
redis.call('ZREM', WH.ended, n)
redis.call('ZADD', WH.due, now_s, n)
return {redis.call('HGET', WH.fixed, n), text}
