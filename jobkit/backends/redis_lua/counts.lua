-- counts: returns {waiting, delayed, active, completed, failed, cancelled, paused (0/1), waiting-children}.
return {redis.call('ZCARD', SET.waiting), redis.call('ZCARD', SET.delayed), redis.call('ZCARD', SET.active),
        redis.call('ZCARD', SET.completed), redis.call('ZCARD', SET.failed), redis.call('ZCARD', SET.cancelled),
        (redis.call('HGET', K_META, 'paused') == '1') and 1 or 0, redis.call('ZCARD', SET['waiting-children'])}
