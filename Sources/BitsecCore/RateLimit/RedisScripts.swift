/// The Lua scripts of the rate-limit capability.
///
/// Time: a script uses the instant its caller passes (ms since the epoch) or, when the caller
/// passes 0 ("now"), the Redis server's own clock (`TIME`). Production calls pass 0, so every
/// application instance decides against one clock and skew between servers cannot widen or
/// narrow a limit; explicit instants exist for tests and replays. Mixing both on one key is
/// safe (a clock that goes backwards refills nothing) but only meaningful if the clocks agree.
enum RateLimitScripts {
    /// Token bucket: KEYS[1] the bucket (a hash: `l` level in units, `t` last instant in ms,
    /// `d` denial already reported); ARGV: full, rate, need (units), now (ms, 0 = TIME).
    /// Returns {allowed, level, ms_to_full, ms_to_retry, first_denial}. The arithmetic is
    /// `TokenBucket.take` exactly; every value stays below 2^53 (exact in a double).
    /// A full bucket is not stored: the key expires when the bucket would be full again.
    static let take = RedisScript(#"""
    local key = KEYS[1]
    local full = tonumber(ARGV[1])
    local rate = tonumber(ARGV[2])
    local need = tonumber(ARGV[3])
    local now = tonumber(ARGV[4])
    if now <= 0 then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    local function ceildiv(a, b)
      if a <= 0 then return 0 end
      local q = math.floor(a / b)
      while q * b < a do q = q + 1 end
      while q > 0 and (q - 1) * b >= a do q = q - 1 end
      return q
    end
    local level = full
    local last = now
    local st = redis.call('HMGET', key, 'l', 't', 'd')
    local l0 = tonumber(st[1])
    local t0 = tonumber(st[2])
    if l0 and t0 then
      level = l0
      last = t0
      if level > full then level = full end
      if level < 0 then level = 0 end
      if now > last then
        local gained = (now - last) * rate
        if gained >= full - level then level = full else level = level + gained end
        last = now
      end
    end
    if level >= need then
      level = level - need
      local ms = ceildiv(full - level, rate)
      redis.call('HSET', key, 'l', string.format('%.0f', level), 't', string.format('%.0f', last))
      if st[3] then redis.call('HDEL', key, 'd') end
      redis.call('PEXPIRE', key, ms + 1000)
      return {1, level, ms, 0, 0}
    end
    local first = 0
    if not st[3] and l0 and t0 then
      first = 1
      redis.call('HSET', key, 'd', '1')
    end
    return {0, level, ceildiv(full - level, rate), ceildiv(need - level, rate), first}
    """#)

    /// Failure window: KEYS[1] the recent failures (a list of instants, newest first, at most
    /// max), KEYS[2] the block (its value: blocked-until in ms). ARGV: op (`fail`, `success`,
    /// `check`, `reset`), max failures, window ms, block ms, now (ms, 0 = TIME), block anchor
    /// (`1`: the block counts from the oldest failure in the window, else from now).
    /// Returns {blocked, failures_in_window, blocked_until_ms, now_ms, newly_blocked}.
    static let failureWindow = RedisScript(#"""
    local op = ARGV[1]
    local max = tonumber(ARGV[2])
    local win = tonumber(ARGV[3])
    local blk = tonumber(ARGV[4])
    local now = tonumber(ARGV[5])
    if now <= 0 then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    if op == 'reset' then
      redis.call('DEL', KEYS[1], KEYS[2])
      return {0, 0, 0, now, 0}
    end
    local untilms = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
    local blocked = 0
    if untilms > now then blocked = 1 end
    if op == 'success' then
      redis.call('DEL', KEYS[1])
      return {blocked, 0, untilms, now, 0}
    end
    if op == 'fail' and blocked == 0 then
      redis.call('LPUSH', KEYS[1], string.format('%.0f', now))
      redis.call('LTRIM', KEYS[1], 0, max - 1)
      redis.call('PEXPIRE', KEYS[1], win)
    end
    local n = 0
    local oldest = now
    for _, v in ipairs(redis.call('LRANGE', KEYS[1], 0, max - 1)) do
      local x = tonumber(v)
      if x and x > now - win and x <= now then
        n = n + 1
        if x < oldest then oldest = x end
      end
    end
    if op == 'fail' and blocked == 0 and n >= max then
      untilms = now + blk
      if ARGV[6] == '1' then untilms = oldest + blk end
      if untilms <= now then untilms = now + 1 end
      redis.call('SET', KEYS[2], string.format('%.0f', untilms), 'PX', string.format('%.0f', untilms - now))
      redis.call('DEL', KEYS[1])
      return {1, n, untilms, now, 1}
    end
    return {blocked, n, untilms, now, 0}
    """#)
}
