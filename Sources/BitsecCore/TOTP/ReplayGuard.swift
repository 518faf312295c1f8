internal import Synchronization

/// Remembers the last accepted time step per user (RFC 6238 §5.2: a verifier must not accept
/// the second attempt of a code after a successful validation). `accept` is an atomic
/// compare-and-set: it records `step` and returns true only if it is later than the last
/// step accepted for the user, so two concurrent verifications of one code cannot both win.
public protocol ReplayGuard: Sendable {
    func accept(_ user: String, step: Int64, ttlSeconds: Int64) throws(BitsecError) -> Bool
}

/// In-process: one dictionary under a mutex. Entries are kept for `ttlSeconds` of real time
/// (long enough that every step still inside a window stays refused), then pruned.
public final class InProcessReplayGuard: ReplayGuard {
    private struct Entry { var step: Int64; var expires: Int64 }
    private let state = Mutex<(entries: [String: Entry], pruneAt: Int)>(([:], 10_000))

    public init() {}

    public func accept(_ user: String, step: Int64, ttlSeconds: Int64) -> Bool {
        let now = Clock.monotonicMillis() / 1000
        return state.withLock { s in
            if let e = s.entries[user], e.expires > now, e.step >= step { return false }
            s.entries[user] = Entry(step: step, expires: now + ttlSeconds)
            // Prune the expired entries when the table reaches pruneAt, then wait until it
            // doubles what is left: amortised O(1) per insert, memory bounded by live users.
            if s.entries.count >= s.pruneAt {
                s.entries = s.entries.filter { $0.value.expires > now }
                s.pruneAt = max(10_000, 2 * s.entries.count)
            }
            return true
        }
    }

    public var trackedUsers: Int { state.withLock { $0.entries.count } }
}

/// Shared through Redis: `GET`, compare and `SET ... EX` inside one Lua script (atomic on
/// the server), so two runtimes behind a load balancer cannot both accept one code.
public final class RedisReplayGuard: ReplayGuard {
    private let pool: RedisPool
    private let prefix: String

    public init(pool: RedisPool) {
        self.pool = pool
        self.prefix = pool.config.keyPrefix + "totp:last:"
    }

    private static let script = """
        local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
        if cur ~= nil and cur >= tonumber(ARGV[1]) then return 0 end
        redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
        return 1
        """

    public func accept(_ user: String, step: Int64, ttlSeconds: Int64) throws(BitsecError) -> Bool {
        let r = try pool.command([Array("EVAL".utf8), Array(Self.script.utf8), Array("1".utf8), Array((prefix + user).utf8),
                                  Array(String(step).utf8), Array(String(max(ttlSeconds, 1)).utf8)])
        guard let n = r.integer else {
            throw .backend("redis \(pool.config.endpointText): unexpected reply to the totp replay check (\(r.errorMessage ?? "wrong type"))")
        }
        return n == 1
    }
}

/// Single use of backup codes: `claim` returns true the first time an id is claimed (for
/// `ttlSeconds`), false afterwards. In process, or `SET NX EX` in Redis.
public protocol UseOnceSet: Sendable {
    func claim(_ id: String, ttlSeconds: Int64) throws(BitsecError) -> Bool
}

public final class InProcessUseOnceSet: UseOnceSet {
    private let state = Mutex<(claimed: [String: Int64], pruneAt: Int)>(([:], 10_000))

    public init() {}

    public func claim(_ id: String, ttlSeconds: Int64) -> Bool {
        let now = Clock.monotonicMillis() / 1000
        return state.withLock { s in
            if let e = s.claimed[id], e > now { return false }
            s.claimed[id] = now + ttlSeconds
            if s.claimed.count >= s.pruneAt {
                s.claimed = s.claimed.filter { $0.value > now }
                s.pruneAt = max(10_000, 2 * s.claimed.count)
            }
            return true
        }
    }
}

public final class RedisUseOnceSet: UseOnceSet {
    private let pool: RedisPool
    private let prefix: String

    public init(pool: RedisPool) {
        self.pool = pool
        self.prefix = pool.config.keyPrefix + "totp:backup:"
    }

    public func claim(_ id: String, ttlSeconds: Int64) throws(BitsecError) -> Bool {
        let r = try pool.command([Array("SET".utf8), Array((prefix + id).utf8), Array("1".utf8), Array("NX".utf8),
                                  Array("EX".utf8), Array(String(max(ttlSeconds, 1)).utf8)])
        switch r {
        case .status("OK"): return true
        case .null: return false
        default:
            throw .backend("redis \(pool.config.endpointText): unexpected reply to the backup code claim (\(r.errorMessage ?? "wrong type"))")
        }
    }
}
