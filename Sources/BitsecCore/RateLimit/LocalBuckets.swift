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

    /// - name: the `table` label of the metrics (`rate_limit:<category>`).
    ///
    /// Eviction when the table is full: a full bucket is idle (forgetting it changes nothing);
    /// next, the most refilled bucket among those at least half full (forgetting one gives
    /// its key back at most half the capacity, once). A bucket below half is never evicted:
    /// a key that is being limited stays limited; with no evictable bucket a new key's take
    /// is refused (`keyTableFull`).
    init(shape: BucketShape, maxKeys: Int, name: String = "rate_limit") {
        self.shape = shape
        // Milliseconds to regain half the capacity: a bucket that is at most this far from
        // full holds at least half of it.
        let halfMs = max(0, (shape.full / 2) / max(1, shape.rate))
        table = ShardedTable(name: name, maxKeys: maxKeys,
                             idle: { e, now in now >= e.fullAtMs },
                             rank: { e, now in
                                 let toFull = e.fullAtMs &- now
                                 return toFull <= halfMs ? toFull : nil
                             })
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
