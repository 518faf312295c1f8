// Revocation by jti, session and subject; bounded tables that widen instead of failing or
// forgetting; Redis keys of one subject in one slot, one round trip per verification.
import Testing
import Dispatch
import Synchronization
import BitsecCore

private let secret = "0123456789abcdef0123456789abcdef"

private func service(maxEntries: Int = 100_000, maxSessions: Int = 100_000, maxSubjects: Int = 100_000,
                     redis: RedisPool? = nil) throws -> TokenService {
    let json = #"{"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "\#(secret)"}}], "issuer": "iss", "audience": "aud", "cache_size": 0, "revocation": {"max_entries": \#(maxEntries), "max_sessions": \#(maxSessions), "max_subjects": \#(maxSubjects)}}"#
    let ctx = CapabilityContext(config: ConfigContext(allowInlineSecrets: true), redis: redis, audit: nil)
    return try TokenService.read(try ConfigObject(try JSONReader.parse(json), path: "tokens"), context: ctx)
}

/// The tokens section of a runtime whose features are all in `kind` (through the
/// configuration: `store.default`). Nil when the test run has no Redis (recorded).
private func service(_ kind: TestStore, maxEntries: Int = 100_000, maxSessions: Int = 100_000, maxSubjects: Int = 100_000) throws -> TokenService? {
    let tokens = #""allow_inline_secrets": true, "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "\#(secret)"}}], "issuer": "iss", "audience": "aud", "cache_size": 0, "revocation": {"max_entries": \#(maxEntries), "max_sessions": \#(maxSessions), "max_subjects": \#(maxSubjects)}}"#
    guard let rt = try TestStores.runtime(kind, tokens) else { return nil }
    let t = try rt.require(rt.tokens)
    #expect(t.revocations.backendName == kind.rawValue)
    return t
}

private struct Pair { let access: String; let refresh: String; let session: String }

private func field(_ o: JSONObject, _ k: String) -> String {
    if case .string(let s)? = o[k] { return s }
    return ""
}

private func pair(_ t: TokenService, _ claims: String, at: Int64) throws -> Pair {
    let out = try Array(claims.utf8).withRawBytes { (raw) throws(BitsecError) -> [UInt8] in try t.issuePair(claims: raw, kid: nil, at: at) }
    guard case .object(let o) = try JSONReader.parse(out) else { throw BitsecError.invalid("not an object") }
    return Pair(access: field(o, "access_token"), refresh: field(o, "refresh_token"), session: field(o, "session_id"))
}

private func refresh(_ t: TokenService, _ token: String, at: Int64) throws -> (TokenReason, Pair?) {
    let r = try Array(token.utf8).withRawBytes { (raw) throws(BitsecError) -> TokenService.Refresh in try t.refresh(raw, at: at) }
    guard let p = r.pair else { return (r.reason, nil) }
    guard case .object(let o) = try JSONReader.parse(p) else { throw BitsecError.invalid("not an object") }
    return (r.reason, Pair(access: field(o, "access_token"), refresh: field(o, "refresh_token"), session: field(o, "session_id")))
}

private func revokeToken(_ t: TokenService, _ token: String, at: Int64) throws -> (TokenReason, Bool) {
    try Array(token.utf8).withRawBytes { (raw) throws(BitsecError) -> (reason: TokenReason, newly: Bool) in try t.revoke(token: raw, at: at) }
}

private func sign(_ t: TokenService, _ claims: String) throws -> String {
    let out = try Array(claims.utf8).withRawBytes { (raw) throws(BitsecError) -> [UInt8] in try t.sign(claims: raw, kid: nil) }
    return String(decoding: out, as: UTF8.self)
}

private let T0: Int64 = 1_900_000_000

/// The checks both backends must pass: session and subject revocation with their epochs.
private func sessionAndSubject(_ t: TokenService, sub: String) throws {
    let a = try pair(t, #"{"sub":"\#(sub)"}"#, at: T0)
    let b = try pair(t, #"{"sub":"\#(sub)"}"#, at: T0)
    let other = try pair(t, #"{"sub":"\#(sub)-other"}"#, at: T0)
    #expect(try t.verify(a.access, at: T0 + 1).isValid)
    // Session: both tokens of the session, not the other session of the same subject.
    #expect(try t.revokeSession(a.session, subject: sub, at: T0 + 10))
    #expect(try !t.revokeSession(a.session, subject: sub, at: T0 + 10))
    #expect(try t.verify(a.access, at: T0 + 11).reason == .revoked)
    #expect(try t.verify(a.refresh, at: T0 + 11, expect: .refresh).reason == .revoked)
    #expect(try t.verify(b.access, at: T0 + 11).isValid)
    // A token of the session issued in the epoch's second is revoked (equality revokes),
    // one issued a second later is not.
    let same = try pair(t, #"{"sub":"\#(sub)","session_id":"\#(a.session)"}"#, at: T0 + 10)
    #expect(try t.verify(same.access, at: T0 + 12).reason == .revoked)
    let later = try pair(t, #"{"sub":"\#(sub)","session_id":"\#(a.session)"}"#, at: T0 + 11)
    #expect(try t.verify(later.access, at: T0 + 12).isValid)
    // Subject: every token of the subject issued at or before the epoch; other subjects not.
    #expect(try t.revokeSubject(sub, notBefore: T0 + 20, at: T0 + 20))
    #expect(try t.verify(b.access, at: T0 + 21).reason == .revoked)
    #expect(try t.verify(later.access, at: T0 + 21).reason == .revoked)
    #expect(try t.verify(other.access, at: T0 + 21).isValid)
    let fresh = try pair(t, #"{"sub":"\#(sub)"}"#, at: T0 + 21)
    #expect(try t.verify(fresh.access, at: T0 + 22).isValid)
    // A subject's epoch never moves back.
    #expect(try !t.revokeSubject(sub, notBefore: T0 + 5, at: T0 + 22))
    #expect(try t.verify(b.access, at: T0 + 23).reason == .revoked)
    // A revoked token: by text, with its subject.
    #expect(try revokeToken(t, fresh.access, at: T0 + 22) == (.valid, true))
    #expect(try revokeToken(t, fresh.access, at: T0 + 22) == (.revoked, false))
    #expect(try t.verify(fresh.access, at: T0 + 23).reason == .revoked)
    #expect(try t.verify(fresh.refresh, at: T0 + 23, expect: .refresh).isValid)
}

@Suite struct RevocationTests {
    @Test(arguments: TestStores.kinds) func sessionAndSubjectEpochs(kind: TestStore) throws {
        guard let t = try service(kind) else { return }
        try sessionAndSubject(t, sub: "u1")
        try sessionAndSubject(t, sub: "u{1}")
    }

    /// A token without `iat` cannot prove it was issued after an epoch: every epoch that
    /// concerns it (session, subject, global) covers it. A bare `jti` lookup, which has no
    /// token, is not turned into "revoked" by an epoch, and a bare revocation after a global
    /// epoch is still recorded.
    @Test(arguments: TestStores.kinds) func aTokenWithoutIatIsCoveredByEveryEpoch(kind: TestStore) throws {
        guard let t = try service(kind) else { return }
        let r = t.revocations
        let sub = "noiat\(Clock.nowMicros())"
        let bare = TokenIdentity(jti: "j-\(sub)", sub: sub, sid: "s-\(sub)", iat: nil)
        #expect(try !r.isRevoked(bare, now: T0))
        #expect(try r.revokeSession(sub: sub, tenant: nil, sid: "s-\(sub)", epoch: T0, until: T0 + 1000, now: T0))
        #expect(try r.isRevoked(bare, now: T0 + 1))
        #expect(try !r.isRevoked(TokenIdentity(jti: "j2-\(sub)", sub: sub, sid: "other", iat: nil), now: T0 + 1))
        #expect(try r.revokeSubject(sub: sub, tenant: nil, notBefore: T0, until: T0 + 1000, now: T0))
        #expect(try r.isRevoked(TokenIdentity(jti: "j3-\(sub)", sub: sub, sid: "other", iat: nil), now: T0 + 1))
        #expect(try r.isRevoked(TokenIdentity(sub: sub), now: T0 + 1))
        // Issued after the epochs: not covered.
        #expect(try !r.isRevoked(TokenIdentity(jti: "j4-\(sub)", sub: sub, sid: "s-\(sub)", iat: T0 + 1), now: T0 + 2))
        // The bare jti lookup knows no token: an epoch does not make every jti revoked.
        #expect(try !r.isRevoked(jti: "j-\(sub)", now: T0 + 1))
        #expect(try !t.isRevoked(jti: "never-revoked-\(sub)", at: T0 + 1))
    }

    /// Epochs are whole seconds and `iat <= epoch` revokes: a fractional `iat` counts as its
    /// whole second rounded down, so a session or subject revocation made later in the second
    /// a token was issued covers it. (It was rounded up, as for the "issued in the future"
    /// check, and such a token survived a revocation made just after it was issued.)
    @Test(arguments: TestStores.kinds) func aFractionalIatIsCoveredByAnEpochOfItsSecond(kind: TestStore) throws {
        guard let t = try service(kind) else { return }
        let sub = "frac\(Clock.nowMicros())"
        func token(_ sid: String, iat: String) throws -> String {
            try sign(t, #"{"iss":"iss","aud":"aud","exp":\#(T0 + 3600),"sub":"\#(sub)","session_id":"\#(sid)","iat":\#(iat),"jti":"\#(sid)-\#(iat)"}"#)
        }
        // Session: issued at T0+10.25, the session revoked in second T0+10 (at T0+10.75, say).
        let s1 = try token("s1", iat: "1900000010.25")
        let s1Int = try token("s1", iat: "1900000010")
        let s1Next = try token("s1", iat: "1900000011.25")
        // Just below T0+11 (the nearest double is 0.24 µs below it): still second T0+10,
        // although its instant rounded up for the future check is in second T0+11.
        let s2 = try token("s2", iat: "1900000010.9999998")
        #expect(try t.verify(s1, at: T0 + 12).isValid)
        #expect(try t.revokeSession("s1", subject: sub, at: T0 + 10))
        #expect(try t.revokeSession("s2", subject: sub, at: T0 + 10))
        #expect(try t.verify(s1Int, at: T0 + 12).reason == .revoked)
        #expect(try t.verify(s1, at: T0 + 12).reason == .revoked)
        #expect(try t.verify(s2, at: T0 + 12).reason == .revoked)
        #expect(try t.verify(s1Next, at: T0 + 12).isValid)
        // Subject (an account disabled at T0+20.75 with not-before T0+20).
        let s3 = try token("s3", iat: "1900000020.5")
        let s3Next = try token("s3", iat: "1900000021.5")
        #expect(try t.verify(s3, at: T0 + 22).isValid)
        #expect(try t.revokeSubject(sub, notBefore: T0 + 20, at: T0 + 20))
        #expect(try t.verify(s3, at: T0 + 22).reason == .revoked)
        #expect(try t.verify(s3Next, at: T0 + 22).isValid)
    }

    /// Past the jti bound a bare revocation moves the global epoch; a token without `iat`
    /// is then refused, while bare lookups of other jtis stay false and later bare
    /// revocations are still recorded (each moves the epoch again).
    @Test(arguments: TestStores.boundedKinds) func theGlobalEpochCoversTokensWithoutIat(kind: TestStore) throws {
        guard let t = try service(kind, maxEntries: 1) else { return }
        #expect(try t.revoke(jti: "fill", exp: T0 + 1000, at: T0))
        #expect(try t.revoke(jti: "past-bound", exp: T0 + 1000, at: T0 + 1))
        let noIat = TokenIdentity(jti: "other", sub: "u", iat: nil)
        #expect(try t.revocations.isRevoked(noIat, now: T0 + 2))
        #expect(try !t.revocations.isRevoked(TokenIdentity(jti: "other", sub: "u", iat: T0 + 2), now: T0 + 3))
        #expect(try !t.isRevoked(jti: "other", at: T0 + 2))
        #expect(try t.revoke(jti: "later", exp: T0 + 1000, at: T0 + 5))
    }

    @Test(arguments: TestStores.kinds) func aStoreHoldsNoneOnlyUntilTheFirstRevocationOfAnyKind(kind: TestStore) throws {
        // Verification skips the lookups while nothing is revoked (`holdsNone`): each kind of
        // revocation ends that at once, and Redis (shared with other hosts) never claims it.
        let memory = !TestStore.redisModes.contains(kind)
        for revoke in 0..<(memory ? 4 : 3) {  // (the global epoch: in memory only)
            guard let t = try service(kind, maxEntries: 10) else { return }
            let id = TokenIdentity(jti: "j\(revoke)", sub: "u\(revoke)", sid: "s\(revoke)", iat: T0)
            #expect(t.revocations.holdsNone() == memory)
            #expect(try !t.revocations.isRevoked(id, now: T0 + 1))
            switch revoke {
            case 0: #expect(try t.revoke(jti: "j0", exp: T0 + 1000, at: T0 + 1))
            case 1: #expect(try t.revokeSession("s1", subject: "u1", at: T0 + 1))
            case 2: #expect(try t.revokeSubject("u2", notBefore: T0 + 1, at: T0 + 1))
            default: _ = try t.revocations.revoke(TokenIdentity(jti: nil, sub: nil, sid: nil, iat: T0), until: T0 + 1000,
                                                    now: T0 + 1)
            }
            #expect(!t.revocations.holdsNone())
            #expect(try t.revocations.isRevoked(id, now: T0 + 2), "revocation kind \(revoke) in \(kind)")
        }
    }

    @Test(arguments: TestStores.boundedKinds) func floodOfSingleRevocationsWidensInsteadOfFailing(kind: TestStore) throws {
        guard let t = try service(kind, maxEntries: 64) else { return }
        let store = try #require(t.revocations as? MemoryRevocationStore)
        var pairs: [Pair] = []
        for i in 0..<1000 { pairs.append(try pair(t, #"{"sub":"user\#(i % 50)"}"#, at: T0)) }
        let untouched = try pair(t, #"{"sub":"someone-else"}"#, at: T0)
        for p in pairs { #expect(try revokeToken(t, p.access, at: T0 + 1).0 == .valid) }
        // Bare jtis past the bound: no error either.
        for i in 0..<200 { _ = try t.revoke(jti: "bare-\(i)", exp: T0 + 100, at: T0 + 1) }
        #expect(store.count <= 64)
        #expect(store.sessionCount <= 100_000)
        for p in pairs { #expect(try t.verify(p.access, at: T0 + 2).reason == .revoked) }
        // The bare jtis past the bound revoked everything issued up to then (fail closed).
        #expect(try t.verify(untouched.access, at: T0 + 2).reason == .revoked)
        let after = try pair(t, #"{"sub":"someone-else"}"#, at: T0 + 2)
        #expect(try t.verify(after.access, at: T0 + 3).isValid)
    }

    @Test(arguments: TestStores.boundedKinds) func escalationStopsAtTheSession(kind: TestStore) throws {
        guard let t = try service(kind, maxEntries: 4) else { return }
        var pairs: [Pair] = []
        for _ in 0..<20 { pairs.append(try pair(t, #"{"sub":"u"}"#, at: T0)) }
        for p in pairs { #expect(try revokeToken(t, p.access, at: T0 + 1).0 == .valid) }
        for p in pairs { #expect(try t.verify(p.access, at: T0 + 2).reason == .revoked) }
        // The first four are single jtis: their refresh tokens still work; the others widened
        // to their session: wider than asked, never narrower.
        for p in pairs.prefix(4) { #expect(try t.verify(p.refresh, at: T0 + 2, expect: .refresh).isValid) }
        for p in pairs.dropFirst(4) { #expect(try t.verify(p.refresh, at: T0 + 2, expect: .refresh).reason == .revoked) }
        let other = try pair(t, #"{"sub":"u"}"#, at: T0)
        #expect(try t.verify(other.access, at: T0 + 2).isValid)
    }

    @Test(arguments: TestStores.boundedKinds) func refreshWithAFullTableStaysExactlyOnceAndFailsClosed(kind: TestStore) throws {
        guard let t = try service(kind, maxEntries: 2) else { return }
        // Fill the jti table.
        for i in 0..<2 { #expect(try t.revoke(jti: "fill-\(i)", exp: T0 + 10_000, at: T0)) }
        var p = try pair(t, #"{"sub":"u"}"#, at: T0)
        for k in 1...20 {
            let now = T0 + Int64(k) * 10
            let (reason, next) = try refresh(t, p.refresh, at: now)
            #expect(reason == .valid)
            let n = try #require(next)
            #expect(n.session == p.session)
            // The old refresh token is spent (exactly once: verified, not presented again,
            // since a replay would revoke the whole family), the new pair works.
            #expect(try t.verify(p.refresh, at: now, expect: .refresh).reason == .revoked)
            #expect(try t.verify(n.access, at: now).isValid)
            p = n
        }
        // A refresh in the very second its token was issued cannot be widened without
        // revoking the new pair too: it fails closed, and the session stops working.
        let now = T0 + 1000
        let (r1, p1) = try refresh(t, p.refresh, at: now)
        #expect(r1 == .valid)
        let q = try #require(p1)
        #expect(try refresh(t, q.refresh, at: now).0 == .revoked)
        #expect(try refresh(t, q.refresh, at: now + 5).0 == .revoked)
        #expect(try t.verify(q.access, at: now + 5).reason == .revoked)
    }

    @Test(arguments: TestStores.boundedKinds) func fullSessionAndSubjectTablesNeverForgetALiveRevocation(kind: TestStore) throws {
        guard let t = try service(kind, maxEntries: 1, maxSessions: 8, maxSubjects: 8) else { return }
        let store = try #require(t.revocations as? MemoryRevocationStore)
        var pairs: [Pair] = []
        for i in 0..<300 { pairs.append(try pair(t, #"{"sub":"user\#(i % 30)"}"#, at: T0)) }
        let bystander = try pair(t, #"{"sub":"bystander"}"#, at: T0 + 50)
        for (i, p) in pairs.enumerated() {
            _ = try t.revokeSession(p.session, subject: "user\(i % 30)", at: T0 + 100)
        }
        #expect(store.sessionCount <= 8 && store.subjectCount <= 8)
        for p in pairs {
            #expect(try t.verify(p.access, at: T0 + 101).reason == .revoked)
            #expect(try t.verify(p.refresh, at: T0 + 101, expect: .refresh).reason == .revoked)
        }
        // Past both bounds the last resort is every token issued up to the epoch.
        #expect(store.globalEpoch(now: T0 + 101) == T0 + 100)
        #expect(try t.verify(bystander.access, at: T0 + 101).reason == .revoked)
        #expect(try t.verify(try pair(t, #"{"sub":"bystander"}"#, at: T0 + 101).access, at: T0 + 102).isValid)
        // Expired entries make room again: after every token of then is expired, a new
        // session revocation is recorded as a session.
        let late = T0 + 100 + 604_800 + 31
        let p = try pair(t, #"{"sub":"late"}"#, at: late)
        #expect(try t.revokeSession(p.session, subject: "late", at: late + 1))
        #expect(store.sessionCount == 1 && store.globalEpoch(now: late + 1) == nil)
        #expect(try t.verify(p.access, at: late + 2).reason == .revoked)
        #expect(try t.verify(try pair(t, #"{"sub":"late"}"#, at: late).access, at: late + 2).isValid)
    }

    @Test(arguments: TestStores.boundedKinds) func tablesHoldUpUnderAFloodOfSessions(kind: TestStore) throws {
        // 200,000 session revocations against a bound of 1,000: bounded memory and time.
        guard let t = try service(kind, maxSessions: 1000, maxSubjects: 1000) else { return }
        let store = try #require(t.revocations as? MemoryRevocationStore)
        for i in 0..<200_000 { _ = try t.revokeSession("s\(i)", subject: "u\(i % 5000)", at: T0) }
        #expect(store.sessionCount <= 1000 && store.subjectCount <= 1000)
    }

    /// The revocation tables are bounded tables like the others: their counters are in the
    /// metrics, and a widened revocation shows as a refusal of the jti table.
    @Test(arguments: TestStores.boundedKinds) func revocationTablesAreInTheMetrics(kind: TestStore) throws {
        let tokens = #""allow_inline_secrets": true, "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "\#(secret)"}}], "issuer": "iss", "audience": "aud", "revocation": {"max_entries": 2}}"#
        guard let rt = try TestStores.runtime(kind, tokens) else { return }
        let t = try rt.require(rt.tokens)
        // Past the bound each bare jti moves the global epoch (one a second here): a revocation.
        for i in 0..<5 { #expect(try t.revoke(jti: "m\(i)", exp: T0 + 1000, at: T0 + Int64(i))) }
        let text = rt.metricsText()
        #expect(text.contains(#"bitsec_table_capacity{table="revocation_jti"} 2"#), "\(text)")
        #expect(text.contains(#"bitsec_table_entries{table="revocation_jti"} 2"#))
        #expect(text.contains(#"bitsec_table_full_refusals_total{table="revocation_jti"} 3"#))
        #expect(text.contains(#"bitsec_table_entries{table="revocation_global"} 1"#))
    }

    /// Of concurrent revocations of one token exactly one is `newly` (or widened): the
    /// refresh exchange relies on it. With room for the jti, and (bounded stores) with the
    /// jti table full, where the revocation widens to the session.
    @Test(arguments: TestStores.kinds) func concurrentRevokesOfOneTokenHaveOneWinner(kind: TestStore) throws {
        for full in kind == .redis ? [false] : [false, true] {
            guard let t = try service(kind, maxEntries: full ? 1 : 100_000) else { return }
            if full { #expect(try t.revoke(jti: "fill", exp: T0 + 100_000, at: T0)) }
            for round in 0..<20 {
                let p = try pair(t, #"{"sub":"race\#(round)"}"#, at: T0)
                let winners = Atomic<Int>(0)
                DispatchQueue.concurrentPerform(iterations: 8) { _ in
                    if let r = try? revokeToken(t, p.refresh, at: T0 + 1), r.1 { winners.add(1, ordering: .relaxed) }
                }
                #expect(winners.load(ordering: .relaxed) == 1, "\(kind) full=\(full) round \(round)")
                #expect(try t.verify(p.refresh, at: T0 + 2, expect: .refresh).reason == .revoked)
                #expect(try t.verify(p.access, at: T0 + 2).reason == (full ? .revoked : .valid), "\(kind) full=\(full)")
            }
        }
    }

    // MARK: - Redis

    private func redisService() throws -> (TokenService, RedisPool, String)? {
        guard let port = TestRedis.port else { return nil }
        let prefix = "revk\(Clock.nowMicros()):"
        let pool = RedisPool(config: RedisConfig(endpoint: .tcp(host: "127.0.0.1", port: port), commandTimeoutMs: 1000, keyPrefix: prefix))
        return (try service(maxEntries: 4, redis: pool), pool, prefix)
    }

    @Test func redisRefreshIsExactlyOnce() throws {
        guard let (t, _, _) = try redisService() else { return }
        let now = Clock.nowSeconds()
        var p = try pair(t, #"{"sub":"r"}"#, at: now)
        for _ in 0..<10 {
            let (reason, next) = try refresh(t, p.refresh, at: now)
            #expect(reason == .valid)
            // Spent: verified, not presented again (a replay revokes the whole family).
            #expect(try t.verify(p.refresh, at: now, expect: .refresh).reason == .revoked)
            p = try #require(next)
        }
    }

    /// The commands a named client sent after slow-log entry `after`: with
    /// slowlog-log-slower-than 0 every command is logged with its client's name, so other
    /// tests running on the same server do not count.
    private func commands(_ admin: RedisPool, client: String, after: Int64) throws -> [String] {
        let r = try admin.command("SLOWLOG", "GET", "100000")
        var out: [String] = []
        for e in r.array ?? [] {
            guard let f = e.array, f.count >= 6, let id = f[0].integer, id > after, f[5].text == client else { continue }
            out.append(f[3].array?.first?.text ?? "?")
        }
        return out.reversed()  // SLOWLOG GET lists the newest first
    }

    private func lastSlowlogID(_ admin: RedisPool) throws -> Int64 {
        try admin.command("SLOWLOG", "GET", "1").array?.first?.array?.first?.integer ?? -1
    }

    /// A revocation by the bare jti (the subject unknown to the caller) is honoured for a token
    /// that has a subject, and the bare lookup agrees with a revocation that knew the subject.
    @Test func redisBareJtiRevocationsAgreeWithSubjectKeyedOnes() throws {
        guard let port = TestRedis.port else { return }
        let pool = RedisPool(config: RedisConfig(endpoint: .tcp(host: "127.0.0.1", port: port), commandTimeoutMs: 1000,
                                                 keyPrefix: "revbare\(Clock.nowMicros()):"))
        let t = try service(redis: pool)
        let now = Clock.nowSeconds()
        let a = try pair(t, #"{"sub":"bare-user"}"#, at: now)
        let ca = try #require(try t.verify(a.access, at: now).claims)
        #expect(try t.revoke(jti: try #require(ca.jti), exp: try #require(ca.exp), at: now))
        #expect(try t.verify(a.access, at: now).reason == .revoked)
        let b = try pair(t, #"{"sub":"bare-user"}"#, at: now)
        let cb = try #require(try t.verify(b.access, at: now).claims)
        #expect(try !t.isRevoked(jti: try #require(cb.jti), at: now))
        #expect(try t.revoke(cb, at: now) == .newly)
        #expect(try t.isRevoked(jti: try #require(cb.jti), at: now))
        #expect(try t.verify(b.access, at: now).reason == .revoked)
    }

    @Test func redisVerificationIsOneRoundTripInOneSlot() throws {
        guard let port = TestRedis.port else { return }
        let prefix = "revk\(Clock.nowMicros()):"
        // One connection, named, so the slow log tells its commands apart.
        let pool = RedisPool(config: RedisConfig(endpoint: .tcp(host: "127.0.0.1", port: port), commandTimeoutMs: 1000, poolSize: 1, keyPrefix: prefix))
        let admin = RedisPool(config: RedisConfig(endpoint: .tcp(host: "127.0.0.1", port: port), commandTimeoutMs: 1000, poolSize: 1))
        let name = "revk\(Clock.nowMicros())"
        _ = try pool.command("CLIENT", "SETNAME", name)
        _ = try admin.command("CONFIG", "SET", "slowlog-max-len", "100000")
        _ = try admin.command("CONFIG", "SET", "slowlog-log-slower-than", "0")
        defer { _ = try? admin.command("CONFIG", "SET", "slowlog-log-slower-than", "10000") }
        let t = try service(redis: pool)
        let store = try #require(t.revocations as? RedisRevocationStore)
        let now = Clock.nowSeconds()
        let p = try pair(t, #"{"sub":"slot-user"}"#, at: now)
        let access = try t.verify(p.access, at: now)
        let c = try #require(access.claims)
        let before = try lastSlowlogID(admin)
        // Per verification: the subject's MGET and the bare-jti EXISTS, pipelined on one
        // connection (RedisConnection.pipeline writes both before reading either reply).
        for _ in 0..<10 { #expect(try t.verify(p.access, at: now).isValid) }
        #expect(try commands(admin, client: name, after: before) == Array([[String]](repeating: ["MGET", "EXISTS"], count: 10).joined()))
        // Revoked by session: the same two.
        #expect(try t.revokeSession(p.session, subject: "slot-user", at: now))
        let b2 = try lastSlowlogID(admin)
        #expect(try t.verify(p.access, at: now).reason == .revoked)
        #expect(try commands(admin, client: name, after: b2) == ["MGET", "EXISTS"])
        // Every key of the subject is in one slot.
        let keys = [store.jtiKey(jti: c.jti ?? "", sub: "slot-user"), store.sessionKey(sub: "slot-user", sid: p.session),
                    store.subjectKey(sub: "slot-user")]
        #expect(Set(keys.map(keySlot)).count == 1)
        // The session key lives as long as the longest token of the session can.
        let ttl = try pool.command([Array("TTL".utf8), keys[1]]).integer ?? 0
        #expect(ttl > 604_000 && ttl <= 604_830)
        // A subject with braces gets its own tag, not a prefix shared with another subject.
        #expect(store.subjectKey(sub: "a}b") != store.subjectKey(sub: "a"))
        #expect(keySlot(store.jtiKey(jti: "x", sub: "a}b")) == keySlot(store.subjectKey(sub: "a}b")))
        #expect(keySlot(Array("123456789".utf8)) == 0x31C3 % 16384)
    }
}

/// Redis Cluster's key slot (the Cluster specification: CRC16-XMODEM of the hash tag, the
/// text between the first `{` and the next `}` when not empty, else of the whole key, mod
/// 16384). `CLUSTER KEYSLOT` needs cluster mode on Redis 7.0, so the test computes it.
func keySlot(_ key: [UInt8]) -> Int {
    var part = key[...]
    if let open = key.firstIndex(of: UInt8(ascii: "{")),
       let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1 {
        part = key[(open + 1)..<close]
    }
    var crc: UInt16 = 0
    for b in part {
        crc ^= UInt16(b) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
    }
    return Int(crc) % 16384
}
