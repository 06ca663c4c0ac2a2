-- flow_deliver: ARGV[1] = now, ARGV[2] = '1' to also fail the parents left unsealed past their deadline (whoever was
-- adding their flow stopped midway), then notices for this queue (JSON, see _flow.lua), each idempotent.
-- Returns {own event span or false, notices for other queues or false}.
local now_s = ARGV[1]
if ARGV[2] == '1' then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_UNSEALED, '-inf', now_s, 'LIMIT', 0, 100)) do
    redis.call('ZREM', K_UNSEALED, id)
    local v = load(JP .. id, FLOW_FIELDS)
    if v and v.us and v.state == 'waiting-children' then
      redis.call('HDEL', JP .. id, 'us')
      v.us = false
      fail_parent(id, v, 'its flow was not completely added within ' .. UNSEALED_FOR .. 's (the process adding it'
        .. ' stopped midway?): add the flow again with the same job ids to complete it', now_s)
    end
  end
end
for i = 3, #ARGV do WORK[#WORK + 1] = cjson.decode(ARGV[i]) end
run_work(now_s)
return {WOKE and span() or false, flow_out()}
