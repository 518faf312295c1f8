/// Where a stateful feature keeps its per-key state.
///
/// Every stateful feature (rate-limit buckets, failure windows and the login guard,
/// revocations, TOTP replay steps, backup-code claims, sessions) names one of three stores:
/// - `process`: tables in this process (one worker);
/// - `host`: tables in a memory-mapped region shared by every process on the host that opens
///   the same region (all workers of one service, like nginx's `limit_req_zone`);
/// - `redis`: Redis (several hosts).
/// The semantics are the same in all three; only who shares the state differs.
public enum StoreKind: String, Sendable, CaseIterable {
    case process
    case host
    case redis
}

/// A value that a table shared between processes can hold: stored in a fixed number of
/// bytes inside the region. `layout` is the table's layout parameter (for example the most
/// failures a failure window keeps); it is fixed when the table is created and recorded in
/// the region, so every process agrees on it.
public protocol FixedLayoutValue: Sendable {
    /// Bytes one stored value takes in a table with this layout parameter.
    static func storedSize(layout: Int) -> Int
    /// Reads a value written by `store(to:layout:)` (the bytes are `storedSize(layout:)` long).
    init(loading p: UnsafeRawPointer, layout: Int)
    /// Writes the value into `storedSize(layout:)` bytes.
    func store(to p: UnsafeMutableRawPointer, layout: Int)
}

/// Where the in-memory tables of one runtime live: this process, or a region shared by the
/// processes of the host (`SharedRegion`).
public enum TablePlacement: Sendable {
    case process
    case host(SharedRegion)
}

/// A bounded table of per-key state, in this process (`ShardedTable`) or shared on the host.
/// Both give the same guarantees: keyed placement, a global bound, eviction of idle entries
/// first, then the examined entry of lowest rank, never an entry whose rank is nil, and a
/// counted refusal when nothing can go.
///
/// The one operation is `update`: `body` gets the key's entry (nil when absent) with the key
/// locked; it may change it, set it to nil (remove), or, for an absent key, store a new value
/// after `makeRoom()` answered true (false: the table is full of entries that must be kept,
/// and the caller refuses on its safe side). Call `makeRoom` only for an absent key, at most
/// once per call.
public enum StateTable<Value: FixedLayoutValue>: Sendable {
    case process(ShardedTable<Value>)
    case host(SharedTable<Value>)

    /// - name: the `table` label of the metrics.
    /// - layout: the value's layout parameter (see `FixedLayoutValue`).
    /// - idle: whether an entry can be dropped at an instant (ms) without changing any decision.
    /// - rank: how much a live entry is worth keeping (lower goes first); nil: never evicted.
    /// Throws (host placement) when the region has no room for the table or holds a table of
    /// that name created with another maxKeys, layout or value size.
    public static func make(_ placement: TablePlacement, name: String, maxKeys: Int, layout: Int = 0,
                     idle: @escaping @Sendable (Value, Int64) -> Bool,
                     rank: @escaping @Sendable (Value, Int64) -> Int64?) throws(BitsecError) -> StateTable<Value> {
        switch placement {
        case .process:
            return .process(ShardedTable(name: name, maxKeys: maxKeys, idle: idle, rank: rank))
        case .host(let region):
            return .host(try SharedTable(region: region, name: name, maxKeys: maxKeys, layout: layout, idle: idle, rank: rank))
        }
    }

    @inline(__always)
    public func update<R: Sendable>(_ key: String, nowMs: Int64, _ body: (inout Value?, () -> Bool) -> R) -> R {
        switch self {
        case .process(let t):
            let exact = ExactText(key)  // (by its bytes, as the host store and Redis compare keys)
            return t.withShard(for: key, nowMs: nowMs) { (c, makeRoom) -> R in
                if let i = c.map.index(forKey: exact) {
                    var v: Value? = c.map.values[i]
                    let r = body(&v) { false }
                    if let v { c.map.values[i] = v } else { c.map.remove(at: i) }
                    return r
                }
                var v: Value? = nil
                let r = withoutActuallyEscaping(makeRoom) { mr in body(&v) { mr(&c) } }
                if let v { c.map[exact] = v }
                return r
            }
        case .host(let t):
            return t.update(key, nowMs: nowMs, body)
        }
    }

    /// Removes a key's entry.
    public func remove(_ key: String) {
        switch self {
        case .process(let t): t.remove(key)
        case .host(let t): t.remove(key)
        }
    }

    /// Entries held (tests, describe).
    public var count: Int {
        switch self {
        case .process(let t): return t.count
        case .host(let t): return t.count
        }
    }

    /// Entries, capacity, evictions and refusals (metrics).
    public var stats: BoundedTableStats {
        switch self {
        case .process(let t): return t.stats
        case .host(let t): return t.stats
        }
    }

    /// Drops every idle entry now (tests).
    public func sweepAll(nowMs: Int64) {
        switch self {
        case .process(let t): t.sweepAll(nowMs: nowMs)
        case .host(let t): t.sweepAll(nowMs: nowMs)
        }
    }
}
