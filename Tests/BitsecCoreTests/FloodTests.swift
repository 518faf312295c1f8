import Testing
import Dispatch
import BitsecCore

// Floods of well-formed keys against every bounded in-process table keyed by client input.
// Each pushes a table of 1024 entries far past its bound (tens of thousands of distinct
// keys, part of them chosen to share one shard under the table's former unkeyed FNV-1a
// placement, the targeted attack), then measures for a blocked key that it stays blocked
// (false allows: must be 0) and for fresh legitimate keys how many are refused (false
// blocks: printed; 0 whenever the flood's entries are evictable by the documented rule).

private let t0: Int64 = 1_800_000_000
private let bound = 1024

/// The shard the tables used before their placement was keyed: FNV-1a over the UTF-8
/// bytes, folded, 64 shards. Anyone could compute it.
private func oldShard(_ key: String) -> Int {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in key.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
    return Int(truncatingIfNeeded: (h ^ (h >> 32)) & 63)
}

/// `count` client addresses that all fell in `shard` under the old placement.
private func collidingAddresses(shard: Int, count: Int, tag: UInt32) -> [String] {
    var out: [String] = []
    out.reserveCapacity(count)
    var i: UInt32 = 0
    while out.count < count {
        let k = "10.\(tag).\(i >> 8 & 0xff).\(i & 0xff)/\(i >> 16)"
        if oldShard(k) == shard { out.append(k) }
        i &+= 1
    }
    return out
}

/// `count` distinct addresses spread anywhere.
private func spreadAddresses(count: Int, tag: UInt32) -> [String] {
    (0..<count).map { "172.\(tag).\($0 >> 8 & 0xff).\($0 & 0xff)/\($0 >> 16)" }
}

private func report(_ table: String, _ what: String, _ bad: Int, _ of: Int) {
    print("flood \(table): \(what) \(bad)/\(of) = \(Double(bad) / Double(max(1, of)))")
}

@Suite struct FloodTests {
    private func rateLimits(_ rt: Runtime) throws -> RateLimitService { try rt.require(rt.rateLimits) }

    private func runtime() throws -> Runtime {
        try Runtime.open(config: #"""
            {"rate_limits": {"store": "local", "max_keys": \#(bound),
                             "categories": {"api": {"capacity": 10, "period_seconds": 60}}}}
            """#)
    }

    @Test func rateLimitBucketsUnderAFlood() throws {
        let rt = try runtime()
        let s = try rateLimits(rt)
        let victim = "203.0.113.7"
        for _ in 0..<10 { #expect(try s.take(category: "api", key: victim, at: t0).allowed) }
        #expect(try !s.take(category: "api", key: victim, at: t0).allowed)
        let target = oldShard(victim)
        let flood = collidingAddresses(shard: target, count: 20_000, tag: 1) + spreadAddresses(count: 40_000, tag: 1)
        var falseAllows = 0, checks = 0
        for (n, k) in flood.enumerated() {
            _ = try s.take(category: "api", key: k, at: t0)
            if n % 500 == 0 {
                checks += 1
                if try s.take(category: "api", key: victim, at: t0).allowed { falseAllows += 1 }
            }
        }
        // Fresh clients, half of them in the shard the flood aimed at under the old placement.
        let fresh = collidingAddresses(shard: target, count: 500, tag: 2) + spreadAddresses(count: 500, tag: 2)
        var falseBlocks = 0
        for k in fresh {
            let d = try s.take(category: "api", key: k, at: t0)
            if !d.allowed { falseBlocks += 1; #expect(d.reason == .keyTableFull) }
        }
        if try s.take(category: "api", key: victim, at: t0).allowed { falseAllows += 1 }
        report("rate_limit", "false allows of the limited key", falseAllows, checks + 1)
        report("rate_limit", "false blocks of fresh keys (flood buckets 9/10 full: evictable)", falseBlocks, fresh.count)
        #expect(falseAllows == 0)
        #expect(falseBlocks == 0)
        let stats = try #require(s.boundedTables.first { $0.name == "rate_limit:api" })
        #expect(stats.entryCount <= bound && stats.capacity == bound)
        // The count is exact: resetting every key held leaves nothing.
        for k in flood + fresh + [victim] { try s.reset(category: "api", key: k) }
        #expect(stats.entryCount == 0)
        #expect(stats.evictionCount > 0 && stats.refusalCount == 0)
        #expect(rt.metricsText().contains("bitsec_table_evictions_total{table=\"rate_limit:api\"} \(stats.evictionCount)\n"))
    }

    @Test func concurrentFloodKeepsTheBoundAndAnExactCount() throws {
        let rt = try runtime()
        let s = try rateLimits(rt)
        let keys = (0..<4).map { spreadAddresses(count: 15_000, tag: 20 + UInt32($0)) }
        DispatchQueue.concurrentPerform(iterations: 4) { t in
            for k in keys[t] { _ = try? s.take(category: "api", key: k, at: t0) }
        }
        let stats = try #require(s.boundedTables.first { $0.name == "rate_limit:api" })
        #expect(stats.entryCount <= bound)
        for list in keys { for k in list { try s.reset(category: "api", key: k) } }
        #expect(stats.entryCount == 0)
    }

    @Test func rateLimitTableFullOfDrainedBucketsFailsClosed() throws {
        let rt = try runtime()
        let s = try rateLimits(rt)
        let victim = "203.0.113.8"
        for _ in 0..<10 { _ = try s.take(category: "api", key: victim, at: t0) }
        // Every flood key drains 6 of 10 tokens: below half full, so never evicted.
        let flood = collidingAddresses(shard: oldShard(victim), count: 2_000, tag: 3) + spreadAddresses(count: 8_000, tag: 3)
        for k in flood { _ = try s.take(category: "api", key: k, cost: 6, at: t0) }
        #expect(try !s.take(category: "api", key: victim, at: t0).allowed)
        var refused = 0
        for k in spreadAddresses(count: 200, tag: 4) {
            let d = try s.take(category: "api", key: k, at: t0)
            if !d.allowed { refused += 1; #expect(d.reason == .keyTableFull && d.retryAfter >= 1) }
        }
        report("rate_limit", "fresh keys refused while the table is full of drained buckets (fail closed)", refused, 200)
        let stats = try #require(s.boundedTables.first { $0.name == "rate_limit:api" })
        #expect(refused > 0 && stats.refusalCount >= UInt64(refused))
        #expect(stats.entryCount <= bound)
        #expect(rt.metricsText().contains("bitsec_table_full_refusals_total{table=\"rate_limit:api\"} \(stats.refusalCount)\n"))
        // 30 s later the flood's buckets are half full again: evictable, fresh keys get in.
        var later = 0
        for k in spreadAddresses(count: 200, tag: 5) where try !s.take(category: "api", key: k, at: t0 + 30).allowed { later += 1 }
        report("rate_limit", "false blocks of fresh keys once the flood's buckets refilled", later, 200)
        #expect(later == 0)
    }

    @Test func bruteForceWindowUnderAFlood() throws {
        let rt = try runtime()
        let bf = try rateLimits(rt).bruteForce
        let victim = "198.51.100.9"
        let target = oldShard(victim)
        // The flood first: one failure each from 50k addresses, a third aimed at the victim's
        // old shard. The victim's own failures must still block it after 5.
        let flood = collidingAddresses(shard: target, count: 16_000, tag: 6) + spreadAddresses(count: 34_000, tag: 6)
        for k in flood { _ = try bf.recordFailure(key: k, at: t0) }
        var last = FailureStatus(blocked: false, failures: 0, remainingAttempts: 0, blockedUntil: 0, retryAfter: 0)
        for i in 1...5 { last = try bf.recordFailure(key: victim, at: t0 + Int64(i)) }
        #expect(last.blocked && last.newlyBlocked && !last.tableFull)
        // More flood after the block: the block is never evicted.
        var falseAllows = 0, checks = 0
        for (n, k) in (collidingAddresses(shard: target, count: 10_000, tag: 7) + spreadAddresses(count: 40_000, tag: 7)).enumerated() {
            _ = try bf.recordFailure(key: k, at: t0 + 10)
            if n % 500 == 0 {
                checks += 1
                if try !bf.check(key: victim, at: t0 + 10).blocked { falseAllows += 1 }
            }
        }
        if try !bf.check(key: victim, at: t0 + 20).blocked { falseAllows += 1 }
        var falseBlocks = 0
        for k in collidingAddresses(shard: target, count: 500, tag: 8) + spreadAddresses(count: 500, tag: 8) {
            let st = try bf.recordFailure(key: k, at: t0 + 20)
            if st.blocked || st.tableFull { falseBlocks += 1 }
        }
        report("failure_window", "false allows of the blocked key", falseAllows, checks + 1)
        report("failure_window", "false blocks of fresh keys (flood windows with 1 failure: evictable)", falseBlocks, 1000)
        #expect(falseAllows == 0)
        #expect(falseBlocks == 0)
        #expect(bf.trackedKeys <= bound && bf.tableStats.entryCount == bf.trackedKeys)
        #expect(bf.tableStats.evictionCount > 0)
        #expect(rt.metricsText().contains("bitsec_table_evictions_total{table=\"failure_window:login\"} \(bf.tableStats.evictionCount)\n"))
    }

    @Test func bruteForceTableFullOfBlocksFailsClosed() throws {
        let rt = try runtime()
        let bf = try rateLimits(rt).bruteForce
        let victim = "198.51.100.10"
        for i in 1...5 { _ = try bf.recordFailure(key: victim, at: t0 + Int64(i)) }
        #expect(try bf.check(key: victim, at: t0 + 6).blocked)
        // 2000 blocked addresses: more blocks than the table holds; blocks are never evicted.
        for k in spreadAddresses(count: 2_000, tag: 9) {
            for i in 1...5 { _ = try bf.recordFailure(key: k, at: t0 + Int64(i)) }
        }
        #expect(try bf.check(key: victim, at: t0 + 10).blocked)
        let st = try bf.recordFailure(key: "192.0.2.1", at: t0 + 10)
        // Nothing evictable: the attempt is reported blocked and counted.
        #expect(st.blocked && st.tableFull && st.retryAfter >= 1)
        #expect(bf.tableStats.refusalCount > 0 && bf.tableStats.entryCount <= bound)
        #expect(rt.metricsText().contains("bitsec_table_full_refusals_total{table=\"failure_window:login\"} \(bf.tableStats.refusalCount)\n"))
    }

    @Test func totpReplayStepsUnderAFlood() {
        let g = InProcessReplayGuard(maxEntries: bound)
        let now: Int64 = 5_000_000
        #expect(g.accept("victim", step: 100, ttlSeconds: 90, nowMs: now))
        var falseAllows = 0, freshRefused = 0
        for (n, u) in spreadAddresses(count: 50_000, tag: 10).enumerated() {
            _ = g.accept(u, step: 1, ttlSeconds: 90, nowMs: now)
            if n % 500 == 0, g.accept("victim", step: 100, ttlSeconds: 90, nowMs: now) { falseAllows += 1 }
        }
        for u in spreadAddresses(count: 200, tag: 11) where !g.accept(u, step: 1, ttlSeconds: 90, nowMs: now + 1000) { freshRefused += 1 }
        if g.accept("victim", step: 100, ttlSeconds: 90, nowMs: now + 60_000) { falseAllows += 1 }
        if g.accept("victim", step: 99, ttlSeconds: 90, nowMs: now + 60_000) { falseAllows += 1 }
        report("totp_replay", "replayed steps accepted", falseAllows, 103)
        report("totp_replay", "fresh users refused while every entry is live (fail closed)", freshRefused, 200)
        #expect(falseAllows == 0)
        #expect(g.trackedUsers <= bound && g.stats.entryCount <= bound)
        #expect(freshRefused == 200 && g.stats.refusalCount >= 200 && g.stats.evictionCount == 0)
        // Once the flood's steps expired, fresh users are served again.
        var later = 0
        for u in spreadAddresses(count: 200, tag: 12) where !g.accept(u, step: 1, ttlSeconds: 90, nowMs: now + 91_000) { later += 1 }
        report("totp_replay", "false blocks of fresh users after the flood expired", later, 200)
        #expect(later == 0)
    }

    @Test func backupCodeClaimsUnderAFlood() {
        let s = InProcessUseOnceSet(maxEntries: bound)
        let now: Int64 = 5_000_000
        let ttl: Int64 = 30 * 86_400
        #expect(s.claim("victim\ncode-hash", ttlSeconds: ttl, nowMs: now))
        var falseAllows = 0, freshRefused = 0
        for (n, id) in spreadAddresses(count: 50_000, tag: 13).enumerated() {
            _ = s.claim(id, ttlSeconds: ttl, nowMs: now)
            if n % 500 == 0, s.claim("victim\ncode-hash", ttlSeconds: ttl, nowMs: now) { falseAllows += 1 }
        }
        for id in spreadAddresses(count: 200, tag: 14) where !s.claim(id, ttlSeconds: ttl, nowMs: now + 1000) { freshRefused += 1 }
        if s.claim("victim\ncode-hash", ttlSeconds: ttl, nowMs: now + 86_400_000) { falseAllows += 1 }
        report("totp_backup_codes", "used codes accepted again", falseAllows, 102)
        report("totp_backup_codes", "fresh claims refused while every claim is live (fail closed)", freshRefused, 200)
        #expect(falseAllows == 0)
        #expect(s.trackedClaims <= bound && s.stats.entryCount <= bound)
        #expect(freshRefused == 200 && s.stats.refusalCount >= 200 && s.stats.evictionCount == 0)
        var later = 0
        for id in spreadAddresses(count: 200, tag: 15) where !s.claim(id, ttlSeconds: ttl, nowMs: now + (ttl + 1) * 1000) { later += 1 }
        report("totp_backup_codes", "false blocks of fresh claims after the flood expired", later, 200)
        #expect(later == 0)
    }

    /// One user who keeps regenerating and using backup codes makes a claim per code, kept 30
    /// days: before, once they filled the table every other user's valid code was refused
    /// (as used) for those 30 days. A claim only has to outlive the moment before its caller
    /// deletes the used code's hash: one younger than ten minutes is never evicted, older ones
    /// go oldest first when the table is full.
    @Test func oneUsersBackupCodeClaimsDoNotRefuseOthersForAMonth() {
        let ttl: Int64 = 30 * 86_400
        let s = InProcessUseOnceSet(maxEntries: bound, ttlSeconds: ttl)
        let now: Int64 = 7_000_000
        for i in 0..<bound { #expect(s.claim("attacker\nhash-\(i)", ttlSeconds: ttl, nowMs: now)) }
        // Within ten minutes the table is full of claims that must be kept: refused, counted.
        #expect(!s.claim("victim\nhash-a", ttlSeconds: ttl, nowMs: now + 1000))
        #expect(s.stats.evictionCount == 0)
        // Eleven minutes on, the victim's code is claimed (the oldest claim goes) ...
        let later = now + 660_000
        #expect(s.claim("victim\nhash-a", ttlSeconds: ttl, nowMs: later))
        #expect(s.stats.evictionCount == 1 && s.trackedClaims <= bound)
        // ... and a claim is still single use, and young claims are never evicted: the
        // attacker's next flood takes the old claims' room, then is refused.
        #expect(!s.claim("victim\nhash-a", ttlSeconds: ttl, nowMs: later + 1))
        var refused = 0
        for i in 0..<(2 * bound) where !s.claim("attacker\nnew-\(i)", ttlSeconds: ttl, nowMs: later + 2) { refused += 1 }
        #expect(refused >= bound, "\(refused)")
        #expect(!s.claim("victim\nhash-a", ttlSeconds: ttl, nowMs: later + 3), "a young claim was evicted")
    }

    @Test func verifiedTokenCacheUnderAFlood() throws {
        let cache = VerifiedTokenCache(capacity: bound)
        func claims(_ i: Int) throws -> VerifiedClaims {
            try #require(VerifiedClaims(payload: Array("{\"sub\":\"u\(i)\"}".utf8)))
        }
        let tokens = (0..<50_000).map { Array("eyJhbGciOiJIUzI1NiJ9.flood-\($0).sig".utf8) }
        var kept: [VerifiedClaims] = []
        for (i, t) in tokens.enumerated() {
            let c = try claims(i)
            kept.append(c)
            cache.insertVerified(t, claims: c, generation: 1)
        }
        #expect(cache.count <= bound && cache.stats.entryCount <= bound)
        #expect(cache.stats.evictionCount == UInt64(50_000 - cache.count))
        // A cache can only miss: no token ever answers with another token's claims.
        var wrong = 0, hits = 0
        for (i, t) in tokens.enumerated() {
            guard let got = cache.cachedClaims(t, generation: 1) else { continue }
            hits += 1
            if got !== kept[i] { wrong += 1 }
        }
        #expect(cache.cachedClaims(Array("never.inserted.token".utf8), generation: 1) == nil)
        report("token_cache", "lookups answered with another token's claims", wrong, hits)
        #expect(wrong == 0 && hits == cache.count)
    }
}
