-- write_record: KEYS[1] = the hash of one kind of record of a queue (jobkit:{queue}:rec:<kind>); ARGV = key,
-- value, expected version ('' for any), '1' to delete. Fields hold '<version>:<value>'.
-- Returns the new version (0 after a delete), or -1 when the stored version is not the expected one.
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local version = 0
if cur then version = tonumber(string.sub(cur, 1, string.find(cur, ':', 1, true) - 1)) end
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= version then return -1 end
if ARGV[4] == '1' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], (version + 1) .. ':' .. ARGV[2])
return version + 1
