/// Why a take was decided the way it was (`BITSEC_RATE_LIMIT_REASON_*`).
public enum RateLimitReason: Int64, Sendable {
    /// Tokens were available.
    case ok = 0
    /// The bucket did not hold `cost` tokens.
    case limited = 1
    /// The in-process key table of the category is at `max_keys` and no bucket examined
    /// could be evicted (none idle, none at least half full): a new key is refused rather
    /// than evicting a bucket that is being drained (which would hand its owner a fresh
    /// burst). Counted in `bitsec_table_full_refusals_total`.
    case keyTableFull = 2
    /// Redis was unavailable and the category's failure policy is `deny`.
    case backendDeny = 3
    /// Redis was unavailable and the category's failure policy is `allow`.
    case backendAllow = 4
}

/// One take's decision: what `X-RateLimit-Limit/Remaining/Reset` and `Retry-After` need.
public struct RateLimitDecision: Sendable, Equatable {
    public var allowed: Bool
    /// The capacity of the bucket that decided (under the `local` failure policy, the
    /// configured share of the category's capacity).
    public var limit: Int64
    /// Whole tokens left after this take.
    public var remaining: Int64
    /// Seconds until the bucket is full again (0 when full).
    public var resetAfter: Int64
    /// Seconds to wait before `cost` tokens are available: >= 1 when denied, 0 when allowed.
    public var retryAfter: Int64
    /// True when Redis was unavailable and the failure policy decided.
    public var degraded: Bool
    public var reason: RateLimitReason

    public init(allowed: Bool, limit: Int64, remaining: Int64, resetAfter: Int64, retryAfter: Int64,
                degraded: Bool, reason: RateLimitReason) {
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.resetAfter = resetAfter
        self.retryAfter = retryAfter
        self.degraded = degraded
        self.reason = reason
    }

    /// The decision of a bucket outcome.
    @inline(__always)
    public init(_ o: BucketOutcome, shape: BucketShape, degraded: Bool) {
        self.allowed = o.allowed
        self.limit = shape.capacity
        self.remaining = o.level / shape.unit
        self.resetAfter = TokenBucket.seconds(o.msToFull)
        self.retryAfter = o.allowed ? 0 : max(1, TokenBucket.seconds(o.msToRetry))
        self.degraded = degraded
        self.reason = o.allowed ? .ok : .limited
    }

    /// `BITSEC_RATE_LIMIT_FLAG_DEGRADED`.
    public static let flagDegraded: Int64 = 1

    /// The ABI's `int64_t[BITSEC_RATE_LIMIT_DECISION_LEN]` layout.
    public var packed: (Int64, Int64, Int64, Int64, Int64, Int64, Int64) {
        (allowed ? 1 : 0, limit, remaining, resetAfter, retryAfter, degraded ? Self.flagDegraded : 0, reason.rawValue)
    }
}
