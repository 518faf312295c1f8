internal import Synchronization

/// What the revocation checks read of a verified token: its `jti`, `sub`, `session_id` and
/// `iat`.
public struct TokenIdentity: Sendable, Equatable {
    public var jti: String?
    public var sub: String?
    public var sid: String?
    public var iat: Int64?

    public init(jti: String? = nil, sub: String? = nil, sid: String? = nil, iat: Int64? = nil) {
        self.jti = jti; self.sub = sub; self.sid = sid; self.iat = iat
    }

    init(_ c: VerifiedClaims) { self.init(jti: c.jti, sub: c.sub, sid: c.sessionId, iat: c.iat) }
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
/// revoked (equality revokes; a token without `iat` is revoked by any epoch that concerns it).
public protocol RevocationStore: Sendable {
    /// Revokes one token (its `jti` until `until`, or wider when there is no room). Of
    /// concurrent calls for one token exactly one gets `.newly` or `.widened`: the refresh
    /// exchange relies on it.
    func revoke(_ id: TokenIdentity, until: Int64, now: Int64) throws(BitsecError) -> RevokeOutcome
    /// Revokes the tokens of a session issued at or before `epoch`; true when this moved the
    /// epoch forward (false when an equal or later one was already recorded).
    func revokeSession(sub: String, sid: String, epoch: Int64, until: Int64, now: Int64) throws(BitsecError) -> Bool
    /// Revokes every token of `sub` issued at or before `notBefore`; true when this moved
    /// the subject's epoch forward.
    func revokeSubject(sub: String, notBefore: Int64, until: Int64, now: Int64) throws(BitsecError) -> Bool
    /// Whether any revocation covers the token.
    func isRevoked(_ id: TokenIdentity, now: Int64) throws(BitsecError) -> Bool
    /// Whether a single `jti` is revoked (a token without `sub` in Redis; any token in process).
    func isRevoked(jti: String, now: Int64) throws(BitsecError) -> Bool
    var backendName: String { get }
}

extension TokenIdentity {
    /// Whether an epoch covers this token: issued at or before it (no `iat`: covered).
    @inline(__always)
    func coveredBy(_ epoch: Int64) -> Bool { (iat ?? Int64.max) <= epoch }
}

/// In-process revocations: three bounded tables (single `jti`s: `max_entries`, sessions:
/// `max_sessions`, subjects: `max_subjects`) and one global epoch. Tables are Swift
/// dictionaries, whose hashing is SipHash keyed with a random per-process seed, so an
/// adversary cannot aim many keys at one place; each table has a global bound. A live
/// revocation is never evicted: when a table is full of live entries (after dropping the
/// expired ones), the revocation widens instead of failing or forgetting:
/// `jti` -> the token's session -> its subject -> every token issued up to that instant
/// (the global epoch, one number, never full). Memory grows with live sessions and users, at
/// most the three bounds.
public final class MemoryRevocationStore: RevocationStore {
    struct SessionKey: Hashable { let sub: String; let sid: String }
    struct Epoch { var epoch: Int64; var until: Int64 }
    private struct State {
        var jtis: [String: Int64] = [:]
        var sessions: [SessionKey: Epoch] = [:]
        var subjects: [String: Epoch] = [:]
        var global = Epoch(epoch: Int64.min, until: Int64.min)
        var nextPurge: Int64 = 0
        var nextFullPurge: Int64 = 0
    }
    private let state = Mutex(State())
    public let maxEntries: Int
    public let maxSessions: Int
    public let maxSubjects: Int
    /// How long an epoch must be kept after it: the longest lifetime of a token issued here
    /// plus the leeway.
    public let epochLifetime: Int64
    public var backendName: String { "memory" }

    public init(maxEntries: Int, maxSessions: Int = 100_000, maxSubjects: Int = 100_000, epochLifetime: Int64 = 604_830) {
        self.maxEntries = max(maxEntries, 1)
        self.maxSessions = max(maxSessions, 1)
        self.maxSubjects = max(maxSubjects, 1)
        self.epochLifetime = max(epochLifetime, 1)
    }

    private func epochUntil(_ epoch: Int64, _ until: Int64) -> Int64 {
        max(until, epoch.addingReportingOverflow(epochLifetime).overflow ? Int64.max : epoch + epochLifetime)
    }

    /// Drops expired entries: every 60 s, and at most once a second while a table is full
    /// (so a flood against a full table costs one pass a second, not one per call).
    private func purge(_ s: inout State, now: Int64, full: Bool) {
        guard now >= s.nextPurge || (full && now >= s.nextFullPurge) else { return }
        s.jtis = s.jtis.filter { $0.value > now }
        s.sessions = s.sessions.filter { $0.value.until > now }
        s.subjects = s.subjects.filter { $0.value.until > now }
        if s.global.until <= now { s.global = Epoch(epoch: Int64.min, until: Int64.min) }
        s.nextPurge = now &+ 60
        s.nextFullPurge = now &+ 1
    }

    private static func covered(_ s: inout State, _ id: TokenIdentity, now: Int64) -> Bool {
        if s.global.until > now, id.coveredBy(s.global.epoch) { return true }
        if let jti = id.jti, let u = s.jtis[jti], u > now { return true }
        if !s.sessions.isEmpty, let sid = id.sid, let e = s.sessions[SessionKey(sub: id.sub ?? "", sid: sid)],
           e.until > now, id.coveredBy(e.epoch) { return true }
        if !s.subjects.isEmpty, let sub = id.sub, let e = s.subjects[sub], e.until > now, id.coveredBy(e.epoch) { return true }
        return false
    }

    /// Moves an epoch entry forward (never back); true when it moved.
    private static func raise(_ e: inout Epoch?, epoch: Int64, until: Int64, now: Int64) -> Bool {
        if var cur = e, cur.until > now {
            cur.until = max(cur.until, until)
            let moved = epoch > cur.epoch
            if moved { cur.epoch = epoch }
            e = cur
            return moved
        }
        e = Epoch(epoch: epoch, until: until)
        return true
    }

    private func setSession(_ s: inout State, sub: String, sid: String, epoch: Int64, until: Int64, now: Int64) -> Bool {
        let k = SessionKey(sub: sub, sid: sid)
        if s.sessions[k] == nil && s.sessions.count >= maxSessions { purge(&s, now: now, full: true) }
        if s.sessions[k] == nil && s.sessions.count >= maxSessions {
            // Full of live sessions: the subject (or everything) takes over.
            if !sub.isEmpty { return setSubject(&s, sub: sub, epoch: epoch, until: until, now: now) }
            return setGlobal(&s, epoch: epoch, until: until, now: now)
        }
        return Self.raise(&s.sessions[k], epoch: epoch, until: until, now: now)
    }

    private func setSubject(_ s: inout State, sub: String, epoch: Int64, until: Int64, now: Int64) -> Bool {
        if s.subjects[sub] == nil && s.subjects.count >= maxSubjects { purge(&s, now: now, full: true) }
        if s.subjects[sub] == nil && s.subjects.count >= maxSubjects {
            return setGlobal(&s, epoch: epoch, until: until, now: now)
        }
        return Self.raise(&s.subjects[sub], epoch: epoch, until: until, now: now)
    }

    private func setGlobal(_ s: inout State, epoch: Int64, until: Int64, now: Int64) -> Bool {
        var g: Epoch? = s.global.until > now ? s.global : nil
        let moved = Self.raise(&g, epoch: epoch, until: until, now: now)
        if let g { s.global = g }
        return moved
    }

    public func revoke(_ id: TokenIdentity, until: Int64, now: Int64) -> RevokeOutcome {
        state.withLock { s in
            if Self.covered(&s, id, now: now) { return .already }
            if let jti = id.jti {
                if s.jtis.count >= maxEntries { purge(&s, now: now, full: true) } else { purge(&s, now: now, full: false) }
                if s.jtis.count < maxEntries {
                    s.jtis[jti] = until
                    return .newly
                }
            }
            // No room for the jti (or no jti): the token's session, else its subject, else
            // everything, at the token's iat (now when it has none).
            let epoch = id.iat ?? now
            let u = epochUntil(epoch, until)
            if let sid = id.sid {
                _ = setSession(&s, sub: id.sub ?? "", sid: sid, epoch: epoch, until: u, now: now)
            } else if let sub = id.sub {
                _ = setSubject(&s, sub: sub, epoch: epoch, until: u, now: now)
            } else {
                _ = setGlobal(&s, epoch: epoch, until: u, now: now)
            }
            return .widened
        }
    }

    public func revokeSession(sub: String, sid: String, epoch: Int64, until: Int64, now: Int64) -> Bool {
        state.withLock { s in setSession(&s, sub: sub, sid: sid, epoch: epoch, until: epochUntil(epoch, until), now: now) }
    }

    public func revokeSubject(sub: String, notBefore: Int64, until: Int64, now: Int64) -> Bool {
        state.withLock { s in setSubject(&s, sub: sub, epoch: notBefore, until: epochUntil(notBefore, until), now: now) }
    }

    public func isRevoked(_ id: TokenIdentity, now: Int64) -> Bool {
        state.withLock { s in Self.covered(&s, id, now: now) }
    }

    public func isRevoked(jti: String, now: Int64) -> Bool {
        state.withLock { s in
            guard let u = s.jtis[jti] else { return false }
            return u > now
        }
    }

    public var count: Int { state.withLock { $0.jtis.count } }
    public var sessionCount: Int { state.withLock { $0.sessions.count } }
    public var subjectCount: Int { state.withLock { $0.subjects.count } }
    /// The global epoch, nil when none is live.
    public func globalEpoch(now: Int64) -> Int64? { state.withLock { $0.global.until > now ? $0.global.epoch : nil } }
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
                if let sid = id.sid { _ = try revokeSession(sub: sub, sid: sid, epoch: epoch, until: u, now: now) }
                else { _ = try revokeSubject(sub: sub, notBefore: epoch, until: u, now: now) }
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
            let replies = try pool.pipeline([set, marker])
            if let e = replies[1].errorMessage { throw .backend("redis SET for a revocation failed: \(e)") }
            r = replies[0]
        } else {
            r = try pool.command(set)
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

    public func revokeSession(sub: String, sid: String, epoch: Int64, until: Int64, now: Int64) throws(BitsecError) -> Bool {
        try raise(sessionKey(sub: sub, sid: sid), epoch: epoch, until: epochUntil(epoch, until), now: now)
    }

    public func revokeSubject(sub: String, notBefore: Int64, until: Int64, now: Int64) throws(BitsecError) -> Bool {
        try raise(subjectKey(sub: sub), epoch: notBefore, until: epochUntil(notBefore, until), now: now)
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
