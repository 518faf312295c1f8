/// The in-process token buckets of one category (the embedded default, and the `local`
/// failure policy's fallback while Redis is unavailable).
final class LocalBuckets: Sendable {
    struct Entry: Sendable {
        var state: BucketState
        /// The instant (ms) the bucket is full again: from then on the entry is idle.
        var fullAtMs: Int64
        /// A denial was already reported to the audit hook since the last allowed take.
        var denialReported: Bool
    }

    let shape: BucketShape
    let table: ShardedTable<Entry>

    init(shape: BucketShape, maxKeys: Int) {
        self.shape = shape
        table = ShardedTable(maxKeys: maxKeys) { e, now in now >= e.fullAtMs }
    }

    /// Takes `cost` tokens for `key` at `nowMs`. `firstDenial` is true for the first denial
    /// since the key's last allowed take (the audit event is emitted once per burst).
    @inline(__always)
    func take(_ key: String, cost: Int64, nowMs: Int64, degraded: Bool) -> (RateLimitDecision, firstDenial: Bool) {
        let shape = self.shape
        return table.withShard(for: key, nowMs: nowMs) { (c, makeRoom) -> (RateLimitDecision, Bool) in
            if let i = c.map.index(forKey: key) {
                var st: BucketState? = c.map.values[i].state
                let o = TokenBucket.take(&st, cost: cost, nowMs: nowMs, shape: shape)
                var first = false
                if o.allowed, let st {
                    c.map.values[i].state = st
                    c.map.values[i].fullAtMs = nowMs &+ o.msToFull
                    c.map.values[i].denialReported = false
                } else if !o.allowed && !c.map.values[i].denialReported {
                    c.map.values[i].denialReported = true
                    first = true
                }
                return (RateLimitDecision(o, shape: shape, degraded: degraded), first)
            }
            // A new key: its bucket starts full, so the take is allowed (cost <= capacity).
            var st: BucketState? = nil
            let o = TokenBucket.take(&st, cost: cost, nowMs: nowMs, shape: shape)
            guard makeRoom(&c) else {
                return (RateLimitDecision(allowed: false, limit: shape.capacity, remaining: 0, resetAfter: 0, retryAfter: 1,
                                          degraded: degraded, reason: .keyTableFull), false)
            }
            if let st { c.map[key] = Entry(state: st, fullAtMs: nowMs &+ o.msToFull, denialReported: false) }
            return (RateLimitDecision(o, shape: shape, degraded: degraded), false)
        }
    }

    func reset(_ key: String) { table.remove(key) }
}
