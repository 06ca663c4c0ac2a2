-- list: ARGV = offset, limit, has_name, name, has_owner, worker, cursor ('' = newest), budget, states...
-- Walks the states' index sets newest first (members sort by created_at, then seq). Examines at most
-- `budget` jobs, so a caller pages on with the returned cursor.
-- Returns {cursor to go on from ('' = done), offset still to skip, job JSON...}.
local offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local has_name, name, has_owner, worker = ARGV[3] == '1', ARGV[4], ARGV[5] == '1', ARGV[6]
local cursor, budget = ARGV[7], tonumber(ARGV[8])
local idx = {}
for i = 9, #ARGV do if IX[ARGV[i]] then idx[#idx + 1] = IX[ARGV[i]] end end
local out = {'', 0}
if #idx == 0 or limit <= 0 then return out end

if #idx == 1 and cursor == '' and not has_name and not has_owner then
  for _, m in ipairs(redis.call('ZREVRANGE', idx[1], offset, offset + limit - 1)) do
    local id = after_colon(after_colon(m))
    out[#out + 1] = job_json(JP .. id, DP .. id)
  end
  return out
end

local filtered = has_name or has_owner
local chunk = filtered and 200 or math.min(math.max(offset + limit, 50), 1000)
local examined = 0
while true do
  local cands = {}
  local top = (cursor == '') and '+' or ('(' .. cursor)
  for _, k in ipairs(idx) do
    for _, m in ipairs(redis.call('ZREVRANGEBYLEX', k, top, '-', 'LIMIT', 0, chunk)) do cands[#cands + 1] = m end
  end
  if #cands == 0 then return out end
  table.sort(cands, function(a, b) return a > b end)
  -- The newest `chunk` of the merged candidates are exact: nothing unfetched sorts above them.
  for i = 1, math.min(chunk, #cands) do
    local m = cands[i]
    cursor = m
    examined = examined + 1
    local id = after_colon(after_colon(m))
    local jk = JP .. id
    local ok = true
    if filtered then
      local v = redis.call('HMGET', jk, 'name', 'worker')
      ok = (not has_name or v[1] == name) and (not has_owner or v[2] == worker)
    end
    if ok then
      if offset > 0 then
        offset = offset - 1
      else
        out[#out + 1] = job_json(jk, DP .. id)
        if #out - 2 >= limit then return out end
      end
    end
  end
  if #cands < chunk then return out end
  if examined >= budget then
    out[1] = cursor; out[2] = offset
    return out
  end
end
