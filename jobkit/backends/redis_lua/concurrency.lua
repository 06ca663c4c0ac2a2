-- concurrency: ARGV = the queue's new global concurrency ('' lifts it), or nothing to read it. Returns it (or false).
if ARGV[1] == '' then
  redis.call('HDEL', K_META, 'gc')
elseif ARGV[1] then
  redis.call('HSET', K_META, 'gc', ARGV[1])
end
return redis.call('HGET', K_META, 'gc')
