internal import Synchronization

/// An in-process table of per-key state whose keys come from clients (addresses, user ids):
/// rate-limit buckets, failure windows, TOTP replay steps, backup-code claims. Split into up
/// to 64 shards, each behind its own `Mutex`: threads working on different keys rarely meet
/// on a lock, and no global lock exists. A small table has fewer shards (at least 256 entries
/// of room per shard, a power of two): an eviction samples the key's shard and its
/// neighbours, and over 64 shards of one entry each that sample would miss the evictable
/// entries of the rest of the table and refuse new keys it could have admitted.
///
/// **Placement is keyed.** A key's shard is Swift's `Hasher` (SipHash-1-3, seeded randomly
/// per process) over a 128-bit secret drawn from OpenSSL's DRBG when the table is created,
/// then the key. A client cannot compute where its keys land, so it cannot aim a flood at
/// the shard of a victim. SipHash-1-3 over a short key costs a few tens of nanoseconds, the
/// price of the FNV-1a it replaces plus the 16 secret bytes; a keyed MAC through OpenSSL's
/// EVP would cost more than the whole in-process take (measured: about 160 instructions more
/// per take than FNV-1a, see BENCHMARKS.md). The secret belongs to the table: every process
/// that shares one table (a shared-memory store, whose region holds the secret) must share
/// it, and since `Hasher`'s own seed differs per process, such a store must hash with
/// SipHash keyed by the region's secret alone; this in-process table only needs placement
/// to be unpredictable to clients, which both seeds give.
///
/// **The bound is global.** At most `maxKeys` entries over all shards (one atomic count),
/// never a per-shard cap: however keys spread, the table holds `maxKeys` before anything is
/// evicted.
///
/// **Eviction is least valuable first and never fails open.** When a new key arrives at a
/// full table, up to `sampleSize` entries of its shard are examined (and, when none of them
/// may go, of the next `neighbourShards` shards; those only when their lock is free, so two
/// inserting threads never wait on each other). A cursor walks each shard, so successive
/// samples see different entries. Idle entries found (dropping them changes no decision)
/// are dropped; failing that, the examined entry of lowest `rank` is evicted; entries whose
/// rank is nil (a live block, a live replay step) are never evicted. When nothing examined
/// can go, `makeRoom` answers false, the caller refuses (its safe side) and the refusal is
/// counted. Cost per insert at a full table: a bounded number of entries, never a scan of
/// the table. A sweep of a shard every 1024 operations on it, and when inserts have doubled
/// it since the last sweep, drops its idle entries.
public final class ShardedTable<Value: Sendable>: Sendable {
    struct Contents {
        /// Keyed by exact bytes (`ExactText`): a `String` key is equal and hashed up to Unicode
        /// canonical equivalence, which made "jos\u{E9}" and "jose\u{301}" (two users, two
        /// tenants' subjects, two account ids a host keeps apart) one entry in this store
        /// while the host store and Redis, which compare bytes, kept them apart.
        var map: [ExactText: Value] = [:]
        var ops: UInt32 = 0
        /// The key where the next eviction sample of this shard starts (nil: the start).
        var cursor: ExactText? = nil
        /// The shard is swept when an insert brings it to this many entries (then twice what
        /// the sweep left): memory follows the live entries even while the table is far from
        /// full, at amortised O(1) per insert.
        var sweepAt: Int = ShardedTable.minSweepAt
    }

    final class Shard: Sendable {
        let m = Mutex(Contents())
    }

    static var maxShardCount: Int { 64 }
    /// Room per shard below which a table uses fewer shards.
    static var minKeysPerShard: Int { 256 }
    /// Entries examined per shard when a full table needs room.
    static var sampleSize: Int { 8 }
    /// Shards examined after the key's own when it has nothing to evict.
    static var neighbourShards: Int { 4 }
    static var minSweepAt: Int { 64 }

    private let shards: [Shard]
    private let shardMask: Int
    let maxKeys: Int
    /// Entries held (the global count), evictions and refusals, for the metrics.
    let stats: BoundedTableStats
    private let secret: TableSecret
    /// Whether an entry can be dropped at an instant (ms) without changing any decision.
    private let idle: @Sendable (Value, Int64) -> Bool
    /// How much a live entry is worth keeping (lower goes first); nil: never evicted.
    private let rank: @Sendable (Value, Int64) -> Int64?

    init(name: String, maxKeys: Int, secret: TableSecret = .random(),
         idle: @escaping @Sendable (Value, Int64) -> Bool,
         rank: @escaping @Sendable (Value, Int64) -> Int64?) {
        let n = Self.shardCount(forMaxKeys: maxKeys)
        shards = (0..<n).map { _ in Shard() }
        shardMask = n - 1
        self.maxKeys = max(1, maxKeys)
        stats = BoundedTableStats(name: name, capacity: self.maxKeys)
        self.secret = secret
        self.idle = idle
        self.rank = rank
    }

    /// A power of two from 1 to `maxShardCount`, each shard with room for at least
    /// `minKeysPerShard` entries (64 shards from 32768 keys up).
    static func shardCount(forMaxKeys m: Int) -> Int {
        var n = 1
        while n < maxShardCount && n * 2 * minKeysPerShard <= m { n *= 2 }
        return n
    }

    @inline(__always)
    func shardIndex(_ key: String) -> Int {
        var h = Hasher()
        h.combine(secret.k0)
        h.combine(secret.k1)
        ExactText(key).hash(into: &h)  // (its bytes: as the map compares keys)
        return h.finalize() & shardMask
    }

    /// Runs `body` with the key's shard locked. `body` gets the shard's contents and a
    /// function that makes room for one new entry (true when there is room; false: the table
    /// is full of entries that must be kept, and the caller refuses on its safe side). Insert
    /// a new key only after `makeRoom` answered true, at most one per call.
    @inline(__always)
    func withShard<R: Sendable>(for key: String, nowMs: Int64, _ body: (inout Contents, (inout Contents) -> Bool) -> R) -> R {
        let index = shardIndex(key)
        return shards[index].m.withLock { (c: inout Contents) -> R in
            c.ops &+= 1
            if c.ops & 1023 == 0 { sweep(&c, nowMs: nowMs) }
            let before = c.map.count
            var reserved = 0
            let r = body(&c) { (c: inout Contents) -> Bool in
                makeRoom(&c, shard: index, nowMs: nowMs, reserved: &reserved)
            }
            // Own-shard changes (inserts, evictions) are counted here; room taken from the
            // global count or freed in a neighbour was counted by makeRoom.
            let delta = c.map.count - before - reserved
            if delta != 0 { stats.entries.wrappingAdd(delta, ordering: .relaxed) }
            if c.map.count > before && c.map.count >= c.sweepAt {
                sweep(&c, nowMs: nowMs)
                c.sweepAt = max(Self.minSweepAt, 2 * c.map.count)
            }
            return r
        }
    }

    /// Reserves one slot of the global count, or frees one by dropping an idle entry or
    /// evicting the least valuable one examined. `c` is the locked key's shard. True when a
    /// slot is reserved (`reserved` is incremented: the count already includes the new
    /// entry), or an entry of the own shard was removed to make the room (withShard counts
    /// own-shard changes).
    private func makeRoom(_ c: inout Contents, shard index: Int, nowMs: Int64, reserved: inout Int) -> Bool {
        if reserve() { reserved += 1; return true }
        // The own shard first: its lock is held.
        let own = sample(&c, nowMs: nowMs)
        if own.dropped > 0 {
            // Half the sample or more was idle: the shard is mostly idle, sweep all of it
            // (the cost is paid back by the room it makes). Own-shard removals are counted
            // by withShard; the count has room for one.
            if own.dropped * 2 >= own.examined { _ = dropIdle(&c, nowMs: nowMs) }
            return true
        }
        var best: (shard: Int, key: ExactText, rank: Int64)? = own.best.map { (index, $0.key, $0.rank) }
        // Neighbours only when the own shard has nothing that may go (or is empty): the
        // common flood case costs one shard's sample.
        for j in 0..<min(Self.neighbourShards, shardMask) where best == nil || best?.shard != index {
            let n = (index + j + 1) & shardMask
            let got: (dropped: Int, examined: Int, best: (key: ExactText, rank: Int64)?)? = shards[n].m.withLockIfAvailable { (d: inout Contents) in
                sample(&d, nowMs: nowMs)
            }
            guard let got else { continue }
            if got.dropped > 0 {
                stats.entries.wrappingSubtract(got.dropped, ordering: .relaxed)
                if reserve() { reserved += 1; return true }
            }
            if let b = got.best, best == nil || b.rank < (best?.rank ?? .max) { best = (n, b.key, b.rank) }
        }
        if let best {
            if best.shard == index {
                if c.map.removeValue(forKey: best.key) != nil {
                    stats.evictions.wrappingAdd(1, ordering: .relaxed)
                    return true
                }
            } else {
                let rank = self.rank
                let evicted: Bool? = shards[best.shard].m.withLockIfAvailable { (d: inout Contents) -> Bool in
                    // The entry may have changed since it was examined: evict it only if it
                    // still may go.
                    guard let v = d.map[best.key], rank(v, nowMs) != nil else { return false }
                    d.map.removeValue(forKey: best.key)
                    return true
                }
                if evicted == true {
                    stats.entries.wrappingSubtract(1, ordering: .relaxed)
                    stats.evictions.wrappingAdd(1, ordering: .relaxed)
                    if reserve() { reserved += 1; return true }
                }
            }
        }
        stats.refusals.wrappingAdd(1, ordering: .relaxed)
        return false
    }

    /// One slot of the global count, if there is one.
    @inline(__always)
    private func reserve() -> Bool {
        let old = stats.entries.wrappingAdd(1, ordering: .relaxed).oldValue
        if old < maxKeys { return true }
        stats.entries.wrappingSubtract(1, ordering: .relaxed)
        return false
    }

    /// Examines up to `sampleSize` entries of a locked shard from its cursor, drops the idle
    /// ones and returns how many it dropped and the examined entry of lowest rank.
    private func sample(_ c: inout Contents, nowMs: Int64) -> (dropped: Int, examined: Int, best: (key: ExactText, rank: Int64)?) {
        let n = min(Self.sampleSize, c.map.count)
        guard n > 0 else { return (0, 0, nil) }
        var i = c.cursor.flatMap { c.map.index(forKey: $0) } ?? c.map.startIndex
        var idleKeys: [ExactText] = []
        var best: (key: ExactText, rank: Int64)? = nil
        for _ in 0..<n {
            if i == c.map.endIndex { i = c.map.startIndex }
            let (k, v) = c.map[i]
            if idle(v, nowMs) {
                idleKeys.append(k)
            } else if let r = rank(v, nowMs), r < (best?.rank ?? .max) || best == nil {
                best = (k, r)
            }
            i = c.map.index(after: i)
        }
        c.cursor = i == c.map.endIndex ? nil : c.map[i].key
        for k in idleKeys { c.map.removeValue(forKey: k) }
        return (idleKeys.count, n, best)
    }

    /// Drops the idle entries of a locked shard and counts them out of the global count.
    private func sweep(_ c: inout Contents, nowMs: Int64) {
        let removed = dropIdle(&c, nowMs: nowMs)
        if removed > 0 { stats.entries.wrappingSubtract(removed, ordering: .relaxed) }
    }

    /// Removes the idle entries of a locked shard in place (the dictionary keeps its storage:
    /// no reallocation and regrowth after each sweep); returns how many. The global count is
    /// the caller's business.
    private func dropIdle(_ c: inout Contents, nowMs: Int64) -> Int {
        var gone: [ExactText] = []
        for (k, v) in c.map where idle(v, nowMs) { gone.append(k) }
        for k in gone { c.map.removeValue(forKey: k) }
        if !gone.isEmpty { c.cursor = nil }
        return gone.count
    }

    /// Removes a key's entry.
    func remove(_ key: String) {
        let removed = shards[shardIndex(key)].m.withLock { $0.map.removeValue(forKey: ExactText(key)) != nil }
        if removed { stats.entries.wrappingSubtract(1, ordering: .relaxed) }
    }

    /// Entries held, over all shards (tests, describe).
    var count: Int {
        var n = 0
        for s in shards { n += s.m.withLock { $0.map.count } }
        return n
    }

    /// Sweeps every shard now (tests; runtime close needs nothing).
    func sweepAll(nowMs: Int64) {
        for s in shards { s.m.withLock { sweep(&$0, nowMs: nowMs) } }
    }
}

/// The 128-bit secret that places a table's keys (see `ShardedTable`). Random per table; a
/// table shared between processes must be created with the same secret in each.
struct TableSecret: Sendable {
    let k0: UInt64
    let k1: UInt64

    /// 16 bytes from OpenSSL's DRBG (the system generator should OpenSSL ever fail: the
    /// secret only has to be unpredictable, not a key).
    static func random() -> TableSecret {
        var k0: UInt64 = 0, k1: UInt64 = 0
        if let b = try? OpenSSL.randomBytes(count: 16), b.count == 16 {
            for i in 0..<8 {
                k0 = (k0 << 8) | UInt64(b[i])
                k1 = (k1 << 8) | UInt64(b[8 + i])
            }
        } else {
            var g = SystemRandomNumberGenerator()
            k0 = g.next()
            k1 = g.next()
        }
        return TableSecret(k0: k0, k1: k1)
    }
}

/// Counters of one bounded in-process table, rendered by `bitsec_metrics_text` with a
/// `table` label: entries held, capacity, live entries evicted to make room, and new keys
/// refused because the table was full of entries that must be kept.
public final class BoundedTableStats: Sendable {
    /// The `table` label: `rate_limit:<category>`, `failure_window:<name>`, `totp_replay`,
    /// `totp_backup_codes`, `token_cache`.
    public let name: String
    public let capacity: Int
    let entries = Atomic<Int>(0)
    let evictions = Atomic<UInt64>(0)
    let refusals = Atomic<UInt64>(0)
    /// Where the numbers live when the table is shared between processes (a `SharedTable`:
    /// host-wide numbers in the region); nil for an in-process table, whose hot path updates
    /// the atomics above directly.
    let source: (any BoundedTableSource)?

    init(name: String, capacity: Int, source: (any BoundedTableSource)? = nil) {
        self.name = name
        self.capacity = capacity
        self.source = source
    }

    /// Entries held now.
    public var entryCount: Int { source?.entries ?? entries.load(ordering: .relaxed) }
    /// Entries that still held state (not idle) evicted to make room for a new key.
    public var evictionCount: UInt64 { source?.evictions ?? evictions.load(ordering: .relaxed) }
    /// New keys refused because the table was full and nothing could be evicted.
    public var refusalCount: UInt64 { source?.refusals ?? refusals.load(ordering: .relaxed) }
    /// Shards repaired after a process died holding a shard lock (shared tables; always 0 for
    /// an in-process table).
    public var repairCount: UInt64 { source?.repairs ?? 0 }

    /// The Prometheus text (0.0.4) of these tables' counters and gauges.
    public static func prometheusText(_ tables: [BoundedTableStats]) -> String {
        guard !tables.isEmpty else { return "" }
        var out = ""
        func family(_ name: String, _ type: String, _ help: String, of list: [BoundedTableStats] = tables,
                    _ value: (BoundedTableStats) -> String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for t in list { out += "\(name){table=\"\(AuditMetrics.escape(t.name))\"} \(value(t))\n" }
        }
        family("bitsec_table_entries", "gauge", "Entries held by a bounded in-process table.") { String($0.entryCount) }
        family("bitsec_table_capacity", "gauge", "Most entries a bounded in-process table holds.") { String($0.capacity) }
        family("bitsec_table_evictions_total", "counter",
               "Entries still holding state evicted to make room for a new key.") { String($0.evictionCount) }
        family("bitsec_table_full_refusals_total", "counter",
               "New keys refused because the table was full of entries that must be kept.") { String($0.refusalCount) }
        // Only tables shared between processes can need a repair.
        let shared = tables.filter { $0.source != nil }
        if !shared.isEmpty {
            family("bitsec_table_repairs_total", "counter",
                   "Shards of a host-shared table repaired after a process died holding their lock.", of: shared) { String($0.repairCount) }
        }
        return out
    }
}

/// The numbers of a bounded table kept outside its `BoundedTableStats` (a table shared
/// between processes keeps them in the region).
protocol BoundedTableSource: Sendable {
    var entries: Int { get }
    var evictions: UInt64 { get }
    var refusals: UInt64 { get }
    var repairs: UInt64 { get }
}
