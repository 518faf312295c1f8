/// Remembers the last accepted time step per user (RFC 6238 §5.2: a verifier must not accept
/// the second attempt of a code after a successful validation). `accept` is an atomic
/// compare-and-set: it records `step` and returns true only if it is later than the last
/// step accepted for the user, so two concurrent verifications of one code cannot both win.
public protocol ReplayGuard: Sendable {
    func accept(_ user: String, step: Int64, ttlSeconds: Int64) throws(BitsecError) -> Bool
}

/// In memory: a bounded `StateTable` (keyed placement, global bound; see there), in this
/// process (store `process`) or in the host's shared region (store `host`). An entry is kept
/// for `ttlSeconds` of real time (long enough that every step still inside a window stays
/// refused) and is never evicted while it lives: evicting it would accept the code again.
/// When `maxEntries` users hold live steps, a user not in the table is refused (its code is
/// answered as a replay, the safe side) and the refusal is counted in `stats`
/// (`bitsec_table_full_refusals_total{table="totp_replay"}`).
///
/// Instants are of the monotonic clock, which every process of the host shares
/// (`CLOCK_MONOTONIC`), so a region shared by several processes agrees on them.
public final class InProcessReplayGuard: ReplayGuard {
    struct Entry: Sendable, FixedLayoutValue {
        var step: Int64
        var expiresMs: Int64

        init(step: Int64, expiresMs: Int64) {
            self.step = step
            self.expiresMs = expiresMs
        }

        static func storedSize(layout: Int) -> Int { 16 }

        init(loading p: UnsafeRawPointer, layout: Int) {
            step = p.loadUnaligned(fromByteOffset: 0, as: Int64.self)
            expiresMs = p.loadUnaligned(fromByteOffset: 8, as: Int64.self)
        }

        func store(to p: UnsafeMutableRawPointer, layout: Int) {
            p.storeBytes(of: step, toByteOffset: 0, as: Int64.self)
            p.storeBytes(of: expiresMs, toByteOffset: 8, as: Int64.self)
        }
    }

    private let table: StateTable<Entry>

    /// In this process.
    public init(maxEntries: Int = 100_000) {
        table = .process(ShardedTable(name: "totp_replay", maxKeys: maxEntries, idle: Self.idle, rank: Self.rank))
    }

    /// At `placement` (this process, or the host's shared region).
    init(maxEntries: Int = 100_000, placement: TablePlacement) throws(BitsecError) {
        table = try StateTable.make(placement, name: "totp_replay", maxKeys: maxEntries, idle: Self.idle, rank: Self.rank)
    }

    private static let idle: @Sendable (Entry, Int64) -> Bool = { e, now in e.expiresMs <= now }
    private static let rank: @Sendable (Entry, Int64) -> Int64? = { _, _ in nil }

    public func accept(_ user: String, step: Int64, ttlSeconds: Int64) -> Bool {
        accept(user, step: step, ttlSeconds: ttlSeconds, nowMs: Clock.monotonicMillis())
    }

    /// As `accept(_:step:ttlSeconds:)` at an explicit instant of the monotonic clock (ms).
    public func accept(_ user: String, step: Int64, ttlSeconds: Int64, nowMs: Int64) -> Bool {
        let expires = nowMs &+ min(max(0, ttlSeconds), 1 << 40) &* 1000
        return table.update(user, nowMs: nowMs) { (entry, makeRoom) -> Bool in
            if let e = entry {
                if e.expiresMs > nowMs, e.step >= step { return false }
                entry = Entry(step: step, expiresMs: expires)
                return true
            }
            guard makeRoom() else { return false }
            entry = Entry(step: step, expiresMs: expires)
            return true
        }
    }

    public var trackedUsers: Int { table.count }

    /// Entries, capacity, evictions and refusals (metrics).
    public var stats: BoundedTableStats { table.stats }
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
        // With `wait_replicas`, an accepted claim is WAITed for: a failover must not forget it.
        let r = try pool.commandReplicated([Array("EVAL".utf8), Array(Self.script.utf8), Array("1".utf8), Array((prefix + user).utf8),
                                            Array(String(step).utf8), Array(String(max(ttlSeconds, 1)).utf8)]) { $0 == .integer(1) }
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

/// In memory: a bounded `StateTable` (see there), in this process (store `process`) or in
/// the host's shared region (store `host`). A claim is kept for `ttlSeconds` of real time.
/// What it must cover is the moment between a code's acceptance and the caller deleting its
/// hash (two concurrent uses of one code): a claim younger than `minKeepSeconds` (ten
/// minutes) is never evicted. Older ones only guard against a caller that never deletes,
/// and when the table is full a new claim evicts the oldest of them: one user who keeps
/// regenerating and using codes (each claim kept 30 days by default) could otherwise fill
/// the table and have every other user's valid code refused for as long. When the table is
/// full of claims younger than ten minutes, a new claim is refused (the code is answered as
/// used, the safe side) and counted in `stats`
/// (`bitsec_table_full_refusals_total{table="totp_backup_codes"}`).
public final class InProcessUseOnceSet: UseOnceSet {
    /// How long a claim is never evicted, whatever the table's load (seconds).
    public static let minKeepSeconds: Int64 = 600

    /// A claim: the instant (ms, monotonic clock) it lapses.
    struct Claim: Sendable, FixedLayoutValue {
        var expiresMs: Int64

        init(expiresMs: Int64) { self.expiresMs = expiresMs }

        static func storedSize(layout: Int) -> Int { 8 }

        init(loading p: UnsafeRawPointer, layout: Int) { expiresMs = p.loadUnaligned(fromByteOffset: 0, as: Int64.self) }

        func store(to p: UnsafeMutableRawPointer, layout: Int) { p.storeBytes(of: expiresMs, toByteOffset: 0, as: Int64.self) }
    }

    private let table: StateTable<Claim>

    /// In this process. `ttlSeconds`: the time-to-live the claims are made with (the
    /// service's `used_ttl_s`), from which a claim's age is known (its expiry less that).
    public init(maxEntries: Int = 100_000, ttlSeconds: Int64 = 30 * 86_400) {
        table = .process(ShardedTable(name: "totp_backup_codes", maxKeys: maxEntries, idle: Self.idle,
                                      rank: Self.rank(ttlSeconds: ttlSeconds)))
    }

    /// At `placement` (this process, or the host's shared region).
    init(maxEntries: Int = 100_000, ttlSeconds: Int64, placement: TablePlacement) throws(BitsecError) {
        table = try StateTable.make(placement, name: "totp_backup_codes", maxKeys: maxEntries, idle: Self.idle,
                                    rank: Self.rank(ttlSeconds: ttlSeconds))
    }

    private static let idle: @Sendable (Claim, Int64) -> Bool = { c, now in c.expiresMs <= now }

    /// Never for a claim younger than `minKeepSeconds`; else its expiry, so the oldest goes
    /// first.
    private static func rank(ttlSeconds: Int64) -> @Sendable (Claim, Int64) -> Int64? {
        let ttlMs = min(max(0, ttlSeconds), 1 << 40) &* 1000, keepMs = minKeepSeconds * 1000
        return { c, now in c.expiresMs &- ttlMs > now &- keepMs ? nil : c.expiresMs }
    }

    public func claim(_ id: String, ttlSeconds: Int64) -> Bool {
        claim(id, ttlSeconds: ttlSeconds, nowMs: Clock.monotonicMillis())
    }

    /// As `claim(_:ttlSeconds:)` at an explicit instant of the monotonic clock (ms).
    public func claim(_ id: String, ttlSeconds: Int64, nowMs: Int64) -> Bool {
        let expires = nowMs &+ min(max(0, ttlSeconds), 1 << 40) &* 1000
        return table.update(id, nowMs: nowMs) { (entry, makeRoom) -> Bool in
            if let c = entry {
                if c.expiresMs > nowMs { return false }
                entry = Claim(expiresMs: expires)
                return true
            }
            guard makeRoom() else { return false }
            entry = Claim(expiresMs: expires)
            return true
        }
    }

    public var trackedClaims: Int { table.count }

    /// Entries, capacity, evictions and refusals (metrics).
    public var stats: BoundedTableStats { table.stats }
}

public final class RedisUseOnceSet: UseOnceSet {
    private let pool: RedisPool
    private let prefix: String

    public init(pool: RedisPool) {
        self.pool = pool
        self.prefix = pool.config.keyPrefix + "totp:backup:"
    }

    public func claim(_ id: String, ttlSeconds: Int64) throws(BitsecError) -> Bool {
        let r = try pool.commandReplicated([Array("SET".utf8), Array((prefix + id).utf8), Array("1".utf8), Array("NX".utf8),
                                            Array("EX".utf8), Array(String(max(ttlSeconds, 1)).utf8)]) { $0 == .status("OK") }
        switch r {
        case .status("OK"): return true
        case .null: return false
        default:
            throw .backend("redis \(pool.config.endpointText): unexpected reply to the backup code claim (\(r.errorMessage ?? "wrong type"))")
        }
    }
}
