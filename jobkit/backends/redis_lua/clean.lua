-- clean: ARGV = state (finished), finished_before, keep_last, expired_at ('' = not given), limit, now.
-- Deletes the oldest `limit` of the jobs matching any criterion: both keys and every index entry.
local state = ARGV[1]
local S, E, I = SET[state], EXP[state], IX[state]
local fb, kl, ea, limit, now_s = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
-- Those finished before fb and those beyond the newest kl are both a prefix of S (oldest first); jobs a parent holds
-- sort last, out of reach (see enter_finished).
local p = 0
if fb ~= '' then p = redis.call('ZCOUNT', S, '-inf', '(' .. fb) end
if kl ~= '' then p = math.max(p, redis.call('ZCARD', S) - held_count(state) - tonumber(kl)) end
local doomed = {}
if p > 0 then doomed = redis.call('ZRANGE', S, 0, math.min(p, limit) - 1) end
if ea ~= '' and #doomed < limit then
  local extra = {}
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', E, '-inf', '(' .. ea, 'LIMIT', 0, limit)) do
    local rank = redis.call('ZRANK', S, m)
    if rank and rank >= p then extra[#extra + 1] = {rank, m} end
  end
  table.sort(extra, function(a, b) return a[1] < b[1] end)
  for _, x in ipairs(extra) do
    if #doomed >= limit then break end
    doomed[#doomed + 1] = x[2]
  end
end
remove_finished(state, doomed, now_s)
return #doomed
