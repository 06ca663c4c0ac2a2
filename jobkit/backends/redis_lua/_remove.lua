-- remove_finished(state, members, now_s): deletes finished jobs (members of SET[state], "<seq>:<id>") with both
-- of their keys and every index entry (owner and tags too), and publishes "removed" for each.
local function remove_finished(state, members, now_s)
  local S, E, I = SET[state], EXP[state], IX[state]
  local b, keys = {}, {'DEL'}
  for _, m in ipairs(members) do
    local id = after_colon(m)
    local jk = JP .. id
    local v = redis.call('HMGET', jk, 'att', 'name', 'ck', 'o', 'ow', 'tg')
    event(id, v[2] or '', 'removed', state, now_s, v[1] or 0, nil, nil, v[5])
    keys[#keys + 1] = jk
    keys[#keys + 1] = DP .. id
    keys[#keys + 1] = FL .. id
    keys[#keys + 1] = FO .. id
    later(b, 'ZREM', S, m)
    later(b, 'ZREM', E, m)
    if v[3] then
      later(b, 'ZREM', I, v[3])
      index_job(id, v[5], v[6], v[3], v[4], false)
    end
  end
  if #keys > 1 then in_chunks(keys, false) end
  flush(b)
end

-- keep_finished(keep, now_s): `keep` is "<completed>[,<failed>]" ('' or a blank part = no limit). Removes the oldest
-- completed and failed jobs beyond the newest so many, so the count bounds of retention hold at every moment, not
-- only after a worker's maintenance pass.
local function keep_finished(keep, now_s)
  if keep == '' then return end
  local parts = {}
  parts.completed, parts.failed = string.match(keep, '^(%d*),?(%d*)$')
  for _, state in ipairs({'completed', 'failed'}) do
    local n = parts[state]
    if n and n ~= '' then
      local over = redis.call('ZCARD', SET[state]) - held_count(state) - tonumber(n)
      if over > 0 then remove_finished(state, redis.call('ZRANGE', SET[state], 0, over - 1), now_s) end
    end
  end
end
