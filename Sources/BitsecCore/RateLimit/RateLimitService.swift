/// The `rate_limits` capability: token buckets per named category and key, in process or
/// cluster-wide through Redis, with a failure policy for Redis outages, and brute-force
/// blocking (`bruteForce`, a `FailureWindow`).
///
/// ```json
/// "rate_limits": {
///   "store": "redis",              // "process" | "host" | "redis" ("local": process); default: store.default
///   "max_keys": 100000,            // keys per category table (bounded memory)
///   "outage_retry_ms": 500,        // after a Redis failure, skip Redis this long
///   "categories": {
///     "default":   {"capacity": 100, "period_seconds": 60},
///     "auth":      {"capacity": 10,  "period_seconds": 60, "failure_policy": "deny"},
///     "upload":    {"capacity": 20,  "refill": 20, "period_seconds": 300},
///     "inference": {"capacity": 50,  "period_seconds": 60, "failure_policy": "local", "local_share_percent": 25}
///   },
///   "brute_force": {"max_failures": 5, "window_seconds": 3600, "block_seconds": 3600},
///   "login_guard": {"client": {...}, "account": {...}, "ipv4_prefix": 32, "ipv6_prefix": 64}
/// }
/// ```
public final class RateLimitService: Capability {
    public static let sectionName = "rate_limits"

    /// Where the buckets, the brute-force window and the login guard live.
    public let store: StoreKind
    public let categories: [RateLimitCategory]
    public let maxKeys: Int
    /// Login brute-force blocking (the ERP guide's rule by default).
    public let bruteForce: FailureWindow
    /// The login guard: per-client and per-account attempts, reserved before the password
    /// check (`login_guard`; its defaults when absent).
    public let loginGuard: LoginGuard
    private let redis: RedisPool?
    private let breaker: OutageBreaker
    private let audit: (any AuditHook)?

    init(store: StoreKind, categories: [RateLimitCategory], maxKeys: Int, bruteForce: FailureWindow, loginGuard: LoginGuard,
         redis: RedisPool?, breaker: OutageBreaker, audit: (any AuditHook)?) {
        self.loginGuard = loginGuard
        self.store = store
        self.categories = categories
        self.maxKeys = maxKeys
        self.bruteForce = bruteForce
        self.redis = redis
        self.breaker = breaker
        self.audit = audit
    }

    public static func read(_ o: ConfigObject, context: CapabilityContext) throws(BitsecError) -> RateLimitService {
        let store = try context.stores.settings.select(o, field: "store", aliases: ["local": .process])
        let placement = try context.stores.placement(store, field: o.fieldPath("store"))
        let maxKeys = Int(try o.int("max_keys", in: 64...100_000_000, default: StoreSettings.defaultMaxKeys(store)))
        let retryMs = try o.int("outage_retry_ms", in: 0...600_000, default: 500)
        let prefix = context.redis?.config.keyPrefix ?? ""
        var categories: [RateLimitCategory] = []
        if let cats = try o.object("categories") {
            for name in cats.keys {
                guard RateLimitCategory.validName(name) else {
                    throw .config("\(cats.fieldPath(name)): a category name is 1-64 characters of A-Z a-z 0-9 _ - .")
                }
                guard let c = try cats.object(name) else { throw .config("\(cats.fieldPath(name)) must be an object") }
                let capacity = try c.int("capacity", in: 1...1_000_000_000) ?? -1
                guard capacity > 0 else { throw .config("\(c.fieldPath("capacity")) is required") }
                let refill = try c.int("refill", in: 1...1_000_000_000, default: capacity)
                let period = try c.int("period_seconds", in: 1...RateLimitLimits.maxPeriodSeconds) ?? -1
                guard period > 0 else { throw .config("\(c.fieldPath("period_seconds")) is required") }
                let policy = try BackendFailurePolicy.read(c)
                let share = try c.int("local_share_percent", in: 1...100, default: 100)
                try c.finish()
                let shape = BucketShape(capacity: capacity, refill: refill, periodMs: period * 1000)
                guard shape.isExact else {
                    throw .config("\(c.path): capacity x period_seconds x 1000 must not exceed 2^52 (exact arithmetic)")
                }
                categories.append(try RateLimitCategory(name: name, shape: shape, failurePolicy: policy, localSharePercent: share,
                                                        maxKeys: maxKeys, keyPrefix: prefix, placement: placement))
            }
            try cats.finish()
            if categories.isEmpty { throw .config("\(o.fieldPath("categories")) must name at least one category") }
        } else {
            for (name, cap, period) in RateLimitCategory.adr007 {
                categories.append(try RateLimitCategory(name: name, shape: BucketShape(capacity: cap, refill: cap, periodMs: period * 1000),
                                                        failurePolicy: .local, localSharePercent: 100, maxKeys: maxKeys, keyPrefix: prefix,
                                                        placement: placement))
            }
        }
        let bfPolicy = try o.object("brute_force").map { (b) throws(BitsecError) in try FailureWindowPolicy.read(b) } ?? .login
        let redis = store == .redis ? context.redis : nil
        let guardSection = try o.object("login_guard")
        let loginGuard = try LoginGuard.read(guardSection, redis: redis, audit: context.audit, maxKeys: maxKeys, outageRetryMs: retryMs,
                                             placement: placement)
        try o.finish()
        let bruteForce = try FailureWindow(name: "login", policy: bfPolicy, redis: redis, audit: context.audit, maxKeys: maxKeys,
                                           outageRetryMs: retryMs, placement: placement)
        return RateLimitService(store: store, categories: categories, maxKeys: maxKeys, bruteForce: bruteForce, loginGuard: loginGuard, redis: redis,
                                breaker: OutageBreaker(retryMs: retryMs), audit: context.audit)
    }

    /// The category named `name`, or `notFound`.
    @inline(__always)
    public func category(_ name: String) throws(BitsecError) -> RateLimitCategory {
        for c in categories where c.name == name { return c }
        throw BitsecError(.notFound, "no rate-limit category named \"\(String(name.prefix(RateLimitLimits.maxCategoryBytes)))\"")
    }

    /// The category whose name is these bytes (the ABI passes the caller's buffer: no String
    /// is made on the hot path), or `notFound`.
    @inline(__always)
    public func category(utf8 name: UnsafeRawBufferPointer) throws(BitsecError) -> RateLimitCategory {
        for c in categories where c.nameBytes.count == name.count {
            let same = c.nameBytes.withUnsafeBytes { mine -> Bool in
                for i in 0..<mine.count where mine[i] != name[i] { return false }
                return true
            }
            if same { return c }
        }
        let shown = String(decoding: name.prefix(RateLimitLimits.maxCategoryBytes), as: UTF8.self)
        throw BitsecError(.notFound, "no rate-limit category named \"\(shown)\"")
    }

    /// Takes `cost` tokens from `key`'s bucket in `category` at `at` (Unix seconds; 0 = now).
    ///
    /// Throws only for bad input: unknown category (`notFound`), empty key
    /// (`invalidArgument`), key over 512 bytes (`tooLarge`), cost outside 1...capacity
    /// (`invalidArgument`: such a take could never be allowed). A Redis outage is never an
    /// error: the category's failure policy decides and the decision says `degraded`.
    public func take(category name: String, key: String, cost: Int64 = 1, at: Int64 = 0) throws(BitsecError) -> RateLimitDecision {
        try take(in: try category(name), key: key, cost: cost, at: at)
    }

    /// As `take(category:...)`, with the category already looked up.
    public func take(in c: RateLimitCategory, key: String, cost: Int64 = 1, at: Int64 = 0) throws(BitsecError) -> RateLimitDecision {
        try RateLimitLimits.checkKey(key)
        guard cost >= 1 else { throw .invalid("cost must be at least 1") }
        guard cost <= c.shape.capacity else {
            throw .invalid("cost \(cost) exceeds the capacity \(c.shape.capacity) of category \(c.name): it could never be allowed")
        }
        let atMs = try RateLimitLimits.instantMs(at)
        guard let redis else {
            let (d, first) = c.buckets.take(key, cost: cost, nowMs: atMs ?? RateLimitLimits.nowMs(), degraded: false)
            if first { reportDenial(c, key: key, d) }
            return d
        }
        if !breaker.isOpen {
            do {
                let (d, first) = try redisTake(redis, c, key: key, cost: cost, atMs: atMs)
                if breaker.succeeded() { reportBackend(recovered: true) }
                if first { reportDenial(c, key: key, d) }
                return d
            } catch {
                if breaker.tripped() { reportBackend(recovered: false, detail: error.detail) }
            }
        }
        return degradedTake(c, key: key, cost: cost, nowMs: atMs ?? RateLimitLimits.nowMs())
    }

    /// Forgets `key`'s bucket in `category` (administrators, tests): the next take finds it full.
    public func reset(category name: String, key: String) throws(BitsecError) {
        try reset(in: try category(name), key: key)
    }

    public func reset(in c: RateLimitCategory, key: String) throws(BitsecError) {
        try RateLimitLimits.checkKey(key)
        c.buckets.reset(key)
        c.fallback.reset(key)
        if let redis {
            let r = try redis.command([Array("DEL".utf8), redisKey(c, key)])
            if let e = r.errorMessage { throw .backend("redis: DEL failed: \(e)") }
        }
    }

    @inline(__always)
    private func redisKey(_ c: RateLimitCategory, _ key: String) -> [UInt8] {
        var k = c.redisKeyHead
        k.append(contentsOf: key.utf8)
        k.append(UInt8(ascii: "}"))
        return k
    }

    private static let nowArg = RESPEncoder.arguments([Array("0".utf8)])

    private func redisTake(_ redis: RedisPool, _ c: RateLimitCategory, key: String, cost: Int64, atMs: Int64?) throws(BitsecError) -> (RateLimitDecision, Bool) {
        let shape = c.shape
        // KEYS[1] the bucket; ARGV full, rate (kept encoded per category), need, now.
        let r = try RateLimitScripts.take.run(redis, numKeys: 1, argCount: 5, capacity: c.redisKeyHead.count + key.utf8.count + 96) { e in
            e.bulk(c.redisKeyHead, key.utf8, UInt8(ascii: "}"))
            e.raw(c.redisShapeArgs)
            if cost == 1 { e.raw(c.redisNeedOneArg) } else { e.bulk(int: cost * shape.unit) }
            if let atMs { e.bulk(int: atMs) } else { e.raw(Self.nowArg) }
        }
        guard let a = r.array, a.count == 5, let allowed = a[0].integer, let level = a[1].integer, let toFull = a[2].integer,
              let toRetry = a[3].integer, let first = a[4].integer else {
            throw .backend("redis: unexpected reply to the rate-limit script: \(r.errorMessage ?? "wrong shape")")
        }
        let o = BucketOutcome(allowed: allowed == 1, level: level, msToFull: toFull, msToRetry: toRetry)
        return (RateLimitDecision(o, shape: shape, degraded: false), first == 1)
    }

    /// The decision while Redis is unavailable, by the category's failure policy.
    private func degradedTake(_ c: RateLimitCategory, key: String, cost: Int64, nowMs: Int64) -> RateLimitDecision {
        switch c.failurePolicy {
        case .local:
            let shape = c.fallback.shape
            guard cost <= shape.capacity else {
                // The share is smaller than this cost: never satisfiable while degraded.
                return RateLimitDecision(allowed: false, limit: shape.capacity, remaining: 0, resetAfter: 0,
                                         retryAfter: max(1, TokenBucket.seconds(breaker.retryMs)), degraded: true, reason: .limited)
            }
            let (d, first) = c.fallback.take(key, cost: cost, nowMs: nowMs, degraded: true)
            if first { reportDenial(c, key: key, d) }
            return d
        case .allow:
            return RateLimitDecision(allowed: true, limit: c.shape.capacity, remaining: 0, resetAfter: 0, retryAfter: 0,
                                     degraded: true, reason: .backendAllow)
        case .deny:
            return RateLimitDecision(allowed: false, limit: c.shape.capacity, remaining: 0, resetAfter: 0,
                                     retryAfter: max(1, TokenBucket.seconds(breaker.retryMs)), degraded: true, reason: .backendDeny)
        }
    }

    /// One `rate_limit`/`rate_limited` event per burst of denials of a key (the first denial
    /// after an allowed take), not one per denied request: a flood must not flood the audit.
    private func reportDenial(_ c: RateLimitCategory, key: String, _ d: RateLimitDecision) {
        guard let audit, audit.automaticEventsEnabled else { return }
        audit.emitAutomatic(AutomaticAuditEvent(
            type: "rate_limit", subtype: "rate_limited", result: "denied", reason: "limited", actor: key, resource: c.name,
            details: [("limit", .number(JSONNumber(int64: d.limit))), ("retry_after", .number(JSONNumber(int64: d.retryAfter))),
                      ("degraded", .bool(d.degraded))]))
    }

    /// One event when Redis becomes unavailable and one when it is back.
    private func reportBackend(recovered: Bool, detail: String = "") {
        guard let audit, audit.automaticEventsEnabled else { return }
        audit.emitAutomatic(AutomaticAuditEvent(
            type: "rate_limit", subtype: recovered ? "backend_recovered" : "backend_unavailable",
            result: recovered ? "success" : "failure", reason: recovered ? nil : "redis_unavailable",
            details: recovered ? [] : [("detail", .string(detail))]))
    }

    /// The in-memory tables that can hold keys: the buckets (store `process` or `host`) or the outage
    /// fallback buckets (store `redis`, policy `local`), and the brute-force window.
    public var boundedTables: [BoundedTableStats] {
        var out: [BoundedTableStats] = []
        for c in categories {
            if redis == nil { out.append(c.buckets.table.stats) } else if c.failurePolicy == .local { out.append(c.fallback.table.stats) }
        }
        if redis == nil || bruteForce.policy.failurePolicy == .local { out.append(bruteForce.tableStats) }
        for w in [loginGuard.client, loginGuard.account] + (loginGuard.network.map { [$0] } ?? []) where redis == nil || w.policy.failurePolicy == .local {
            out.append(w.tableStats)
        }
        return out
    }

    /// True while decisions skip Redis after a failure (tests, health endpoints).
    public var degraded: Bool { redis != nil && breaker.isOpen }

    public func describe() -> JSONValue {
        let p = bruteForce.policy
        return .object(JSONObject([
            ("store", .string(store.rawValue)),
            ("max_keys", .number(JSONNumber(int64: Int64(maxKeys)))),
            ("outage_retry_ms", .number(JSONNumber(int64: breaker.retryMs))),
            ("categories", .object(JSONObject(categories.map { ($0.name, $0.describe()) }))),
            ("brute_force", .object(JSONObject([
                ("max_failures", .number(JSONNumber(int64: p.maxFailures))),
                ("window_seconds", .number(JSONNumber(int64: p.windowSeconds))),
                ("block_seconds", .number(JSONNumber(int64: p.blockSeconds))),
                ("failure_policy", .string(p.failurePolicy.rawValue)),
            ]))),
            ("login_guard", loginGuard.describe()),
        ]))
    }
}
