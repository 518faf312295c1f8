internal import Synchronization

/// An in-process table of per-key state, split into 64 shards by a hash of the key, each
/// behind its own `Mutex`: threads working on different keys rarely meet on a lock, and no
/// global lock exists.
///
/// Memory is bounded: each shard holds at most `ceil(maxKeys / 64)` entries. Idle entries
/// (for buckets: full again; for failure windows: nothing left in the window and no block)
/// are removed by a sweep of the shard every 1024 operations on it, and when a shard is at
/// its cap. What happens when a sweep frees nothing is the caller's choice (`insert` returns
/// false).
final class ShardedTable<Value: Sendable>: Sendable {
    struct Contents {
        var map: [String: Value] = [:]
        var ops: UInt32 = 0
        /// After a sweep at the cap that freed nothing, the next one waits until this instant
        /// (ms), so a table full of busy keys does not cost a full scan per new key.
        var nextFullSweepMs: Int64 = .min
    }

    final class Shard: Sendable {
        let m = Mutex(Contents())
    }

    static var shardCount: Int { 64 }

    private let shards: [Shard]
    let perShardCap: Int
    /// Whether an entry can be dropped at an instant (ms) without changing any decision.
    private let idle: @Sendable (Value, Int64) -> Bool

    init(maxKeys: Int, idle: @escaping @Sendable (Value, Int64) -> Bool) {
        shards = (0..<Self.shardCount).map { _ in Shard() }
        perShardCap = max(1, (maxKeys + Self.shardCount - 1) / Self.shardCount)
        self.idle = idle
    }

    /// FNV-1a over the key's bytes: cheap and good enough to spread keys over 64 shards
    /// (the dictionary inside uses the standard library's seeded hash).
    @inline(__always)
    static func shardIndex(_ key: String) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        var k = key
        k.withUTF8 { bytes in
            for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        }
        return Int(truncatingIfNeeded: (h ^ (h >> 32)) & UInt64(shardCount - 1))
    }

    /// Runs `body` with the key's shard locked. `body` gets the shard's contents and a
    /// function that makes room for a new entry (true when there is room).
    @inline(__always)
    func withShard<R: Sendable>(for key: String, nowMs: Int64, _ body: (inout Contents, (inout Contents) -> Bool) -> R) -> R {
        let shard = shards[Self.shardIndex(key)]
        let cap = perShardCap
        let idle = self.idle
        return shard.m.withLock { (c: inout Contents) -> R in
            c.ops &+= 1
            if c.ops & 1023 == 0 { Self.sweep(&c, nowMs: nowMs, idle: idle) }
            return body(&c) { (c: inout Contents) -> Bool in
                if c.map.count < cap { return true }
                if nowMs < c.nextFullSweepMs { return false }
                Self.sweep(&c, nowMs: nowMs, idle: idle)
                if c.map.count < cap { return true }
                c.nextFullSweepMs = nowMs &+ 100
                return false
            }
        }
    }

    private static func sweep(_ c: inout Contents, nowMs: Int64, idle: (Value, Int64) -> Bool) {
        c.map = c.map.filter { !idle($0.value, nowMs) }
    }

    /// Removes a key's entry.
    func remove(_ key: String) {
        _ = shards[Self.shardIndex(key)].m.withLock { $0.map.removeValue(forKey: key) }
    }

    /// Entries held, over all shards (tests, describe).
    var count: Int {
        var n = 0
        for s in shards { n += s.m.withLock { $0.map.count } }
        return n
    }

    /// Sweeps every shard now (tests; runtime close needs nothing).
    func sweepAll(nowMs: Int64) {
        for s in shards { s.m.withLock { Self.sweep(&$0, nowMs: nowMs, idle: idle) } }
    }
}
