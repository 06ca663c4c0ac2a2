-- Webhooks' outbox (the rules of backends/_outbox.py). A delivery is two hash fields under its id: WH.fixed holds
-- what never changes (JSON built here: the job's result or error as stored, so no number is re-printed), WH.status
-- what does (cjson: state, attempts, sender, and as text, so no float loses digits to cjson: next_at, lease_until and
-- the history's attempts, each the JSON Python gave). WH.due orders pending deliveries by the
-- time they may next be claimed (due, or their lease's end); WH.ended the delivered and dead ones by when they ended.
local DELIVERIES_KEPT = 1000 -- deliveries.DELIVERIES_KEPT
local ATTEMPTS_KEPT = 20 -- deliveries.ATTEMPTS_KEPT

-- The delivery of job `id` (loaded as `v`) that just ended in `state` at `now_s`; `outcome` is its result JSON
-- (completed) or error JSON (failed). Written only when the job or its queue has a webhook.
local function outbox_add(id, v, state, now_s, outcome)
  local url = v.wh
  if not url then
    local rec = redis.call('HGET', WH.url, 'url')
    if not rec then return end
    url = after_colon(rec)
  end
  local n = redis.call('HINCRBY', K_META, 'wh', 1)
  local created = string.format('%.17g', tonumber(string.sub(v.ck, 1, string.find(v.ck, ':', 1, true) - 1)))
  local event, key = 'job.completed', 'result'
  if state == 'failed' then event, key = 'job.failed', 'error' end
  local ow = redis.call('HGET', JP .. id, 'ow')
  local owner = ''
  if ow then owner = ',"owner":' .. cjson.encode(ow) end
  redis.call('HSET', WH.fixed, n, table.concat({
    '{"job_id":', cjson.encode(id), ',"url":', cjson.encode(url), ',"event":"', event, '","created_at":', now_s,
    ',"job":{"id":', cjson.encode(id), ',"task":', cjson.encode(v.name), ',"state":"', state, '","attempts":',
    v.att or '0', ',"created_at":', created, ',"started_at":', v.started or 'null', ',"finished_at":', now_s,
    owner, ',"', key, '":', outcome, '}}'}))
  redis.call('HSET', WH.status, n, cjson.encode({state = 'pending', attempts = 0, next_at = now_s}))
  redis.call('ZADD', WH.due, now_s, n)
end
