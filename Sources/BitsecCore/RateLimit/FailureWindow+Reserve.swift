/// Spacing of attempts instead of a block (the login guard's account rule): the first
/// `freeFailures` failures in the window cost nothing; after that, each attempt must wait
/// `baseDelayMs * 2^(failures - freeFailures)` after the newest failure, capped at
/// `maxDelayMs`. The policy's `maxFailures` stays a hard bound over the window: once reached,
/// attempts are refused until the oldest failure leaves the window (never longer).
public struct FailureBackoff: Sendable, Equatable {
    public var freeFailures: Int64
    public var baseDelayMs: Int64
    public var maxDelayMs: Int64

    public init(freeFailures: Int64, baseDelayMs: Int64, maxDelayMs: Int64) {
        self.freeFailures = freeFailures
        self.baseDelayMs = baseDelayMs
        self.maxDelayMs = maxDelayMs
    }

    /// The wait after the newest failure once `failures` (>= freeFailures) are in the window.
    public func delayMs(failures: Int64) -> Int64 {
        let k = failures - freeFailures
        guard k >= 0 else { return 0 }
        var d = max(1, baseDelayMs)
        var i: Int64 = 0
        while i < k && d < maxDelayMs {
            d = d &* 2
            i += 1
        }
        return min(d, maxDelayMs)
    }
}

/// The answer to `FailureWindow.reserve`: an attempt counted as a failure up front.
public struct FailureReservation: Sendable, Equatable {
    /// The attempt may go ahead (it is already counted as a failure).
    public var allowed: Bool
    /// Failures in the window, this reservation included when allowed.
    public var failures: Int64
    /// Milliseconds to wait when refused (>= 1); 0 when allowed.
    public var retryAfterMs: Int64
    /// When allowed: the wait the key will have if this attempt ends as a failure (0: the
    /// next attempt is free).
    public var failureRetryAfterMs: Int64
    /// The instant (ms) the reservation was counted at: what `refund` takes back.
    public var ticketMs: Int64
    /// The failures reached the policy's `maxFailures` (for a back-off policy, the hard bound;
    /// for a blocking one, the block).
    public var atLimit: Bool
    public var degraded: Bool
    public var newlyBlocked: Bool
    public var tableFull: Bool

    /// After `refund`: whether the reservation was there and was taken back (`failures` is
    /// then 1: what was removed). A repeated or forged ticket, or one a block or a clear
    /// already took, refunds nothing.
    public var refunded: Bool { failures > 0 }

    public init(allowed: Bool, failures: Int64, retryAfterMs: Int64, failureRetryAfterMs: Int64, ticketMs: Int64,
                atLimit: Bool = false, degraded: Bool = false, newlyBlocked: Bool = false, tableFull: Bool = false) {
        self.allowed = allowed
        self.failures = failures
        self.retryAfterMs = retryAfterMs
        self.failureRetryAfterMs = failureRetryAfterMs
        self.ticketMs = ticketMs
        self.atLimit = atLimit
        self.degraded = degraded
        self.newlyBlocked = newlyBlocked
        self.tableFull = tableFull
    }
}

/// Check-and-count: `reserve` refuses a blocked key or counts the attempt as a failure in one
/// atomic step, so N concurrent attempts can never exceed the limit (checking first and
/// recording after the password check lets every concurrent guess through). A success gives
/// the reservation back with `refund` (and `clear` forgets the key's failures). A plain
/// failure needs nothing more: it is already counted.
///
/// Without back-off, a reservation that finds `maxFailures` failures in the window starts the
/// block (`blockSeconds` from the newest failure, or from the oldest with the
/// `.oldestFailure` anchor) and clears the failures, as `recordFailure` does when it
/// completes the window. With back-off (`policy.backoff`), see `FailureBackoff`.
///
/// The same Redis keys as the other operations (one hash-tagged key pair per key: one slot),
/// server time when `at` is 0, and the policy's `failurePolicy` while Redis is unavailable.
extension FailureWindow {
    /// Refuses (blocked, or backing off) or counts one attempt as a failure. `nowMs`, when
    /// given, is the instant to use in ms (the login guard passes the client key's instant
    /// to the account key so both share one ticket); otherwise `at` (Unix seconds, 0 = now).
    public func reserve(key: String, at: Int64 = 0, nowMs: Int64? = nil) throws(BitsecError) -> FailureReservation {
        try guardRun(.reserve, key: key, at: at, nowMs: nowMs, ticket: 0)
    }

    /// Gives back the reservation counted at `ticketMs` (no effect if it is no longer there:
    /// a block or a clear already took it); `refunded` says which.
    @discardableResult
    public func refund(key: String, ticketMs: Int64, at: Int64 = 0) throws(BitsecError) -> FailureReservation {
        try guardRun(.refund, key: key, at: at, nowMs: nil, ticket: ticketMs)
    }

    /// Forgets the key's failures and lifts its back-off (a success of the account).
    @discardableResult
    public func clear(key: String, at: Int64 = 0) throws(BitsecError) -> FailureReservation {
        try guardRun(.clear, key: key, at: at, nowMs: nil, ticket: 0)
    }

    enum GuardOp: String { case reserve, refund, clear }

    private func guardRun(_ op: GuardOp, key: String, at: Int64, nowMs given: Int64?, ticket: Int64) throws(BitsecError) -> FailureReservation {
        try RateLimitLimits.checkKey(key)
        var atMs = given
        if atMs == nil { atMs = try RateLimitLimits.instantMs(at) }
        guard let redis else { return announce(localGuard(op, key: key, nowMs: atMs ?? RateLimitLimits.nowMs(), ticket: ticket, degraded: false), key: key) }
        if !breaker.isOpen {
            do {
                let r = try redisGuard(redis, op, key: key, atMs: atMs, ticket: ticket)
                breaker.succeeded()
                return announce(r, key: key)
            } catch {
                breaker.tripped()
            }
        }
        let nowMs = atMs ?? RateLimitLimits.nowMs()
        switch policy.failurePolicy {
        case .local:
            return announce(localGuard(op, key: key, nowMs: nowMs, ticket: ticket, degraded: true), key: key)
        case .allow:
            return FailureReservation(allowed: true, failures: 0, retryAfterMs: 0, failureRetryAfterMs: 0, ticketMs: nowMs, degraded: true)
        case .deny:
            if op != .reserve { return FailureReservation(allowed: true, failures: 0, retryAfterMs: 0, failureRetryAfterMs: 0, ticketMs: ticket, degraded: true) }
            return FailureReservation(allowed: false, failures: 0, retryAfterMs: max(1000, breaker.retryMs), failureRetryAfterMs: 0,
                                      ticketMs: nowMs, degraded: true)
        }
    }

    /// The `blocked` audit event of a newly blocked key, as the other operations emit it.
    private func announce(_ r: FailureReservation, key: String) -> FailureReservation {
        if r.newlyBlocked {
            let until = TokenBucket.ceilDiv(r.ticketMs &+ r.retryAfterMs, 1000)
            _ = finish(FailureStatus(blocked: true, failures: r.failures, remainingAttempts: 0, blockedUntil: until,
                                     retryAfter: max(1, TokenBucket.ceilDiv(r.retryAfterMs, 1000)), degraded: r.degraded,
                                     newlyBlocked: true), key: key)
        }
        return r
    }

    private func localGuard(_ op: GuardOp, key: String, nowMs: Int64, ticket: Int64, degraded: Bool) -> FailureReservation {
        let policy = self.policy, windowMs = self.windowMs, blockMs = self.blockMs
        let maxN = policy.maxFailures
        return local.update(key, nowMs: nowMs) { (entry, makeRoom) -> FailureReservation in
            let idle = FailureReservation(allowed: true, failures: 0, retryAfterMs: 0, failureRetryAfterMs: 0, ticketMs: ticket, degraded: degraded)
            guard var e = entry else {
                guard op == .reserve else { return idle }
                guard makeRoom() else {
                    return FailureReservation(allowed: false, failures: 0, retryAfterMs: 1000, failureRetryAfterMs: 0, ticketMs: nowMs,
                                              degraded: degraded, tableFull: true)
                }
                entry = Entry(failures: [nowMs], blockedUntilMs: 0)
                return FailureReservation(allowed: true, failures: 1, retryAfterMs: 0,
                                          failureRetryAfterMs: Self.waitAfterFailure(policy, failures: 1, oldest: nowMs, nowMs: nowMs, windowMs: windowMs, blockMs: blockMs),
                                          ticketMs: nowMs, atLimit: maxN <= 1, degraded: degraded)
            }
            switch op {
            case .clear:
                e.failures.removeAll()
                e.blockedUntilMs = 0
                entry = e
                return idle
            case .refund:
                var r = idle
                if let j = e.failures.lastIndex(of: ticket) { e.failures.remove(at: j); r.failures = 1 }
                entry = e
                return r
            case .reserve:
                break
            }
            if e.blockedUntilMs > nowMs {
                return FailureReservation(allowed: false, failures: Int64(e.failures.count), retryAfterMs: e.blockedUntilMs - nowMs,
                                          failureRetryAfterMs: 0, ticketMs: nowMs, atLimit: e.failures.count >= Int(maxN), degraded: degraded)
            }
            var n: Int64 = 0
            var oldest = Int64.max, newest = Int64.min
            for f in e.failures where f > nowMs &- windowMs && f <= nowMs {
                n += 1
                oldest = min(oldest, f)
                newest = max(newest, f)
            }
            var until: Int64? = nil
            if n >= maxN {
                if policy.backoff != nil {
                    until = oldest &+ windowMs
                } else {
                    until = (policy.blockAnchor == .oldestFailure ? oldest : newest) &+ blockMs
                    e.failures.removeAll()
                }
            } else if let b = policy.backoff, n >= b.freeFailures {
                let u = newest &+ b.delayMs(failures: n)
                if u > nowMs { until = u }
            }
            if let u = until {
                e.blockedUntilMs = max(u, nowMs &+ 1)
                entry = e
                return FailureReservation(allowed: false, failures: n, retryAfterMs: e.blockedUntilMs - nowMs, failureRetryAfterMs: 0,
                                          ticketMs: nowMs, atLimit: n >= maxN, degraded: degraded, newlyBlocked: true)
            }
            e.failures.append(nowMs)
            if e.failures.count > Int(maxN) { e.failures.removeFirst(e.failures.count - Int(maxN)) }
            entry = e
            let n1 = n + 1
            return FailureReservation(allowed: true, failures: n1, retryAfterMs: 0,
                                      failureRetryAfterMs: Self.waitAfterFailure(policy, failures: n1, oldest: min(oldest, nowMs), nowMs: nowMs,
                                                                                 windowMs: windowMs, blockMs: blockMs),
                                      ticketMs: nowMs, atLimit: n1 >= maxN, degraded: degraded)
        }
    }

    /// The wait the key has if the attempt just reserved ends as a failure.
    static func waitAfterFailure(_ p: FailureWindowPolicy, failures n: Int64, oldest: Int64, nowMs: Int64, windowMs: Int64, blockMs: Int64) -> Int64 {
        if n >= p.maxFailures {
            if p.backoff != nil { return max(1, oldest &+ windowMs &- nowMs) }
            return p.blockAnchor == .oldestFailure ? max(1, oldest &+ blockMs &- nowMs) : blockMs
        }
        if let b = p.backoff, n >= b.freeFailures { return b.delayMs(failures: n) }
        return 0
    }

    private func redisGuard(_ redis: RedisPool, _ op: GuardOp, key: String, atMs: Int64?, ticket: Int64) throws(BitsecError) -> FailureReservation {
        var base = keyHead
        base.append(contentsOf: key.utf8)
        base.append(UInt8(ascii: "}"))
        let b = policy.backoff
        let r = try FailureReserveScript.script.run(redis, keys: [base + Array(":f".utf8), base + Array(":b".utf8)], args: [
            Array(op.rawValue.utf8), Array(String(policy.maxFailures).utf8), Array(String(windowMs).utf8),
            Array(String(blockMs).utf8), Array(String(atMs ?? 0).utf8),
            Array((policy.blockAnchor == .oldestFailure ? "1" : "0").utf8),
            Array(String(b?.freeFailures ?? -1).utf8), Array(String(b?.baseDelayMs ?? 0).utf8),
            Array(String(b?.maxDelayMs ?? 0).utf8), Array(String(ticket).utf8),
        ])
        guard let a = r.array, a.count == 6, let allowed = a[0].integer, let n = a[1].integer, let wait = a[2].integer,
              let now = a[3].integer, let newly = a[4].integer, let oldest = a[5].integer else {
            throw .backend("redis: unexpected reply to the failure-reserve script: \(r.errorMessage ?? "wrong shape")")
        }
        if op != .reserve {
            return FailureReservation(allowed: true, failures: n, retryAfterMs: 0, failureRetryAfterMs: 0, ticketMs: ticket)
        }
        if allowed != 1 {
            return FailureReservation(allowed: false, failures: n, retryAfterMs: max(1, wait), failureRetryAfterMs: 0, ticketMs: now,
                                      atLimit: n >= policy.maxFailures, newlyBlocked: newly == 1)
        }
        return FailureReservation(allowed: true, failures: n, retryAfterMs: 0,
                                  failureRetryAfterMs: Self.waitAfterFailure(policy, failures: n, oldest: oldest, nowMs: now,
                                                                             windowMs: windowMs, blockMs: blockMs),
                                  ticketMs: now, atLimit: n >= policy.maxFailures)
    }
}

/// The Lua script of `reserve`, `refund` and `clear`, on the keys of the failure-window script
/// (`RateLimitScripts.failureWindow`): KEYS[1] the failures (a list of instants in ms, newest
/// first, at most max), KEYS[2] the block or back-off (its value: refused-until in ms).
/// ARGV: op, max failures, window ms, block ms, now (ms, 0 = TIME), block anchor (`1`: oldest),
/// free failures (-1: no back-off), base delay ms, max delay ms, ticket (ms; refund).
/// Returns {allowed, failures, wait_ms, now_ms, newly_blocked, oldest_ms}.
enum FailureReserveScript {
    static let script = RedisScript(#"""
    local op = ARGV[1]
    local max = tonumber(ARGV[2])
    local win = tonumber(ARGV[3])
    local blk = tonumber(ARGV[4])
    local now = tonumber(ARGV[5])
    local free = tonumber(ARGV[7])
    local base = tonumber(ARGV[8])
    local cap = tonumber(ARGV[9])
    if now <= 0 then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    if op == 'clear' then
      redis.call('DEL', KEYS[1], KEYS[2])
      return {1, 0, 0, now, 0, now}
    end
    if op == 'refund' then
      local removed = redis.call('LREM', KEYS[1], 1, ARGV[10])
      return {1, removed, 0, now, 0, now}
    end
    local untilms = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
    if untilms > now then
      return {0, redis.call('LLEN', KEYS[1]), untilms - now, now, 0, now}
    end
    local n = 0
    local oldest = now
    local newest = 0
    for _, v in ipairs(redis.call('LRANGE', KEYS[1], 0, max - 1)) do
      local x = tonumber(v)
      if x and x > now - win and x <= now then
        n = n + 1
        if x < oldest then oldest = x end
        if x > newest then newest = x end
      end
    end
    local refuse = nil
    if n >= max then
      if free >= 0 then
        refuse = oldest + win
      else
        refuse = newest + blk
        if ARGV[6] == '1' then refuse = oldest + blk end
        redis.call('DEL', KEYS[1])
      end
    elseif free >= 0 and n >= free then
      local d = base
      if d < 1 then d = 1 end
      local k = n - free
      while k > 0 and d < cap do
        d = d * 2
        k = k - 1
      end
      if d > cap then d = cap end
      if newest + d > now then refuse = newest + d end
    end
    if refuse then
      if refuse <= now then refuse = now + 1 end
      redis.call('SET', KEYS[2], string.format('%.0f', refuse), 'PX', string.format('%.0f', refuse - now))
      return {0, n, refuse - now, now, 1, oldest}
    end
    redis.call('LPUSH', KEYS[1], string.format('%.0f', now))
    redis.call('LTRIM', KEYS[1], 0, max - 1)
    redis.call('PEXPIRE', KEYS[1], win)
    return {1, n + 1, 0, now, 0, oldest}
    """#)
}
