-- set_paused: ARGV = '1' to pause or '0' to resume, now. Resuming writes a job-less "resumed" entry to the
-- event stream (subscribers skip it) that wakes waiting workers. Returns the own event span on resume.
redis.call('HSET', K_META, 'paused', ARGV[1])
if ARGV[1] == '1' then return false end
event('', '', 'resumed', 'waiting', ARGV[2], 0)
return span()
