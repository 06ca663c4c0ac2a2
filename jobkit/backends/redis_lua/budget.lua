-- budget: KEYS[1] = a budget's hash (jobkit:{queue}:b:<key>, fields s = spent, r = reserved). ARGV[1] = the operation:
-- 'reserve' amount limit ('' for none) | 'settle' reserved actual | 'drop'. Returns {granted 1/0, spent, reserved} as
-- text, the totals after the operation (before it, for 'drop').
local k, op = KEYS[1], ARGV[1]

local function fmt(x) return string.format('%.17g', x) end

local spent = tonumber(redis.call('HGET', k, 's') or '0')
local reserved = tonumber(redis.call('HGET', k, 'r') or '0')
if op == 'drop' then
  redis.call('DEL', k)
  return {1, fmt(spent), fmt(reserved)}
end
if op == 'reserve' then
  local amount = tonumber(ARGV[2])
  if ARGV[3] ~= '' and spent + reserved + amount > tonumber(ARGV[3]) then
    return {0, fmt(spent), fmt(reserved)}
  end
  reserved = reserved + amount
else
  spent = spent + tonumber(ARGV[3])
  reserved = math.max(0, reserved - tonumber(ARGV[2]))
end
redis.call('HSET', k, 's', fmt(spent), 'r', fmt(reserved))
return {1, fmt(spent), fmt(reserved)}
