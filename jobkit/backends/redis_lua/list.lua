-- list: ARGV = offset, limit, has_name, name, has_worker, worker, cursor ('' = newest), budget, owner ('' = any),
-- tag ("key=value", '' = any), states...
-- Walks index sets newest first (members sort by created_at, then seq): the owner's set (or else the tag's) when
-- one is given, the states then a filter; else the states' index sets. Examines at most `budget` jobs, so a caller
-- pages on with the returned cursor.
-- Returns {cursor to go on from ('' = done), offset still to skip, job JSON...}.
local offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local has_name, name, has_worker, worker = ARGV[3] == '1', ARGV[4], ARGV[5] == '1', ARGV[6]
local cursor, budget, owner, tag = ARGV[7], tonumber(ARGV[8]), ARGV[9], ARGV[10]
local idx, want = {}, {}
for i = 11, #ARGV do
  if IX[ARGV[i]] then idx[#idx + 1] = IX[ARGV[i]]; want[ARGV[i]] = true end
end
local out = {'', 0}
if #idx == 0 or limit <= 0 then return out end
local by_state, also_tag = true, false
if owner ~= '' then
  idx, by_state, also_tag = {owner_key(owner)}, false, tag ~= ''
elseif tag ~= '' then
  idx, by_state = {tag_key(tag)}, false
end

if #idx == 1 and by_state and cursor == '' and not has_name and not has_worker then
  for _, m in ipairs(redis.call('ZREVRANGE', idx[1], offset, offset + limit - 1)) do
    local id = after_colon(after_colon(m))
    out[#out + 1] = job_json(JP .. id, DP .. id)
  end
  return out
end

local filtered = has_name or has_worker or not by_state
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
      local v = redis.call('HMGET', jk, 'name', 'worker', 'state')
      ok = (not has_name or v[1] == name) and (not has_worker or v[2] == worker) and (by_state or want[v[3]] == true)
      if ok and also_tag then ok = redis.call('ZSCORE', tag_key(tag), m) ~= false end
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
