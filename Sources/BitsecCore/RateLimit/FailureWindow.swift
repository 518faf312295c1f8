/// How many failures within how long block a key, and for how long.
///
/// Semantics (the ERP guide's brute-force rule): a key is blocked when `maxFailures`
/// failures fall within any `windowSeconds` (a sliding window over the failures' instants,
/// not fixed buckets); the block lasts `blockSeconds` from the failure that triggered it and
/// is not extended by failures during it; when it ends, counting starts again from zero. A
/// success clears the failures but does not lift an active block (`reset` does, for
/// administrators).
///
/// `blockAnchor` `.oldestFailure` counts the block from the oldest of the failures that
/// filled the window instead (TOTP's rule: with `blockSeconds == windowSeconds`, a key is
/// refused until the window that filled up ends, so `retry_after` is the time left in it).
public struct FailureWindowPolicy: Sendable, Equatable {
    /// Where a block's `blockSeconds` are counted from.
    public enum BlockAnchor: Sendable, Equatable {
        /// The failure that completed `maxFailures` (the login rule, the default).
        case triggeringFailure
        /// The oldest failure within the window when the block began (never before the
        /// triggering failure plus 1 ms: a block always starts).
        case oldestFailure
    }

    public var maxFailures: Int64
    public var windowSeconds: Int64
    public var blockSeconds: Int64
    public var failurePolicy: BackendFailurePolicy
    public var blockAnchor: BlockAnchor
    /// When set, `reserve` spaces attempts out instead of blocking for `blockSeconds` (the
    /// login guard's account rule; see `FailureBackoff`).
    public var backoff: FailureBackoff?

    public init(maxFailures: Int64 = 5, windowSeconds: Int64 = 3600, blockSeconds: Int64 = 3600,
                failurePolicy: BackendFailurePolicy = .local, blockAnchor: BlockAnchor = .triggeringFailure,
                backoff: FailureBackoff? = nil) {
        self.maxFailures = maxFailures
        self.windowSeconds = windowSeconds
        self.blockSeconds = blockSeconds
        self.failurePolicy = failurePolicy
        self.blockAnchor = blockAnchor
        self.backoff = backoff
    }

    /// The ERP guide's login rule: 5 failures in an hour block for an hour.
    public static let login = FailureWindowPolicy()

    /// Reads `max_failures`, `window_seconds`, `block_seconds`, `failure_policy` (each
    /// optional, defaulting to `defaults`), then refuses unknown fields.
    public static func read(_ o: ConfigObject, defaults d: FailureWindowPolicy = .login) throws(BitsecError) -> FailureWindowPolicy {
        let p = FailureWindowPolicy(
            maxFailures: try o.int("max_failures", in: 1...1000, default: d.maxFailures),
            windowSeconds: try o.int("window_seconds", in: 1...RateLimitLimits.maxPeriodSeconds, default: d.windowSeconds),
            blockSeconds: try o.int("block_seconds", in: 1...RateLimitLimits.maxPeriodSeconds, default: d.blockSeconds),
            failurePolicy: try BackendFailurePolicy.read(o, default: d.failurePolicy))
        try o.finish()
        return p
    }
}

/// Where a key stands in its failure window.
public struct FailureStatus: Sendable, Equatable {
    public var blocked: Bool
    /// Failures within the window (0 while blocked: they were cleared when the block began).
    public var failures: Int64
    /// Failures left before a block (0 when blocked).
    public var remainingAttempts: Int64
    /// Unix seconds (rounded up) at which the block ends; 0 when not blocked.
    public var blockedUntil: Int64
    /// Seconds until the block ends: >= 1 when blocked, 0 otherwise.
    public var retryAfter: Int64
    /// Redis was unavailable and the failure policy decided.
    public var degraded: Bool
    /// This call started the block.
    public var newlyBlocked: Bool
    /// The in-process table was full and the new key could not be tracked (reported blocked:
    /// the safe side).
    public var tableFull: Bool

    public init(blocked: Bool, failures: Int64, remainingAttempts: Int64, blockedUntil: Int64, retryAfter: Int64,
                degraded: Bool = false, newlyBlocked: Bool = false, tableFull: Bool = false) {
        self.blocked = blocked
        self.failures = failures
        self.remainingAttempts = remainingAttempts
        self.blockedUntil = blockedUntil
        self.retryAfter = retryAfter
        self.degraded = degraded
        self.newlyBlocked = newlyBlocked
        self.tableFull = tableFull
    }

    public static let flagDegraded: Int64 = 1
    public static let flagNewlyBlocked: Int64 = 2
    public static let flagTableFull: Int64 = 4

    public var flags: Int64 {
        (degraded ? Self.flagDegraded : 0) | (newlyBlocked ? Self.flagNewlyBlocked : 0) | (tableFull ? Self.flagTableFull : 0)
    }

    init(policy: FailureWindowPolicy, failures: Int64, untilMs: Int64, nowMs: Int64, degraded: Bool, newlyBlocked: Bool) {
        let blocked = untilMs > nowMs
        self.init(blocked: blocked, failures: blocked ? failures : min(failures, policy.maxFailures),
                  remainingAttempts: blocked ? 0 : max(0, policy.maxFailures - failures),
                  blockedUntil: blocked ? TokenBucket.ceilDiv(untilMs, 1000) : 0,
                  retryAfter: blocked ? max(1, TokenBucket.ceilDiv(untilMs - nowMs, 1000)) : 0,
                  degraded: degraded, newlyBlocked: newlyBlocked)
    }
}

/// Failure throttling for any capability: login brute-force blocking (`rate_limits`'s
/// `brute_force`), TOTP attempts, password resets. Built from a policy and the shared Redis
/// pool (or nil for in process only); it needs no `rate_limits` section:
///
/// ```swift
/// let totpFailures = FailureWindow(name: "totp", policy: .init(maxFailures: 5, windowSeconds: 300, blockSeconds: 300),
///                                  redis: context.redis, audit: context.audit, auditType: "mfa")
/// if try totpFailures.check(key: user).blocked { ... refuse, Retry-After ... }
/// ... on a wrong code: try totpFailures.recordFailure(key: user)
/// ... on a right code: try totpFailures.recordSuccess(key: user)
/// ```
///
/// With Redis, state is cluster-wide: keys `<key_prefix>fw:{<name>:<key>}:f` (failures) and
/// `:b` (block), one `EVALSHA` round trip per call; while Redis is unavailable the policy's
/// `failurePolicy` decides (`local`: an in-process window; `allow`: never blocked; `deny`:
/// always blocked) and the status says `degraded`. Without Redis, state is in process.
/// Thread-safe. Every call can be made at an explicit instant (`at`, Unix seconds; 0 = now).
public final class FailureWindow: Sendable {
    struct Entry: Sendable, FixedLayoutValue {
        /// Failure instants (ms), oldest first, at most `maxFailures`.
        var failures: [Int64]
        var blockedUntilMs: Int64

        init(failures: [Int64], blockedUntilMs: Int64) {
            self.failures = failures
            self.blockedUntilMs = blockedUntilMs
        }

        /// The layout parameter is the policy's `maxFailures`: the block's end (8 bytes), the
        /// count of instants (8 bytes), then room for `maxFailures` instants of 8 bytes.
        static func storedSize(layout: Int) -> Int { 16 + 8 * max(0, layout) }

        init(loading p: UnsafeRawPointer, layout: Int) {
            blockedUntilMs = p.loadUnaligned(fromByteOffset: 0, as: Int64.self)
            let stored = p.loadUnaligned(fromByteOffset: 8, as: Int64.self)
            let n = Int(clamping: min(max(0, stored), Int64(max(0, layout))))
            var f: [Int64] = []
            f.reserveCapacity(n)
            for i in 0..<n { f.append(p.loadUnaligned(fromByteOffset: 16 + 8 * i, as: Int64.self)) }
            failures = f
        }

        func store(to p: UnsafeMutableRawPointer, layout: Int) {
            // The newest instants when there are more than the layout holds (never the case:
            // the window keeps at most `maxFailures`).
            let kept = failures.suffix(max(0, layout))
            p.storeBytes(of: blockedUntilMs, toByteOffset: 0, as: Int64.self)
            p.storeBytes(of: Int64(kept.count), toByteOffset: 8, as: Int64.self)
            for (i, f) in kept.enumerated() { p.storeBytes(of: f, toByteOffset: 16 + 8 * i, as: Int64.self) }
        }
    }

    public let name: String
    public let policy: FailureWindowPolicy
    let redis: RedisPool?
    /// The windows of the `process` or `host` store, and with Redis the fallback used while
    /// it is unavailable (in this process).
    let local: StateTable<Entry>
    let breaker: OutageBreaker
    let audit: (any AuditHook)?
    let auditType: String
    let keyHead: [UInt8]
    let windowMs: Int64
    let blockMs: Int64

    /// - name: namespace of the keys (`login`, `totp`, ...): 1-64 bytes of `A-Za-z0-9_-.`.
    /// - maxKeys: bound of the in-memory table (keys with failures in the window or a block).
    /// - outageRetryMs: after a Redis failure, calls skip Redis for this long.
    /// - auditType: the `type` of the `blocked` event (`authentication`, `mfa`, ...).
    /// The in-memory table is in this process.
    public convenience init(name: String, policy: FailureWindowPolicy, redis: RedisPool?, audit: (any AuditHook)?,
                            maxKeys: Int = 100_000, outageRetryMs: Int64 = 500, auditType: String = "authentication") {
        let w = policy.windowSeconds * 1000
        self.init(name: name, policy: policy, redis: redis, audit: audit, outageRetryMs: outageRetryMs, auditType: auditType,
                  local: .process(ShardedTable(name: "failure_window:\(name)", maxKeys: maxKeys, idle: Self.idle(windowMs: w),
                                               rank: Self.rank(windowMs: w))))
    }

    /// As the public initialiser, with the in-memory table at `placement` (this process, or
    /// the host's shared region). With Redis it is the outage fallback, in this process.
    convenience init(name: String, policy: FailureWindowPolicy, redis: RedisPool?, audit: (any AuditHook)?,
                     maxKeys: Int = 100_000, outageRetryMs: Int64 = 500, auditType: String = "authentication",
                     placement: TablePlacement) throws(BitsecError) {
        let w = policy.windowSeconds * 1000
        self.init(name: name, policy: policy, redis: redis, audit: audit, outageRetryMs: outageRetryMs, auditType: auditType,
                  local: try StateTable.make(redis == nil ? placement : .process, name: "failure_window:\(name)", maxKeys: maxKeys,
                                             layout: Int(clamping: max(1, policy.maxFailures)),
                                             idle: Self.idle(windowMs: w), rank: Self.rank(windowMs: w)))
    }

    private init(name: String, policy: FailureWindowPolicy, redis: RedisPool?, audit: (any AuditHook)?,
                 outageRetryMs: Int64, auditType: String, local: StateTable<Entry>) {
        self.name = name
        self.policy = policy
        self.redis = redis
        self.audit = audit
        self.auditType = auditType
        self.windowMs = policy.windowSeconds * 1000
        self.blockMs = policy.blockSeconds * 1000
        breaker = OutageBreaker(retryMs: outageRetryMs)
        keyHead = Array("\(redis?.config.keyPrefix ?? "")fw:{\(name):".utf8)
        self.local = local
    }

    // Eviction when the table is full: an idle window first (no block, no failure in the
    // window), then the window with the fewest failures; a live block never goes. With no
    // evictable window a new key's failure is reported blocked (`tableFull`).
    private static func idle(windowMs: Int64) -> @Sendable (Entry, Int64) -> Bool {
        { e, now in e.blockedUntilMs <= now && (e.failures.last ?? .min) <= now &- windowMs }
    }

    private static func rank(windowMs: Int64) -> @Sendable (Entry, Int64) -> Int64? {
        { e, now in
            guard e.blockedUntilMs <= now else { return nil }
            return Int64(e.failures.reduce(0) { $0 + ($1 > now &- windowMs ? 1 : 0) })
        }
    }

    /// Entries, capacity, evictions and refusals of the in-memory table (metrics).
    public var tableStats: BoundedTableStats { local.stats }

    /// Records a failure for `key`; blocks it when this completes `maxFailures` in the window.
    public func recordFailure(key: String, at: Int64 = 0) throws(BitsecError) -> FailureStatus {
        try run(.fail, key: key, at: at)
    }

    /// Records a success: clears the key's failures (an active block stays).
    @discardableResult
    public func recordSuccess(key: String, at: Int64 = 0) throws(BitsecError) -> FailureStatus {
        try run(.success, key: key, at: at)
    }

    /// Whether `key` is blocked, until when, and how many failures it has in the window.
    public func check(key: String, at: Int64 = 0) throws(BitsecError) -> FailureStatus {
        try run(.check, key: key, at: at)
    }

    /// Keys held by the in-memory table (bounded by `maxKeys`; tests, describe).
    public var trackedKeys: Int { local.count }

    /// Clears failures and any block of `key` (administrators, tests).
    public func reset(key: String) throws(BitsecError) {
        _ = try run(.reset, key: key, at: 0)
    }

    enum Op: String { case fail, success, check, reset }

    private func run(_ op: Op, key: String, at: Int64) throws(BitsecError) -> FailureStatus {
        try RateLimitLimits.checkKey(key)
        let atMs = try RateLimitLimits.instantMs(at)
        guard let redis else { return finish(localRun(op, key: key, nowMs: atMs ?? RateLimitLimits.nowMs(), degraded: false), key: key) }
        if !breaker.isOpen {
            do {
                let s = try redisRun(redis, op, key: key, atMs: atMs)
                breaker.succeeded()
                return finish(s, key: key)
            } catch {
                breaker.tripped()
            }
        }
        if op == .reset {
            local.remove(key)
            throw .backend("redis unavailable: the block of this key could not be cleared cluster-wide")
        }
        let nowMs = atMs ?? RateLimitLimits.nowMs()
        switch policy.failurePolicy {
        case .local:
            return finish(localRun(op, key: key, nowMs: nowMs, degraded: true), key: key)
        case .allow:
            return FailureStatus(blocked: false, failures: 0, remainingAttempts: policy.maxFailures, blockedUntil: 0, retryAfter: 0, degraded: true)
        case .deny:
            let retry = max(1, TokenBucket.ceilDiv(breaker.retryMs, 1000))
            return FailureStatus(blocked: true, failures: 0, remainingAttempts: 0,
                                 blockedUntil: TokenBucket.ceilDiv(nowMs, 1000) + retry, retryAfter: retry, degraded: true)
        }
    }

    func finish(_ s: FailureStatus, key: String) -> FailureStatus {
        if s.newlyBlocked, let audit, audit.automaticEventsEnabled {
            audit.emitAutomatic(AutomaticAuditEvent(
                type: auditType, subtype: "blocked", result: "denied", reason: "too_many_failures", actor: key,
                details: [("window", .string(name)), ("failures", .number(JSONNumber(int64: s.failures))),
                          ("blocked_until", .number(JSONNumber(int64: s.blockedUntil))),
                          ("degraded", .bool(s.degraded))]))
        }
        return s
    }

    private func redisRun(_ redis: RedisPool, _ op: Op, key: String, atMs: Int64?) throws(BitsecError) -> FailureStatus {
        var base = keyHead
        base.append(contentsOf: key.utf8)
        base.append(UInt8(ascii: "}"))
        let r = try RateLimitScripts.failureWindow.run(redis, keys: [base + Array(":f".utf8), base + Array(":b".utf8)], args: [
            Array(op.rawValue.utf8), Array(String(policy.maxFailures).utf8), Array(String(windowMs).utf8),
            Array(String(blockMs).utf8), Array(String(atMs ?? 0).utf8),
            Array((policy.blockAnchor == .oldestFailure ? "1" : "0").utf8),
        ])
        guard let a = r.array, a.count == 5, let blocked = a[0].integer, let n = a[1].integer, let until = a[2].integer,
              let now = a[3].integer, let newly = a[4].integer else {
            throw .backend("redis: unexpected reply to the failure-window script: \(r.errorMessage ?? "wrong shape")")
        }
        _ = blocked
        return FailureStatus(policy: policy, failures: n, untilMs: until, nowMs: now, degraded: false, newlyBlocked: newly == 1)
    }

    private func localRun(_ op: Op, key: String, nowMs: Int64, degraded: Bool) -> FailureStatus {
        let policy = self.policy, windowMs = self.windowMs, blockMs = self.blockMs
        if op == .reset {
            local.remove(key)
            return FailureStatus(blocked: false, failures: 0, remainingAttempts: policy.maxFailures, blockedUntil: 0, retryAfter: 0, degraded: degraded)
        }
        return local.update(key, nowMs: nowMs) { (entry, makeRoom) -> FailureStatus in
            func count(_ e: Entry) -> Int64 {
                Int64(e.failures.reduce(0) { $0 + ($1 > nowMs &- windowMs && $1 <= nowMs ? 1 : 0) })
            }
            guard var e = entry else {
                guard op == .fail else {
                    return FailureStatus(policy: policy, failures: 0, untilMs: 0, nowMs: nowMs, degraded: degraded, newlyBlocked: false)
                }
                guard makeRoom() else {
                    var s = FailureStatus(policy: policy, failures: 0, untilMs: nowMs &+ 1000, nowMs: nowMs, degraded: degraded, newlyBlocked: false)
                    s.tableFull = true
                    return s
                }
                var e = Entry(failures: [nowMs], blockedUntilMs: 0)
                var newly = false
                if policy.maxFailures <= 1 {
                    e = Entry(failures: [], blockedUntilMs: nowMs &+ blockMs)
                    newly = true
                }
                entry = e
                return FailureStatus(policy: policy, failures: 1, untilMs: e.blockedUntilMs, nowMs: nowMs, degraded: degraded, newlyBlocked: newly)
            }
            let blocked = e.blockedUntilMs > nowMs
            switch op {
            case .success:
                e.failures.removeAll()
                entry = e
                return FailureStatus(policy: policy, failures: 0, untilMs: e.blockedUntilMs, nowMs: nowMs, degraded: degraded, newlyBlocked: false)
            case .check, .reset:
                return FailureStatus(policy: policy, failures: count(e), untilMs: e.blockedUntilMs, nowMs: nowMs, degraded: degraded, newlyBlocked: false)
            case .fail:
                if blocked {
                    return FailureStatus(policy: policy, failures: count(e), untilMs: e.blockedUntilMs, nowMs: nowMs, degraded: degraded, newlyBlocked: false)
                }
                e.failures.append(nowMs)
                if e.failures.count > Int(policy.maxFailures) { e.failures.removeFirst(e.failures.count - Int(policy.maxFailures)) }
                let n = count(e)
                var newly = false
                if n >= policy.maxFailures {
                    var from = nowMs
                    if policy.blockAnchor == .oldestFailure {
                        for f in e.failures where f > nowMs &- windowMs && f <= nowMs && f < from { from = f }
                    }
                    e.failures.removeAll()
                    e.blockedUntilMs = max(from &+ blockMs, nowMs &+ 1)
                    newly = true
                }
                entry = e
                return FailureStatus(policy: policy, failures: n, untilMs: e.blockedUntilMs, nowMs: nowMs, degraded: degraded, newlyBlocked: newly)
            }
        }
    }
}
