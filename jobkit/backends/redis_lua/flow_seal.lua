-- flow_seal: ARGV[1] = now, then pairs of a parent's id and its children's reports (JSON object
-- "<queue>\n<id>" -> {s, f, o, n, x}, from the flow_add steps of other queues). Counts each parent's ledger and lets
-- its policy decide (see seal in _flow.lua). Returns {own event span or false, notices or false, each parent's JSON}.
local now_s = ARGV[1]
local ids = {}
for i = 2, #ARGV, 2 do
  seal(ARGV[i], cjson.decode(ARGV[i + 1]), now_s)
  ids[#ids + 1] = ARGV[i]
end
run_work(now_s)
local out = {WOKE and span() or false, flow_out()}
for _, id in ipairs(ids) do out[#out + 1] = job_json(JP .. id, DP .. id) end
return out
