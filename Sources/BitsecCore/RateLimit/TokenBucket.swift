/// The shape of one token bucket, in exact fixed point.
///
/// A bucket holds up to `capacity` tokens and gains `refill` tokens every `periodMs`
/// milliseconds, continuously. To keep every step an integer, one token is `periodMs` units
/// and the bucket gains `refill` units per millisecond: `refill` tokens per period exactly,
/// with no division, no float and no drift however the takes are spaced. The configuration
/// reader guarantees `capacity * periodMs <= 2^52`, so the same arithmetic is also exact in the
/// Redis Lua script, whose numbers are doubles.
public struct BucketShape: Sendable, Equatable {
    /// Tokens in a full bucket (the `X-RateLimit-Limit`).
    public let capacity: Int64
    /// Tokens regained per period.
    public let refill: Int64
    /// The period in milliseconds.
    public let periodMs: Int64

    /// Largest `capacity * periodMs`: integers up to 2^53 are exact in a double (Lua).
    public static let maxUnits: Int64 = 1 << 52

    public init(capacity: Int64, refill: Int64, periodMs: Int64) {
        self.capacity = capacity
        self.refill = refill
        self.periodMs = periodMs
    }

    /// Units of one token.
    @inline(__always) public var unit: Int64 { periodMs }
    /// Units gained per millisecond.
    @inline(__always) public var rate: Int64 { refill }
    /// Units of a full bucket.
    @inline(__always) public var full: Int64 { capacity &* periodMs }

    /// True when every product the arithmetic forms stays exact (also as a double).
    public var isExact: Bool {
        guard capacity > 0, refill > 0, periodMs > 0 else { return false }
        let (f, o) = capacity.multipliedReportingOverflow(by: periodMs)
        return !o && f <= Self.maxUnits && refill <= Self.maxUnits
    }

    /// A share (1...100 %) of this shape: capacity and refill scaled down, at least 1 each.
    public func share(percent: Int64) -> BucketShape {
        guard percent < 100 else { return self }
        return BucketShape(capacity: max(1, capacity * percent / 100), refill: max(1, refill * percent / 100), periodMs: periodMs)
    }
}

/// A bucket's stored state: its level in units and the instant (ms) it was last brought
/// up to date. A bucket with no state is full.
public struct BucketState: Sendable, Equatable {
    public var level: Int64
    public var lastMs: Int64

    public init(level: Int64, lastMs: Int64) {
        self.level = level
        self.lastMs = lastMs
    }
}

/// What one take decided, before it is turned into seconds.
public struct BucketOutcome: Sendable, Equatable {
    public var allowed: Bool
    /// The level after the take (units).
    public var level: Int64
    /// Milliseconds until the bucket is full again.
    public var msToFull: Int64
    /// Milliseconds until `cost` tokens are available (0 when allowed).
    public var msToRetry: Int64
}

/// The token-bucket arithmetic. The Lua script in `RedisScripts.swift` is a line-by-line
/// transcription of `take`; a test runs both on the same schedule.
public enum TokenBucket {
    /// ceil(a / b) for a >= 0, b > 0; 0 for a <= 0.
    @inline(__always)
    public static func ceilDiv(_ a: Int64, _ b: Int64) -> Int64 {
        guard a > 0 else { return 0 }
        let q = a / b
        return q * b == a ? q : q + 1
    }

    /// The state brought up to `nowMs`: refilled for the elapsed time, capped at full. A clock
    /// that went backwards (an explicit instant before the last one) refills nothing.
    @inline(__always)
    public static func refilled(_ state: BucketState?, nowMs: Int64, shape: BucketShape) -> BucketState {
        guard var s = state else { return BucketState(level: shape.full, lastMs: nowMs) }
        let full = shape.full
        if s.level > full { s.level = full }
        if s.level < 0 { s.level = 0 }
        if nowMs > s.lastMs {
            let (elapsed, o1) = nowMs.subtractingReportingOverflow(s.lastMs)
            let (gained, o2) = elapsed.multipliedReportingOverflow(by: shape.rate)
            if o1 || o2 || gained >= full - s.level { s.level = full } else { s.level += gained }
            s.lastMs = nowMs
        }
        return s
    }

    /// Takes `cost` tokens (1...capacity) at `nowMs` if they are there. `state` is updated
    /// only when the take is allowed (a denial changes nothing).
    @inline(__always)
    public static func take(_ state: inout BucketState?, cost: Int64, nowMs: Int64, shape: BucketShape) -> BucketOutcome {
        var s = refilled(state, nowMs: nowMs, shape: shape)
        let need = cost &* shape.unit
        if s.level >= need {
            s.level -= need
            state = s
            return BucketOutcome(allowed: true, level: s.level, msToFull: ceilDiv(shape.full - s.level, shape.rate), msToRetry: 0)
        }
        return BucketOutcome(allowed: false, level: s.level, msToFull: ceilDiv(shape.full - s.level, shape.rate),
                             msToRetry: ceilDiv(need - s.level, shape.rate))
    }

    /// Milliseconds to whole seconds, rounding up (headers are in seconds; rounding down
    /// would tell a client to come back before its tokens are there).
    @inline(__always)
    public static func seconds(_ ms: Int64) -> Int64 { ceilDiv(ms, 1000) }
}
