import Testing
import Glibc
import Dispatch
import Synchronization
import BitsecCore

/// Collects automatic audit events (the audit capability is another issue's).
final class RecordingAuditHook: AuditHook, @unchecked Sendable {
    private let lock = Locked<[String]>([])
    var automaticEventsEnabled: Bool { true }
    func emitAutomatic(_ event: AutomaticAuditEvent) {
        lock.with { $0.append("\(event.type)/\(event.subtype)/\(event.actor ?? "")") }
    }
    var events: [String] { lock.with { $0 } }
}

private func service(_ section: String, redis: String? = nil, audit: (any AuditHook)? = nil) throws -> RateLimitService {
    let rt = try Runtime.open(config: "{" + (redis.map { "\"redis\": \($0), " } ?? "") + "\"rate_limits\": \(section)}")
    let r = try rt.require(rt.rateLimits)
    guard let audit else { return r }
    // Rebuild with an audit hook: read the section again through the public reader.
    let doc = try JSONReader.parse(Array(section.utf8))
    return try RateLimitService.read(try ConfigObject(doc, path: "rate_limits"),
                                     context: CapabilityContext(config: ConfigContext(allowInlineSecrets: false), redis: rt.redis, audit: audit))
}

/// The rate_limits section in a runtime whose features are all in `kind` (through the
/// configuration: `store.default`), with the audit hook when given.
private func service(_ kind: TestStore, _ section: String, audit: (any AuditHook)? = nil) throws -> RateLimitService? {
    guard let rt = try TestStores.runtime(kind, "\"rate_limits\": \(section)") else { return nil }
    let r = try rt.require(rt.rateLimits)
    #expect(r.store == kind)
    guard let audit else { return r }
    let doc = try JSONReader.parse(Array(section.utf8))
    return try RateLimitService.read(try ConfigObject(doc, path: "rate_limits"), context: TestStores.context(rt, audit: audit))
}

private func redisSection(_ extra: String = "") -> String? {
    guard let port = TestRedis.port else { return nil }
    return #"{"host": "127.0.0.1", "port": \#(port), "command_timeout_ms": 1000\#(extra)}"#
}

/// A unique key per test run (Swift Testing runs tests in parallel; Redis is shared).
private func uniqueKey(_ name: String) -> String { "\(name)-\(getpid())-\(Clock.nowMicros())" }

private let t0: Int64 = 1_800_000_000

@Suite struct TokenBucketArithmeticTests {
    @Test func ceilDivAndSeconds() {
        #expect(TokenBucket.ceilDiv(0, 7) == 0)
        #expect(TokenBucket.ceilDiv(-3, 7) == 0)
        #expect(TokenBucket.ceilDiv(7, 7) == 1)
        #expect(TokenBucket.ceilDiv(8, 7) == 2)
        #expect(TokenBucket.seconds(1) == 1)
        #expect(TokenBucket.seconds(1000) == 1)
        #expect(TokenBucket.seconds(1001) == 2)
    }

    @Test func tenPerMinuteSchedule() {
        // 10 tokens, 10 per 60 s: one token every 6 s exactly.
        let shape = BucketShape(capacity: 10, refill: 10, periodMs: 60_000)
        var st: BucketState? = nil
        for k in 0..<10 {
            let o = TokenBucket.take(&st, cost: 1, nowMs: t0 * 1000, shape: shape)
            let d = RateLimitDecision(o, shape: shape, degraded: false)
            #expect(d.allowed && d.remaining == Int64(9 - k) && d.retryAfter == 0)
            #expect(d.resetAfter == Int64(6 * (k + 1)))
        }
        let denied = RateLimitDecision(TokenBucket.take(&st, cost: 1, nowMs: t0 * 1000, shape: shape), shape: shape, degraded: false)
        #expect(!denied.allowed && denied.remaining == 0 && denied.retryAfter == 6 && denied.resetAfter == 60 && denied.reason == .limited)
        // 5.999 s later: still nothing; retry-after rounds up to 1 s, never 0.
        let early = RateLimitDecision(TokenBucket.take(&st, cost: 1, nowMs: t0 * 1000 + 5_999, shape: shape), shape: shape, degraded: false)
        #expect(!early.allowed && early.retryAfter == 1)
        let onTime = RateLimitDecision(TokenBucket.take(&st, cost: 1, nowMs: t0 * 1000 + 6_000, shape: shape), shape: shape, degraded: false)
        #expect(onTime.allowed && onTime.remaining == 0 && onTime.resetAfter == 60)
        // A cost of 3 after 12 s: 2 tokens there, 6 s to wait.
        let three = RateLimitDecision(TokenBucket.take(&st, cost: 3, nowMs: t0 * 1000 + 18_000, shape: shape), shape: shape, degraded: false)
        #expect(!three.allowed && three.remaining == 2 && three.retryAfter == 6)
        // Long idle: capped at full, no more.
        let idle = RateLimitDecision(TokenBucket.take(&st, cost: 1, nowMs: t0 * 1000 + 10_000_000, shape: shape), shape: shape, degraded: false)
        #expect(idle.allowed && idle.remaining == 9)
    }

    @Test func noDriftOverManySmallSteps() {
        // 7 tokens per 3 s (no integral ms per token): after exactly 3000 steps of 1 ms from
        // empty, exactly 7 tokens are back, never 6 or 8.
        let shape = BucketShape(capacity: 7, refill: 7, periodMs: 3_000)
        var st: BucketState? = BucketState(level: 0, lastMs: 0)
        var allowed = 0
        for ms in stride(from: Int64(1), through: 3000, by: 1) {
            if TokenBucket.take(&st, cost: 1, nowMs: ms, shape: shape).allowed { allowed += 1 }
        }
        #expect(allowed == 7)
        // A clock going backwards refills nothing.
        var s2: BucketState? = BucketState(level: 0, lastMs: 10_000)
        #expect(!TokenBucket.take(&s2, cost: 1, nowMs: 5_000, shape: shape).allowed)
        #expect(s2 == BucketState(level: 0, lastMs: 10_000))
    }

    @Test func exactnessBound() {
        #expect(BucketShape(capacity: 1_000_000, refill: 1, periodMs: 86_400_000).isExact)
        #expect(!BucketShape(capacity: 1_000_000_000, refill: 1, periodMs: 31_536_000_000).isExact)
        #expect(BucketShape(capacity: 10, refill: 7, periodMs: 60_000).share(percent: 50) == BucketShape(capacity: 5, refill: 3, periodMs: 60_000))
        #expect(BucketShape(capacity: 1, refill: 1, periodMs: 1000).share(percent: 10) == BucketShape(capacity: 1, refill: 1, periodMs: 1000))
    }
}

@Suite struct RateLimitConfigTests {
    @Test func adr007CategoriesByDefault() throws {
        let s = try service("{}")
        #expect(s.store == .process)
        #expect(s.categories.map(\.name) == ["default", "auth", "upload", "inference"])
        #expect(try s.category("upload").shape == BucketShape(capacity: 20, refill: 20, periodMs: 300_000))
        #expect(s.bruteForce.policy == .login)
        #expect(String(decoding: s.describe().serialized, as: UTF8.self).contains("\"brute_force\""))
    }

    @Test func invalidSectionsAreNamed() {
        expectError(.config, "unknown field rate_limits.categories.a.capcity") { _ = try service(#"{"categories": {"a": {"capacity": 1, "period_seconds": 1, "capcity": 2}}}"#) }
        expectError(.config, "capacity is required") { _ = try service(#"{"categories": {"a": {"period_seconds": 1}}}"#) }
        expectError(.config, "period_seconds is required") { _ = try service(#"{"categories": {"a": {"capacity": 1}}}"#) }
        expectError(.config, "category name") { _ = try service(#"{"categories": {"a:b": {"capacity": 1, "period_seconds": 1}}}"#) }
        expectError(.config, "2^52") { _ = try service(#"{"categories": {"a": {"capacity": 1000000000, "period_seconds": 31536000}}}"#) }
        expectError(.config, "failure_policy must be one of") { _ = try service(#"{"categories": {"a": {"capacity": 1, "period_seconds": 1, "failure_policy": "open"}}}"#) }
        expectError(.config, "no redis section") { _ = try service(#"{"store": "redis"}"#) }
        expectError(.config, "at least one category") { _ = try service(#"{"categories": {}}"#) }
        expectError(.config, "unknown field rate_limits.brute_force.max") { _ = try service(#"{"brute_force": {"max": 3}}"#) }
        expectError(.config, "max_keys must be between") { _ = try service(#"{"max_keys": 1}"#) }
    }
}

@Suite struct LocalRateLimitTests {
    let cfg = #"{"max_keys": 64, "categories": {"default": {"capacity": 3, "period_seconds": 30}, "big": {"capacity": 100000, "period_seconds": 60}}}"#

    @Test func badInput() throws {
        let s = try service(cfg)
        expectError(.notFound, "no rate-limit category") { _ = try s.take(category: "nope", key: "k") }
        expectError(.invalidArgument, "key is empty") { _ = try s.take(category: "default", key: "") }
        expectError(.tooLarge, "512") { _ = try s.take(category: "default", key: String(repeating: "x", count: 513)) }
        #expect(try s.take(category: "default", key: String(repeating: "x", count: 512)).allowed)
        expectError(.invalidArgument, "at least 1") { _ = try s.take(category: "default", key: "k", cost: 0) }
        expectError(.invalidArgument, "exceeds the capacity 3") { _ = try s.take(category: "default", key: "k", cost: 4) }
        expectError(.invalidArgument, "at must be") { _ = try s.take(category: "default", key: "k", at: -1) }
        #expect(try s.take(category: "default", key: "k2", cost: 3).remaining == 0)
    }

    /// Keys are compared by their bytes in every store: "jos\u{E9}" and "jose\u{301}" (two
    /// users a host keeps apart) are two buckets. The in-process table compared keys as Swift
    /// strings, up to Unicode canonical equivalence, and made them one: one user could empty
    /// the other's bucket there, while the host store and Redis kept them apart.
    @Test(arguments: TestStores.kinds) func canonicallyEquivalentKeysAreTwoKeys(kind: TestStore) throws {
        guard let s = try service(kind, cfg) else { return }
        let tail = uniqueKey("-k")
        let composed = "user:jos\u{E9}" + tail, decomposed = "user:jose\u{301}" + tail
        #expect(composed == decomposed && Array(composed.utf8) != Array(decomposed.utf8))  // (Swift's == is canonical)
        for _ in 0..<3 { #expect(try s.take(category: "default", key: composed, at: t0).allowed, "\(kind)") }
        #expect(try !s.take(category: "default", key: composed, at: t0).allowed, "\(kind)")
        #expect(try s.take(category: "default", key: decomposed, at: t0).allowed, "\(kind): one bucket for two keys")
    }

    @Test(arguments: TestStores.kinds) func keysAreIndependentAndCategoriesToo(kind: TestStore) throws {
        guard let s = try service(kind, cfg) else { return }
        for _ in 0..<3 { #expect(try s.take(category: "default", key: "a", at: t0).allowed) }
        #expect(try !s.take(category: "default", key: "a", at: t0).allowed)
        #expect(try s.take(category: "default", key: "b", at: t0).allowed)
        #expect(try s.take(category: "big", key: "a", at: t0).allowed)
        // 10 s later one token is back (3 per 30 s).
        #expect(try s.take(category: "default", key: "a", at: t0 + 10).allowed)
        try s.reset(category: "default", key: "a")
        #expect(try s.take(category: "default", key: "a", at: t0 + 10).remaining == 2)
    }

    /// The 10-per-minute schedule of the arithmetic test, through a runtime in each store:
    /// the same decisions to the second.
    @Test(arguments: TestStores.kinds) func tenPerMinuteScheduleInEveryStore(kind: TestStore) throws {
        guard let s = try service(kind, #"{"categories": {"auth": {"capacity": 10, "period_seconds": 60}}}"#) else { return }
        let key = uniqueKey("schedule")
        for k in 0..<10 {
            let d = try s.take(category: "auth", key: key, at: t0)
            #expect(d.allowed && d.remaining == Int64(9 - k) && d.retryAfter == 0 && d.resetAfter == Int64(6 * (k + 1)), "\(kind)")
        }
        let denied = try s.take(category: "auth", key: key, at: t0)
        #expect(!denied.allowed && denied.remaining == 0 && denied.retryAfter == 6 && denied.resetAfter == 60 && denied.reason == .limited)
        // 6 s later exactly one token is back; a cost of 3 after 12 s more finds 2.
        let onTime = try s.take(category: "auth", key: key, at: t0 + 6)
        #expect(onTime.allowed && onTime.remaining == 0 && onTime.resetAfter == 60)
        let three = try s.take(category: "auth", key: key, cost: 3, at: t0 + 18)
        #expect(!three.allowed && three.remaining == 2 && three.retryAfter == 6)
        // Long idle: capped at full, no more.
        let idle = try s.take(category: "auth", key: key, at: t0 + 10_000)
        #expect(idle.allowed && idle.remaining == 9)
    }

    /// A random schedule of takes with random costs: every store decides exactly as the
    /// token-bucket arithmetic does (7 tokens, 3 back every 11 s: no whole ms per token).
    @Test(arguments: TestStores.kinds) func randomScheduleMatchesTheArithmetic(kind: TestStore) throws {
        guard let s = try service(kind, #"{"categories": {"odd": {"capacity": 7, "refill": 3, "period_seconds": 11}}}"#) else { return }
        let shape = try s.category("odd").shape
        let key = uniqueKey("differential")
        var reference: BucketState? = nil
        var rng = SystemRandomNumberGenerator()
        var at = t0
        for _ in 0..<300 {
            at += Int64.random(in: 0...4, using: &rng)
            let cost = Int64.random(in: 1...4, using: &rng)
            let expected = RateLimitDecision(TokenBucket.take(&reference, cost: cost, nowMs: at * 1000, shape: shape), shape: shape, degraded: false)
            #expect(try s.take(category: "odd", key: key, cost: cost, at: at) == expected, "\(kind) at \(at) cost \(cost)")
        }
    }

    @Test func tableIsBoundedAndIdleBucketsAreEvicted() throws {
        // max_keys 64. Fill far beyond with keys that drain their bucket below half (2 of
        // 3 tokens: never evicted): once 64 are held, new keys are refused (key_table_full,
        // denied), never a crash and never unbounded memory.
        let s = try service(cfg)
        var refused = 0
        for k in 0..<1000 {
            let d = try s.take(category: "default", key: "key-\(k)", cost: 2, at: t0)
            if d.reason == .keyTableFull { refused += 1; #expect(!d.allowed && d.retryAfter >= 1) }
        }
        #expect(refused > 0)
        // 30 s later every bucket is full again: idle, so new keys find room.
        for k in 1000..<1064 {
            let d = try s.take(category: "default", key: "key-\(k)", at: t0 + 30)
            #expect(d.reason != .keyTableFull || !d.allowed)
        }
        var admitted = 0
        for k in 2000..<2200 where try s.take(category: "default", key: "key-\(k)", at: t0 + 60).allowed { admitted += 1 }
        #expect(admitted > 0)
    }

    @Test func manyThreadsOnOneKeyAllowExactlyTheCapacity() throws {
        let s = try service(cfg)
        let allowed = Atomic<Int>(0)
        let key = uniqueKey("threads")
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for _ in 0..<20_000 {
                if (try? s.take(category: "big", key: key, at: t0))?.allowed == true { allowed.add(1, ordering: .relaxed) }
            }
        }
        #expect(allowed.load(ordering: .relaxed) == 100_000)
    }

    @Test(arguments: TestStores.kinds) func denialsAreAuditedOncePerBurst(kind: TestStore) throws {
        let hook = RecordingAuditHook()
        guard let s = try service(kind, cfg, audit: hook) else { return }
        for _ in 0..<10 { _ = try s.take(category: "default", key: "burst", at: t0) }
        #expect(hook.events == ["rate_limit/rate_limited/burst"])
        _ = try s.take(category: "default", key: "burst", at: t0 + 10)  // allowed again
        for _ in 0..<5 { _ = try s.take(category: "default", key: "burst", at: t0 + 10) }
        #expect(hook.events.count == 2)
    }
}

@Suite struct BruteForceLocalTests {
    @Test(arguments: TestStores.kinds) func fiveFailuresInAnHourBlockForAnHour(kind: TestStore) throws {
        let hook = RecordingAuditHook()
        guard let s = try service(kind, "{}", audit: hook) else { return }
        let bf = s.bruteForce
        for k in 1...4 {
            let st = try bf.recordFailure(key: "10.0.0.1", at: t0 + Int64(k) * 600)
            #expect(!st.blocked && st.failures == Int64(k) && st.remainingAttempts == Int64(5 - k))
        }
        let fifth = try bf.recordFailure(key: "10.0.0.1", at: t0 + 3000)
        #expect(fifth.blocked && fifth.newlyBlocked && fifth.blockedUntil == t0 + 3000 + 3600 && fifth.retryAfter == 3600)
        #expect(hook.events == ["authentication/blocked/10.0.0.1"])
        let during = try bf.check(key: "10.0.0.1", at: t0 + 3000 + 3599)
        #expect(during.blocked && during.retryAfter == 1 && during.blockedUntil == t0 + 6600)
        // Failures during the block neither count nor extend it.
        #expect(try !bf.recordFailure(key: "10.0.0.1", at: t0 + 4000).newlyBlocked)
        #expect(try bf.check(key: "10.0.0.1", at: t0 + 4000).blockedUntil == t0 + 6600)
        #expect(try !bf.check(key: "10.0.0.1", at: t0 + 6600).blocked)
        // A success does not lift an active block; reset does.
        _ = try bf.recordFailure(key: "10.0.0.2", at: t0)
        for _ in 0..<4 { _ = try bf.recordFailure(key: "10.0.0.2", at: t0) }
        #expect(try bf.recordSuccess(key: "10.0.0.2", at: t0 + 1).blocked)
        try bf.reset(key: "10.0.0.2")
        #expect(try !bf.check(key: "10.0.0.2", at: t0 + 1).blocked)
        #expect(hook.events.count == 2)
    }

    @Test(arguments: TestStores.kinds) func slidingWindowAndSuccessClears(kind: TestStore) throws {
        guard let bf = try service(kind, "{}")?.bruteForce else { return }
        // Failures 20 minutes apart: at most 3 in any hour, never blocked.
        for k in 0..<12 { #expect(try !bf.recordFailure(key: "slow", at: t0 + Int64(k) * 1200).blocked) }
        #expect(try bf.check(key: "slow", at: t0 + 11 * 1200).failures == 3)
        for _ in 0..<4 { _ = try bf.recordFailure(key: "u", at: t0) }
        #expect(try bf.recordSuccess(key: "u", at: t0).failures == 0)
        #expect(try !bf.recordFailure(key: "u", at: t0).blocked)
    }

    @Test func aReusablePolicyWithoutARateLimitsSection() throws {
        let totp = FailureWindow(name: "totp", policy: .init(maxFailures: 5, windowSeconds: 300, blockSeconds: 300), redis: nil, audit: nil)
        for _ in 0..<4 { _ = try totp.recordFailure(key: "alice", at: t0) }
        let st = try totp.recordFailure(key: "alice", at: t0 + 299)
        #expect(st.blocked && st.retryAfter == 300)
        #expect(try !totp.check(key: "alice", at: t0 + 599).blocked)
        #expect(try !totp.check(key: "alice", at: t0 + 599).blocked)
        expectError(.invalidArgument, "key is empty") { _ = try totp.check(key: "") }
    }
}

@Suite struct RedisRateLimitTests {
    @Test func sameDecisionsAsTheInProcessBucket() throws {
        guard let redis = redisSection() else { return }
        let section = #"{"categories": {"odd": {"capacity": 7, "refill": 3, "period_seconds": 11}}}"#
        let viaRedis = try service(section, redis: redis)
        let local = try service(#"{"store": "local", "categories": {"odd": {"capacity": 7, "refill": 3, "period_seconds": 11}}}"#)
        #expect(viaRedis.store == .redis)
        let key = uniqueKey("differential")
        var rng = SystemRandomNumberGenerator()
        var at = t0
        for _ in 0..<300 {
            at += Int64.random(in: 0...4, using: &rng)
            let cost = Int64.random(in: 1...4, using: &rng)
            let a = try viaRedis.take(category: "odd", key: key, cost: cost, at: at)
            let b = try local.take(category: "odd", key: key, cost: cost, at: at)
            #expect(a == b, "at \(at) cost \(cost)")
            #expect(!a.degraded)
        }
    }

    @Test func serverTimeAndHashTaggedKeys() throws {
        guard let redisCfg = redisSection(#", "key_prefix": "t:""#) else { return }
        let s = try service(#"{"categories": {"c": {"capacity": 2, "period_seconds": 3600}}}"#, redis: redisCfg)
        let key = uniqueKey("now")
        #expect(try s.take(category: "c", key: key).remaining == 1)
        #expect(try s.take(category: "c", key: key).remaining == 0)
        let d = try s.take(category: "c", key: key)
        #expect(!d.allowed && d.retryAfter >= 1799 && d.retryAfter <= 1800)
        let pool = try Runtime.open(config: #"{"redis": \#(redisCfg)}"#).requireRedis()
        #expect(try pool.command("EXISTS", "t:rl:{c:\(key)}") == .integer(1))
        let ttl = try #require(try pool.command("PTTL", "t:rl:{c:\(key)}").integer)
        #expect(ttl > 3_590_000 && ttl <= 3_601_000)
    }

    @Test func scriptFlushIsTransparent() throws {
        guard let redisCfg = redisSection() else { return }
        let s = try service(#"{"categories": {"c": {"capacity": 5, "period_seconds": 60}}}"#, redis: redisCfg)
        let pool = try Runtime.open(config: #"{"redis": \#(redisCfg)}"#).requireRedis()
        let key = uniqueKey("flush")
        #expect(try s.take(category: "c", key: key, at: t0).remaining == 4)
        #expect(try pool.command("SCRIPT", "FLUSH") == .status("OK"))
        let d = try s.take(category: "c", key: key, at: t0)
        #expect(d.remaining == 3 && !d.degraded)
    }

    @Test func outagePoliciesNeverThrow() throws {
        let port = closedPort()
        let redisCfg = #"{"port": \#(port), "reconnect_backoff_ms": 60000}"#
        let s = try service(#"{"categories": {"l": {"capacity": 10, "period_seconds": 60, "local_share_percent": 30}, "a": {"capacity": 1, "period_seconds": 60, "failure_policy": "allow"}, "d": {"capacity": 1, "period_seconds": 60, "failure_policy": "deny"}}}"#, redis: redisCfg)
        var allowed = 0
        for _ in 0..<10 {
            let d = try s.take(category: "l", key: "k", at: t0)
            #expect(d.degraded && d.limit == 3)
            if d.allowed { allowed += 1 }
        }
        #expect(allowed == 3)
        let a = try s.take(category: "a", key: "k", at: t0)
        #expect(a.allowed && a.degraded && a.reason == .backendAllow)
        let d = try s.take(category: "d", key: "k", at: t0)
        #expect(!d.allowed && d.degraded && d.reason == .backendDeny && d.retryAfter >= 1)
        #expect(s.degraded)
        let st = try s.bruteForce.recordFailure(key: "ip", at: t0)
        #expect(st.degraded && st.failures == 1)
    }

    @Test func silentServerCostsOneTimeoutThenTheBreakerDecides() throws {
        let (fd, port) = silentServer()
        defer { close(fd) }
        let s = try service(#"{"outage_retry_ms": 60000, "categories": {"c": {"capacity": 2, "period_seconds": 60}}}"#,
                            redis: #"{"port": \#(port), "command_timeout_ms": 100}"#)
        for _ in 0..<5 {
            let d = try s.take(category: "c", key: "k", at: t0)
            #expect(d.degraded)
        }
        #expect(s.degraded)
    }

    @Test func bruteForceIsClusterWide() throws {
        guard let redisCfg = redisSection() else { return }
        let hook = RecordingAuditHook()
        let a = try service(#"{"brute_force": {"max_failures": 3, "window_seconds": 60, "block_seconds": 120}}"#, redis: redisCfg, audit: hook)
        let b = try service(#"{"brute_force": {"max_failures": 3, "window_seconds": 60, "block_seconds": 120}}"#, redis: redisCfg)
        let ip = uniqueKey("ip")
        #expect(try a.bruteForce.recordFailure(key: ip, at: t0).failures == 1)
        #expect(try b.bruteForce.recordFailure(key: ip, at: t0 + 1).failures == 2)
        let st = try a.bruteForce.recordFailure(key: ip, at: t0 + 2)
        #expect(st.blocked && st.newlyBlocked && st.blockedUntil == t0 + 122 && !st.degraded)
        #expect(hook.events == ["authentication/blocked/\(ip)"])
        #expect(try b.bruteForce.check(key: ip, at: t0 + 100).blocked)
        #expect(try !b.bruteForce.check(key: ip, at: t0 + 122).blocked)
        // Sliding window: failures 61 s apart never accumulate.
        let other = uniqueKey("slow")
        for k in 0..<6 { #expect(try !a.bruteForce.recordFailure(key: other, at: t0 + Int64(k) * 31).blocked) }
        // Success clears, reset lifts.
        let u = uniqueKey("user")
        _ = try a.bruteForce.recordFailure(key: u, at: t0)
        _ = try a.bruteForce.recordFailure(key: u, at: t0)
        #expect(try b.bruteForce.recordSuccess(key: u, at: t0).failures == 0)
        #expect(try a.bruteForce.check(key: u, at: t0).failures == 0)
        for _ in 0..<3 { _ = try a.bruteForce.recordFailure(key: u, at: t0) }
        #expect(try b.bruteForce.check(key: u, at: t0).blocked)
        try b.bruteForce.reset(key: u)
        #expect(try !a.bruteForce.check(key: u, at: t0).blocked)
    }
}

@Suite struct RESPEncoderTests {
    @Test func encodesLikeRedisExpects() {
        var e = RESPEncoder(count: 3)
        e.bulk(Array("SET".utf8))
        e.bulk(Array("k".utf8), "é".utf8, UInt8(ascii: "}"))
        e.bulk(int: -1_234_567_890_123)
        #expect(String(decoding: e.bytes, as: UTF8.self) == "*3\r\n$3\r\nSET\r\n$4\r\nké}\r\n$14\r\n-1234567890123\r\n")
        var z = RESPEncoder(count: 1)
        z.bulk(int: 0)
        #expect(String(decoding: z.bytes, as: UTF8.self) == "*1\r\n$1\r\n0\r\n")
        #expect(String(decoding: RESPEncoder.arguments([[], Array("ab".utf8)]), as: UTF8.self) == "$0\r\n\r\n$2\r\nab\r\n")
        var m = RESPEncoder(count: 1)
        m.bulk(int: Int64.min)
        #expect(String(decoding: m.bytes, as: UTF8.self) == "*1\r\n$20\r\n-9223372036854775808\r\n")
    }

    @Test func preEncodedCommandsGoThroughThePool() throws {
        guard let redisCfg = redisSection() else { return }
        let pool = try Runtime.open(config: #"{"redis": \#(redisCfg)}"#).requireRedis()
        let key = uniqueKey("resp")
        let r = try pool.withConnection { (c) throws(BitsecError) -> RedisReply in
            var set = RESPEncoder(count: 3)
            set.bulk(Array("SET".utf8)); set.bulk(Array(key.utf8)); set.bulk(int: 42)
            #expect(try c.command(resp: set.bytes) == .status("OK"))
            var get = RESPEncoder(count: 2)
            get.bulk(Array("GET".utf8)); get.bulk(Array(key.utf8))
            return try c.command(resp: get.bytes)
        }
        #expect(r == .string(Array("42".utf8)))
        #expect(try pool.command("DEL", key) == .integer(1))
        // A silent server: the same timeout as command(_:), and the connection is discarded.
        let (fd, port) = silentServer()
        defer { close(fd) }
        let silent = try Runtime.open(config: #"{"redis": {"port": \#(port), "command_timeout_ms": 100}}"#).requireRedis()
        expectError(.backendUnavailable, "no reply within 100 ms") {
            _ = try silent.withConnection { (c) throws(BitsecError) -> RedisReply in try c.command(resp: Array("*1\r\n$4\r\nPING\r\n".utf8)) }
        }
        #expect(silent.openConnections == 0)
    }
}
