-- children: ARGV = parent id, offset, limit. A page of the parent's ledger in order: per child {"<queue>\n<id>",
-- "<state or -> <fe> <owned> <held>", the job's JSON when it is in this queue and still there (else false)}.
local id, offset, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
if limit <= 0 then return out end
for _, ck in ipairs(redis.call('ZRANGE', FO .. id, offset, offset + limit - 1)) do
  local q, cid = split_ref(ck)
  local job = false
  if q == MYQ then job = job_json(JP .. cid, DP .. cid) end
  out[#out + 1] = {ck, redis.call('HGET', FL .. id, ck) or '- 0 1 0', job}
end
return out
