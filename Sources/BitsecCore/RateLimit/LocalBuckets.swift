/// The token buckets of one category kept in memory: in this process (store `process`, and
/// the `local` failure policy's fallback while Redis is unavailable) or in the host's shared
/// region (store `host`).
final class LocalBuckets: Sendable {
    struct Entry: Sendable, FixedLayoutValue {
        var state: BucketState
        /// The instant (ms) the bucket is full again: from then on the entry is idle.
        var fullAtMs: Int64
        /// A denial was already reported to the audit hook since the last allowed take.
        var denialReported: Bool

        init(state: BucketState, fullAtMs: Int64, denialReported: Bool) {
            self.state = state
            self.fullAtMs = fullAtMs
            self.denialReported = denialReported
        }

        /// level, lastMs, fullAtMs (8 bytes each), then the flag byte.
        static func storedSize(layout: Int) -> Int { 25 }

        init(loading p: UnsafeRawPointer, layout: Int) {
            state = BucketState(level: p.loadUnaligned(fromByteOffset: 0, as: Int64.self),
                                lastMs: p.loadUnaligned(fromByteOffset: 8, as: Int64.self))
            fullAtMs = p.loadUnaligned(fromByteOffset: 16, as: Int64.self)
            denialReported = p.load(fromByteOffset: 24, as: UInt8.self) != 0
        }

        func store(to p: UnsafeMutableRawPointer, layout: Int) {
            p.storeBytes(of: state.level, toByteOffset: 0, as: Int64.self)
            p.storeBytes(of: state.lastMs, toByteOffset: 8, as: Int64.self)
            p.storeBytes(of: fullAtMs, toByteOffset: 16, as: Int64.self)
            p.storeBytes(of: denialReported ? 1 : 0, toByteOffset: 24, as: UInt8.self)
        }
    }

    let shape: BucketShape
    let table: StateTable<Entry>

    /// - name: the `table` label of the metrics (`rate_limit:<category>`).
    ///
    /// Eviction when the table is full: a full bucket is idle (forgetting it changes nothing);
    /// next, the most refilled bucket among those at least half full (forgetting one gives
    /// its key back at most half the capacity, once). A bucket below half is never evicted:
    /// a key that is being limited stays limited; with no evictable bucket a new key's take
    /// is refused (`keyTableFull`).
    init(shape: BucketShape, maxKeys: Int, name: String = "rate_limit", placement: TablePlacement = .process) throws(BitsecError) {
        self.shape = shape
        // Milliseconds to regain half the capacity: a bucket that is at most this far from
        // full holds at least half of it.
        let halfMs = max(0, (shape.full / 2) / max(1, shape.rate))
        table = try StateTable.make(placement, name: name, maxKeys: maxKeys,
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
        return table.update(key, nowMs: nowMs) { (entry, makeRoom) -> (RateLimitDecision, Bool) in
            if var e = entry {
                var st: BucketState? = e.state
                let o = TokenBucket.take(&st, cost: cost, nowMs: nowMs, shape: shape)
                var first = false
                if o.allowed, let st {
                    e.state = st
                    e.fullAtMs = nowMs &+ o.msToFull
                    e.denialReported = false
                    entry = e
                } else if !o.allowed && !e.denialReported {
                    e.denialReported = true
                    entry = e
                    first = true
                }
                return (RateLimitDecision(o, shape: shape, degraded: degraded), first)
            }
            // A new key: its bucket starts full, so the take is allowed (cost <= capacity).
            var st: BucketState? = nil
            let o = TokenBucket.take(&st, cost: cost, nowMs: nowMs, shape: shape)
            guard makeRoom() else {
                return (RateLimitDecision(allowed: false, limit: shape.capacity, remaining: 0, resetAfter: 0, retryAfter: 1,
                                          degraded: degraded, reason: .keyTableFull), false)
            }
            if let st { entry = Entry(state: st, fullAtMs: nowMs &+ o.msToFull, denialReported: false) }
            return (RateLimitDecision(o, shape: shape, degraded: degraded), false)
        }
    }

    func reset(_ key: String) { table.remove(key) }
}
