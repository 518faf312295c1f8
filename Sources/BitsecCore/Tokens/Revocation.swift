/// What the revocation checks read of a verified token: its `jti`, `sub`, `session_id`,
/// `iat` (whole seconds; a fractional `iat` rounded down, towards revoking) and tenant
/// (`tenant_id`, else `tenant`). A subject's revocation is its tenant's: revoking a token of
/// one tenant's `alice` that has no `jti` (and no session) never revokes another tenant's
/// `alice`. A revocation of the subject without a tenant (`bitsec_token_revoke_subject`)
/// covers it in every tenant.
public struct TokenIdentity: Sendable, Equatable {
    public var jti: String?
    public var sub: String?
    public var sid: String?
    public var iat: Int64?
    /// nil or empty: no tenant.
    public var tenant: String?

    public init(jti: String? = nil, sub: String? = nil, sid: String? = nil, iat: Int64? = nil, tenant: String? = nil) {
        self.jti = jti; self.sub = sub; self.sid = sid; self.iat = iat
        self.tenant = tenant?.isEmpty == true ? nil : tenant
    }

    /// The token's identity for the revocation checks. Its `iat` is the claim's whole second
    /// rounded down (`revocationIat`), not up as for the "issued in the future" check: an
    /// epoch recorded in the second a token with a fractional `iat` was issued covers it.
    init(_ c: VerifiedClaims) { self.init(jti: c.jti, sub: c.sub, sid: c.sessionId, iat: c.revocationIat, tenant: c.tenant) }
}

/// The outcome of revoking one token.
public enum RevokeOutcome: Sendable, Equatable {
    /// The `jti` was recorded.
    case newly
    /// The token was already revoked (its `jti`, its session, its subject or everything).
    case already
    /// The table of single `jti`s was full: the token's session (or subject, or every
    /// token issued up to its `iat`) was revoked instead, at the token's `iat`. Wider than
    /// asked, never narrower.
    case widened
}

/// Where revocations live. Three kinds:
/// - a single `jti`, until that token's `exp` plus the leeway;
/// - a session epoch: every token with that `sub` and `session_id` issued at or before the
///   epoch (`iat <= epoch`), until the longest lifetime of a token of that session is over;
/// - a subject epoch (not-before): every token with that `sub` issued at or before it.
/// `iat` has a granularity of one second: a token issued in the very second of an epoch is
/// revoked (equality revokes; a fractional `iat` counts as its whole second, rounded down; a
/// token without `iat` is revoked by any epoch that concerns it).
public protocol RevocationStore: Sendable {
    /// Revokes one token (its `jti` until `until`, or wider when there is no room). Of
    /// concurrent calls for one token exactly one gets `.newly` or `.widened`: the refresh
    /// exchange relies on it.
    func revoke(_ id: TokenIdentity, until: Int64, now: Int64) throws(BitsecError) -> RevokeOutcome
    /// Revokes the tokens of a session issued at or before `epoch`; true when this moved the
    /// epoch forward (false when an equal or later one was already recorded). `tenant`: the
    /// session's (where a full in-process table widens it: the subject in that tenant; nil:
    /// in every tenant).
    func revokeSession(sub: String, tenant: String?, sid: String, epoch: Int64, until: Int64, now: Int64) throws(BitsecError) -> Bool
    /// Revokes every token of `sub` issued at or before `notBefore` (of `tenant` only, or in
    /// every tenant when it is nil); true when this moved the subject's epoch forward.
    func revokeSubject(sub: String, tenant: String?, notBefore: Int64, until: Int64, now: Int64) throws(BitsecError) -> Bool
    /// Whether any revocation covers the token.
    func isRevoked(_ id: TokenIdentity, now: Int64) throws(BitsecError) -> Bool
    /// Whether a single `jti` is revoked (a token without `sub` in Redis; any token in process).
    func isRevoked(jti: String, now: Int64) throws(BitsecError) -> Bool
    /// True only when no revocation of any kind is held (no token can be covered): the
    /// verification of every token then skips the lookups. A shared store answers false.
    func holdsNone() -> Bool
    var backendName: String { get }
}

extension RevocationStore {
    public func holdsNone() -> Bool { false }
}

extension TokenIdentity {
    /// Whether an epoch covers this token: issued at or before it (no `iat`: covered).
    @inline(__always)
    func coveredBy(_ epoch: Int64) -> Bool {
        guard let iat else { return true }  // cannot prove it was issued after the epoch
        return iat <= epoch
    }
}

/// Revocations in memory: three bounded `StateTable`s (single `jti`s: `max_entries`,
/// sessions: `max_sessions`, subjects: `max_subjects`) and the global epoch (a table of one
/// entry), in this process (store `process`) or in the host's shared region (store `host`).
/// The tables place keys with a keyed hash, so an adversary cannot aim many keys at one
/// place, and each has a global bound. A live revocation is never evicted; expired ones are
/// idle and dropped as room is needed. When a table is full of live entries the revocation
/// widens instead of failing or forgetting: `jti` -> the token's session -> its subject ->
/// every token issued up to that instant (the global epoch, one entry, never full). Memory
/// is at most the three bounds.
///
/// Atomicity without a lock over everything: the revocation of one token runs with its
/// `jti`'s entry locked (and widening with the session's, then the subject's, then the
/// global entry locked, always in that order), so of concurrent revokes of one token
/// exactly one gets `.newly` or `.widened`. Epochs only move forward.
public final class MemoryRevocationStore: RevocationStore {
    /// A single `jti`'s revocation: until when (Unix seconds) it is kept.
    struct Until: Sendable, FixedLayoutValue {
        var until: Int64

        init(until: Int64) { self.until = until }

        static func storedSize(layout: Int) -> Int { 8 }

        init(loading p: UnsafeRawPointer, layout: Int) { until = p.loadUnaligned(fromByteOffset: 0, as: Int64.self) }

        func store(to p: UnsafeMutableRawPointer, layout: Int) { p.storeBytes(of: until, toByteOffset: 0, as: Int64.self) }
    }

    /// An epoch: tokens issued at or before `epoch` are revoked; kept until `until`.
    struct Epoch: Sendable, FixedLayoutValue {
        var epoch: Int64
        var until: Int64

        init(epoch: Int64, until: Int64) {
            self.epoch = epoch
            self.until = until
        }

        static func storedSize(layout: Int) -> Int { 16 }

        init(loading p: UnsafeRawPointer, layout: Int) {
            epoch = p.loadUnaligned(fromByteOffset: 0, as: Int64.self)
            until = p.loadUnaligned(fromByteOffset: 8, as: Int64.self)
        }

        func store(to p: UnsafeMutableRawPointer, layout: Int) {
            p.storeBytes(of: epoch, toByteOffset: 0, as: Int64.self)
            p.storeBytes(of: until, toByteOffset: 8, as: Int64.self)
        }
    }

    private let jtis: StateTable<Until>
    private let sessions: StateTable<Epoch>
    private let subjects: StateTable<Epoch>
    private let global: StateTable<Epoch>
    /// The four tables' counters, read on every verification (`holdsNone`).
    private let jtiStats: BoundedTableStats
    private let sessionStats: BoundedTableStats
    private let subjectStats: BoundedTableStats
    private let globalStats: BoundedTableStats
    private static let globalKey = "*"
    public let maxEntries: Int
    public let maxSessions: Int
    public let maxSubjects: Int
    /// How long an epoch must be kept after it: the longest lifetime of a token issued here
    /// plus the leeway.
    public let epochLifetime: Int64
    /// `process` or `host`.
    public let store: StoreKind
    public var backendName: String { store.rawValue }

    /// In this process.
    public convenience init(maxEntries: Int, maxSessions: Int = 100_000, maxSubjects: Int = 100_000, epochLifetime: Int64 = 604_830) {
        func table<V: FixedLayoutValue>(_ name: String, _ n: Int, _ idle: @escaping @Sendable (V, Int64) -> Bool) -> StateTable<V> {
            .process(ShardedTable(name: name, maxKeys: max(n, 1), idle: idle, rank: { _, _ in nil }))
        }
        self.init(maxEntries: maxEntries, maxSessions: maxSessions, maxSubjects: maxSubjects, epochLifetime: epochLifetime, store: .process,
                  jtis: table("revocation_jti", maxEntries, Self.untilIdle), sessions: table("revocation_session", maxSessions, Self.epochIdle),
                  subjects: table("revocation_subject", maxSubjects, Self.epochIdle), global: table("revocation_global", 1, Self.epochIdle))
    }

    /// At `placement` (this process, or the host's shared region); `store` names it.
    convenience init(maxEntries: Int, maxSessions: Int = 100_000, maxSubjects: Int = 100_000, epochLifetime: Int64 = 604_830,
                     placement: TablePlacement, store: StoreKind) throws(BitsecError) {
        let never: @Sendable (Epoch, Int64) -> Int64? = { _, _ in nil }
        self.init(maxEntries: maxEntries, maxSessions: maxSessions, maxSubjects: maxSubjects, epochLifetime: epochLifetime, store: store,
                  jtis: try StateTable.make(placement, name: "revocation_jti", maxKeys: max(maxEntries, 1), idle: Self.untilIdle,
                                            rank: { _, _ in nil }),
                  sessions: try StateTable.make(placement, name: "revocation_session", maxKeys: max(maxSessions, 1), idle: Self.epochIdle,
                                                rank: never),
                  subjects: try StateTable.make(placement, name: "revocation_subject", maxKeys: max(maxSubjects, 1), idle: Self.epochIdle,
                                                rank: never),
                  global: try StateTable.make(placement, name: "revocation_global", maxKeys: 1, idle: Self.epochIdle, rank: never))
    }

    private init(maxEntries: Int, maxSessions: Int, maxSubjects: Int, epochLifetime: Int64, store: StoreKind,
                 jtis: StateTable<Until>, sessions: StateTable<Epoch>, subjects: StateTable<Epoch>, global: StateTable<Epoch>) {
        self.maxEntries = max(maxEntries, 1)
        self.maxSessions = max(maxSessions, 1)
        self.maxSubjects = max(maxSubjects, 1)
        self.epochLifetime = max(epochLifetime, 1)
        self.store = store
        self.jtis = jtis
        self.sessions = sessions
        self.subjects = subjects
        self.global = global
        jtiStats = jtis.stats
        sessionStats = sessions.stats
        subjectStats = subjects.stats
        globalStats = global.stats
    }

    // Instants are Unix seconds: an entry is idle (dropping it changes no decision) once
    // its `until` has passed.
    private static let untilIdle: @Sendable (Until, Int64) -> Bool = { e, now in e.until <= now }
    private static let epochIdle: @Sendable (Epoch, Int64) -> Bool = { e, now in e.until <= now }

    /// A session's key: the subject's length, the subject, then the session id (no two
    /// (sub, sid) pairs share one).
    private static func sessionKey(sub: String, sid: String) -> String { "\(sub.utf8.count):\(sub)\(sid)" }

    /// A subject's key in its tenant: NUL, the tenant's length, the tenant, NUL, the subject.
    /// A revocation in every tenant keys the subject alone, as before tenants
    /// (`plainSubjectKey`: a subject that itself starts with NUL gets a second one, so no
    /// subject's key is another tenant's).
    private static func tenantSubjectKey(sub: String, tenant: String) -> String { "\u{0}\(tenant.utf8.count):\(tenant)\u{0}\(sub)" }
    private static func plainSubjectKey(_ sub: String) -> String { sub.utf8.first == 0 ? "\u{0}\u{0}" + sub : sub }

    /// The subject epoch covering `id`: its tenant's, or the subject's in every tenant.
    private func subjectCovers(_ id: TokenIdentity, _ sub: String, now: Int64) -> Bool {
        if let e = Self.liveEpoch(subjects, Self.plainSubjectKey(sub), now: now), id.coveredBy(e) { return true }
        if let t = id.tenant, let e = Self.liveEpoch(subjects, Self.tenantSubjectKey(sub: sub, tenant: t), now: now), id.coveredBy(e) {
            return true
        }
        return false
    }

    private func epochUntil(_ epoch: Int64, _ until: Int64) -> Int64 {
        max(until, epoch.addingReportingOverflow(epochLifetime).overflow ? Int64.max : epoch + epochLifetime)
    }

    /// The live epoch of `key` (an expired one is dropped on the way).
    private static func liveEpoch(_ t: StateTable<Epoch>, _ key: String, now: Int64) -> Int64? {
        t.update(key, nowMs: now) { (e, _) -> Int64? in
            guard let cur = e else { return nil }
            if cur.until > now { return cur.epoch }
            e = nil
            return nil
        }
    }

    private func covered(_ id: TokenIdentity, now: Int64) -> Bool {
        if global.stats.entryCount > 0, let g = Self.liveEpoch(global, Self.globalKey, now: now), id.coveredBy(g) { return true }
        if let jti = id.jti, jtiStats.entryCount > 0, isRevoked(jti: jti, now: now) { return true }
        if let sid = id.sid, sessions.stats.entryCount > 0,
           let e = Self.liveEpoch(sessions, Self.sessionKey(sub: id.sub ?? "", sid: sid), now: now), id.coveredBy(e) { return true }
        if let sub = id.sub, subjects.stats.entryCount > 0, subjectCovers(id, sub, now: now) { return true }
        return false
    }

    /// Moves the epoch of `key` forward (never back; its `until` only grows); true when it
    /// moved. When the table is full of live epochs, `wider` records it one level wider
    /// (called with this key's entry locked: the levels are always locked in the order jti,
    /// session, subject, global).
    private static func raise(_ t: StateTable<Epoch>, _ key: String, epoch: Int64, until: Int64, now: Int64,
                              wider: () -> Bool) -> Bool {
        t.update(key, nowMs: now) { (e, makeRoom) -> Bool in
            if var cur = e, cur.until > now {
                cur.until = max(cur.until, until)
                let moved = epoch > cur.epoch
                if moved { cur.epoch = epoch }
                e = cur
                return moved
            }
            if e != nil {
                e = Epoch(epoch: epoch, until: until)  // an expired epoch: its slot is reused
                return true
            }
            guard makeRoom() else { return wider() }
            e = Epoch(epoch: epoch, until: until)
            return true
        }
    }

    private func setSession(sub: String, tenant: String?, sid: String, epoch: Int64, until: Int64, now: Int64) -> Bool {
        Self.raise(sessions, Self.sessionKey(sub: sub, sid: sid), epoch: epoch, until: until, now: now) {
            // Full of live sessions: the subject in its tenant (or everything) takes over.
            if !sub.isEmpty { return setSubject(sub: sub, tenant: tenant, epoch: epoch, until: until, now: now) }
            return setGlobal(epoch: epoch, until: until, now: now)
        }
    }

    private func setSubject(sub: String, tenant: String?, epoch: Int64, until: Int64, now: Int64) -> Bool {
        let key = tenant.map { Self.tenantSubjectKey(sub: sub, tenant: $0) } ?? Self.plainSubjectKey(sub)
        return Self.raise(subjects, key, epoch: epoch, until: until, now: now) {
            setGlobal(epoch: epoch, until: until, now: now)
        }
    }

    private func setGlobal(epoch: Int64, until: Int64, now: Int64) -> Bool {
        // One key in a table of one: never refused (the entry is present or there is room).
        Self.raise(global, Self.globalKey, epoch: epoch, until: until, now: now) { false }
    }

    /// Records the token one level wider than its `jti`, at its `iat` (now when it has none):
    /// its session, else its subject, else everything. True when that moved an epoch.
    private func widen(_ id: TokenIdentity, until: Int64, now: Int64) -> Bool {
        let epoch = id.iat ?? now
        let u = epochUntil(epoch, until)
        if let sid = id.sid { return setSession(sub: id.sub ?? "", tenant: id.tenant, sid: sid, epoch: epoch, until: u, now: now) }
        if let sub = id.sub { return setSubject(sub: sub, tenant: id.tenant, epoch: epoch, until: u, now: now) }
        return setGlobal(epoch: epoch, until: u, now: now)
    }

    public func revoke(_ id: TokenIdentity, until: Int64, now: Int64) -> RevokeOutcome {
        guard let jti = id.jti else {
            // Nothing single to record. An epoch that did not move was already there and
            // covers the token.
            if covered(id, now: now) { return .already }
            return widen(id, until: until, now: now) ? .widened : .already
        }
        // The whole decision runs with the jti's entry locked: concurrent revokes of one
        // token are serialised here.
        return jtis.update(jti, nowMs: now) { (e, makeRoom) -> RevokeOutcome in
            if let cur = e, cur.until > now { return .already }
            if global.stats.entryCount > 0, let g = Self.liveEpoch(global, Self.globalKey, now: now), id.coveredBy(g) { return .already }
            if let sid = id.sid, sessions.stats.entryCount > 0,
               let s = Self.liveEpoch(sessions, Self.sessionKey(sub: id.sub ?? "", sid: sid), now: now), id.coveredBy(s) { return .already }
            if let sub = id.sub, subjects.stats.entryCount > 0, subjectCovers(id, sub, now: now) { return .already }
            if e != nil || makeRoom() {
                e = Until(until: until)
                return .newly
            }
            // No room for the jti: wider than asked, never narrower.
            return widen(id, until: until, now: now) ? .widened : .already
        }
    }

    public func revokeSession(sub: String, tenant: String?, sid: String, epoch: Int64, until: Int64, now: Int64) -> Bool {
        setSession(sub: sub, tenant: tenant?.isEmpty == true ? nil : tenant, sid: sid, epoch: epoch,
                   until: epochUntil(epoch, until), now: now)
    }

    public func revokeSubject(sub: String, tenant: String?, notBefore: Int64, until: Int64, now: Int64) -> Bool {
        setSubject(sub: sub, tenant: tenant?.isEmpty == true ? nil : tenant, epoch: notBefore,
                   until: epochUntil(notBefore, until), now: now)
    }

    public func isRevoked(_ id: TokenIdentity, now: Int64) -> Bool {
        covered(id, now: now)
    }

    /// No entry in any of the four tables (each count is one atomic load; in the host's
    /// region, the region's count, so another process's revocation is seen).
    public func holdsNone() -> Bool {
        jtiStats.entryCount == 0 && globalStats.entryCount == 0 && sessionStats.entryCount == 0
            && subjectStats.entryCount == 0
    }

    public func isRevoked(jti: String, now: Int64) -> Bool {
        jtis.update(jti, nowMs: now) { (e, _) -> Bool in
            guard let cur = e else { return false }
            return cur.until > now
        }
    }

    /// Single `jti`s held (expired ones until they are dropped).
    public var count: Int { jtis.count }
    public var sessionCount: Int { sessions.count }
    public var subjectCount: Int { subjects.count }
    /// The global epoch, nil when none is live.
    public func globalEpoch(now: Int64) -> Int64? { Self.liveEpoch(global, Self.globalKey, now: now) }

    /// Entries, capacity, evictions and refusals of the four tables (metrics).
    public var tableStats: [BoundedTableStats] { [jtis.stats, sessions.stats, subjects.stats, global.stats] }
}

/// Revocations in Redis, shared by every instance. The keys of one subject share a hash tag,
/// so that one verification is one `MGET` of keys in one cluster slot:
/// - `<key_prefix>revoked:{<sub>}:j:<jti>` = "1", TTL until the token's exp + leeway
///   (`SET NX`: a refresh token is exchanged once);
/// - `<key_prefix>revoked:{<sub>}:s:<session_id>` = the session epoch (Unix seconds);
/// - `<key_prefix>revoked:{<sub>}:nb` = the subject's not-before epoch.
/// A token without `sub` has only its jti key, tagged on the jti: `revoked:{#<jti>}:j:<jti>`.
/// That bare-jti key is also written beside the subject's jti key (same round trip), and is
/// where a revocation by `jti` alone (`bitsec_token_revoke`) goes: a verification of a token
/// with `sub` and `jti` sends the subject's `MGET` and an `EXISTS` of the bare key in one
/// pipelined round trip, so a revocation that did not know the subject is still honoured.
/// In Redis Cluster mode the two tags usually live on different nodes: the pool sends one
/// pipeline per node and puts the replies back in order (`RedisCluster.pipeline`); no
/// command ever spans two slots.
/// A `sub` (or jti) that contains `{` or `}` or starts with `~` or `#` is written in the tag
/// as `~` + base64url of its bytes, so distinct subjects never share keys.
/// Epochs are raised with a script (never moved back; the TTL only grows).
public final class RedisRevocationStore: RevocationStore {
    let pool: RedisPool
    let prefix: [UInt8]
    let epochLifetime: Int64
    public var backendName: String { "redis" }

    static let raiseScript = RedisScript("""
        local cur = tonumber(redis.call('GET', KEYS[1]) or '')
        local e = tonumber(ARGV[1])
        local ttl = tonumber(ARGV[2])
        if cur == nil or e > cur then
          local left = redis.call('TTL', KEYS[1])
          if left > ttl then ttl = left end
          redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
          return 1
        end
        if redis.call('TTL', KEYS[1]) < ttl then redis.call('EXPIRE', KEYS[1], ttl) end
        return 0
        """)

    public init(pool: RedisPool, epochLifetime: Int64 = 604_830) {
        self.pool = pool
        self.prefix = Array((pool.config.keyPrefix + "revoked:{").utf8)
        self.epochLifetime = max(epochLifetime, 1)
    }

    /// The hash-tag text of a subject (or `#` + jti for tokens without one).
    static func tag(_ s: String) -> [UInt8] {
        let u = Array(s.utf8)
        let plain = !u.contains(UInt8(ascii: "{")) && !u.contains(UInt8(ascii: "}"))
            && u.first != UInt8(ascii: "~") && u.first != UInt8(ascii: "#") && !u.isEmpty
        return plain ? u : [UInt8(ascii: "~")] + Base64.encode(u)
    }

    func base(sub: String?, jti: String) -> [UInt8] {
        if let sub { return prefix + Self.tag(sub) + Array("}:".utf8) }
        return prefix + [UInt8(ascii: "#")] + Self.tag(jti) + Array("}:".utf8)
    }

    public func jtiKey(jti: String, sub: String?) -> [UInt8] { base(sub: sub, jti: jti) + Array("j:".utf8) + Array(jti.utf8) }
    public func sessionKey(sub: String, sid: String) -> [UInt8] { base(sub: sub, jti: "") + Array("s:".utf8) + Array(sid.utf8) }
    public func subjectKey(sub: String) -> [UInt8] { base(sub: sub, jti: "") + Array("nb".utf8) }
    /// The subject's not-before epoch in one tenant: `t:<tenant's length>:<tenant>:nb` in the
    /// subject's slot (the subject's `nb` key, for every tenant, is checked beside it).
    public func subjectKey(sub: String, tenant: String) -> [UInt8] {
        base(sub: sub, jti: "") + Array("t:\(tenant.utf8.count):".utf8) + Array(tenant.utf8) + Array(":nb".utf8)
    }

    private func ttl(_ until: Int64, _ now: Int64) -> Int64 { max(until &- now, 1) }

    private func epochUntil(_ epoch: Int64, _ until: Int64) -> Int64 {
        max(until, epoch.addingReportingOverflow(epochLifetime).overflow ? Int64.max : epoch + epochLifetime)
    }

    public func revoke(_ id: TokenIdentity, until: Int64, now: Int64) throws(BitsecError) -> RevokeOutcome {
        guard let jti = id.jti else {
            // Nothing single to record: the session, else the subject.
            let epoch = id.iat ?? now
            let u = epochUntil(epoch, until)
            if let sub = id.sub {
                if let sid = id.sid { _ = try revokeSession(sub: sub, tenant: id.tenant, sid: sid, epoch: epoch, until: u, now: now) }
                else { _ = try revokeSubject(sub: sub, tenant: id.tenant, notBefore: epoch, until: u, now: now) }
                return .widened
            }
            throw .invalid("a token without jti and sub cannot be revoked in Redis")
        }
        let t = Array(String(ttl(until, now)).utf8)
        let set = [Array("SET".utf8), jtiKey(jti: jti, sub: id.sub), [UInt8(ascii: "1")], Array("EX".utf8), t, Array("NX".utf8)]
        let r: RedisReply
        if id.sub != nil {
            // Also under the bare jti (in the same round trip): `isRevoked(jti:)` and a bare
            // `revoke(jti)` do not know the subject, and must agree with this revocation.
            let marker = [Array("SET".utf8), jtiKey(jti: jti, sub: nil), [UInt8(ascii: "1")], Array("EX".utf8), t]
            // With `wait_replicas`, a newly recorded revocation is also WAITed for.
            let replies = try pool.pipelineReplicated([set, marker]) { if case .status = $0[0] { return true }; return false }
            if let e = replies[1].errorMessage { throw .backend("redis SET for a revocation failed: \(e)") }
            r = replies[0]
        } else {
            r = try pool.commandReplicated(set) { if case .status = $0 { return true }; return false }
        }
        switch r {
        case .status: return .newly
        case .null: return .already
        case .error(let e): throw .backend("redis SET for a revocation failed: \(e)")
        default: throw .backend("redis SET: unexpected reply")
        }
    }

    private func raise(_ key: [UInt8], epoch: Int64, until: Int64, now: Int64) throws(BitsecError) -> Bool {
        let r = try Self.raiseScript.run(pool, keys: [key], args: [Array(String(epoch).utf8), Array(String(ttl(until, now)).utf8)])
        guard let n = r.integer else { throw .backend("redis revocation script: \(r.errorMessage ?? "unexpected reply")") }
        return n == 1
    }

    public func revokeSession(sub: String, tenant: String?, sid: String, epoch: Int64, until: Int64, now: Int64) throws(BitsecError) -> Bool {
        try raise(sessionKey(sub: sub, sid: sid), epoch: epoch, until: epochUntil(epoch, until), now: now)
    }

    public func revokeSubject(sub: String, tenant: String?, notBefore: Int64, until: Int64, now: Int64) throws(BitsecError) -> Bool {
        let key = tenant.flatMap { $0.isEmpty ? nil : subjectKey(sub: sub, tenant: $0) } ?? subjectKey(sub: sub)
        return try raise(key, epoch: notBefore, until: epochUntil(notBefore, until), now: now)
    }

    private static let mget = Array("MGET".utf8)

    /// One round trip: one `MGET` of the token's keys in its subject's slot, pipelined with
    /// the bare-jti `EXISTS` when the token has both (see the type's comment).
    public func isRevoked(_ id: TokenIdentity, now: Int64) throws(BitsecError) -> Bool {
        var keys: [[UInt8]] = []
        keys.reserveCapacity(4)
        keys.append(Self.mget)
        if let sub = id.sub {
            if let jti = id.jti { keys.append(jtiKey(jti: jti, sub: sub)) }
            if let sid = id.sid { keys.append(sessionKey(sub: sub, sid: sid)) }
            keys.append(subjectKey(sub: sub))
            if let t = id.tenant { keys.append(subjectKey(sub: sub, tenant: t)) }
        } else if let jti = id.jti {
            keys.append(jtiKey(jti: jti, sub: nil))
        } else {
            return false
        }
        let r: RedisReply
        if id.sub != nil, let jti = id.jti {
            // A token revoked by its bare jti (`bitsec_token_revoke`, which does not know the
            // subject) is recorded under the jti's own tag: checked in the same round trip.
            let replies = try pool.pipeline([keys, [Array("EXISTS".utf8), jtiKey(jti: jti, sub: nil)]])
            guard let n = replies[1].integer else {
                throw .backend("redis EXISTS: \(replies[1].errorMessage ?? "unexpected reply")")
            }
            if n > 0 { return true }
            r = replies[0]
        } else {
            r = try pool.command(keys)
        }
        guard case .array(let vals) = r, vals.count == keys.count - 1 else {
            throw .backend("redis MGET: \(r.errorMessage ?? "unexpected reply")")
        }
        var i = 0
        if id.jti != nil {
            if vals[0] != .null { return true }
            i = 1
        }
        // Session and subject epochs: present and covering the token's iat.
        while i < vals.count {
            if let t = vals[i].text {
                guard let e = Int64(t) else { return true }  // unreadable: fail closed
                if id.coveredBy(e) { return true }
            }
            i += 1
        }
        return false
    }

    public func isRevoked(jti: String, now: Int64) throws(BitsecError) -> Bool {
        let r = try pool.command([Array("EXISTS".utf8), jtiKey(jti: jti, sub: nil)])
        guard let n = r.integer else {
            throw .backend("redis EXISTS: \(r.errorMessage ?? "unexpected reply")")
        }
        return n > 0
    }
}
