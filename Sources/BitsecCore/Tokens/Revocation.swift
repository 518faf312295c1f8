internal import Synchronization

/// Where revoked `jti`s live. An entry lasts until the token's `exp` (plus the leeway): after
/// that the token is refused as expired anyway, so the entry can go.
public protocol RevocationStore: Sendable {
    /// Records a revocation; true when it is new (false when the jti was already revoked).
    func revoke(_ jti: String, until: Int64, now: Int64) throws(BitsecError) -> Bool
    func isRevoked(_ jti: String, now: Int64) throws(BitsecError) -> Bool
    var backendName: String { get }
}

/// In-process revocations: a map bounded by `maxEntries`, expired entries dropped. When it
/// is full of live entries a new revocation is refused with `tooLarge`: silently forgetting
/// a revocation would re-enable a revoked token.
public final class MemoryRevocationStore: RevocationStore {
    private struct State {
        var entries: [String: Int64] = [:]
        var nextPurge: Int64 = 0
    }
    private let state = Mutex(State())
    public let maxEntries: Int
    public var backendName: String { "memory" }

    public init(maxEntries: Int) { self.maxEntries = maxEntries }

    public func revoke(_ jti: String, until: Int64, now: Int64) throws(BitsecError) -> Bool {
        try state.withLock { (s) throws(BitsecError) -> Bool in
            if let u = s.entries[jti], u > now {
                if until > u { s.entries[jti] = until }
                return false
            }
            if s.entries.count >= maxEntries || now >= s.nextPurge {
                s.entries = s.entries.filter { $0.value > now }
                s.nextPurge = now + 60
            }
            guard s.entries.count < maxEntries else {
                throw .tooLarge("the in-process revocation list holds \(maxEntries) live entries (tokens.revocation.max_entries)")
            }
            s.entries[jti] = until
            return true
        }
    }

    public func isRevoked(_ jti: String, now: Int64) -> Bool {
        state.withLock { s in
            guard let u = s.entries[jti] else { return false }
            return u > now
        }
    }

    public var count: Int { state.withLock { $0.entries.count } }
}

/// Revocations in Redis, shared by every instance: `<key_prefix>revoked:{<jti>}` (the hash
/// tag keeps each key in one cluster slot), value "1", TTL until the token's exp + leeway,
/// written with `SET NX` so a refresh token can be exchanged only once.
public final class RedisRevocationStore: RevocationStore {
    let pool: RedisPool
    let prefix: [UInt8]
    public var backendName: String { "redis" }

    public init(pool: RedisPool) {
        self.pool = pool
        self.prefix = Array((pool.config.keyPrefix + "revoked:{").utf8)
    }

    func key(_ jti: String) -> [UInt8] { prefix + Array(jti.utf8) + [UInt8(ascii: "}")] }

    public func revoke(_ jti: String, until: Int64, now: Int64) throws(BitsecError) -> Bool {
        let ttl = max(until - now, 1)
        let r = try pool.command([Array("SET".utf8), key(jti), [UInt8(ascii: "1")], Array("EX".utf8), Array(String(ttl).utf8), Array("NX".utf8)])
        switch r {
        case .status: return true
        case .null: return false
        case .error(let e): throw .backend("redis SET for a revocation failed: \(e)")
        default: throw .backend("redis SET: unexpected reply")
        }
    }

    public func isRevoked(_ jti: String, now: Int64) throws(BitsecError) -> Bool {
        let r = try pool.command([Array("EXISTS".utf8), key(jti)])
        guard let n = r.integer else {
            throw .backend("redis EXISTS: \(r.errorMessage ?? "unexpected reply")")
        }
        return n > 0
    }
}
