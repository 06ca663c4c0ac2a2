-- record_add: write a record and add jobs in one step (a schedule's tick): KEYS[NQ + 1] = the hash of one kind
-- of record of this queue; ARGV[1..3] = key, expected version ('' for any), the new value; ARGV[4..] = add's
-- arguments (now, then its 13 per job). Fields hold '<version>:<value>'. When the stored version is not the
-- expected one nothing is written and it returns -1; else the record moves to the next version and add.lua's
-- body, which follows, adds the jobs (SET NX on each id: a job id already there stays as it is).
local RK = KEYS[NQ + 1]
local cur = redis.call('HGET', RK, ARGV[1])
local version = 0
if cur then version = tonumber(string.sub(cur, 1, string.find(cur, ':', 1, true) - 1)) end
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= version then return -1 end
redis.call('HSET', RK, ARGV[1], (version + 1) .. ':' .. ARGV[3])
local rest = {}
for i = 4, #ARGV do rest[#rest + 1] = ARGV[i] end -- a loop, not unpack: no limit on how many
local ARGV = rest -- add.lua's body reads its own arguments from here on
