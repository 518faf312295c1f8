/// What a decision that needs Redis does while Redis is unavailable (`failure_policy`).
public enum BackendFailurePolicy: String, Sendable, CaseIterable {
    /// Decide with an in-process bucket holding a share of the limit (the default): the
    /// limit still holds per process, and recovery is automatic.
    case local
    /// Allow without counting (availability over protection).
    case allow
    /// Deny (protection over availability; for example logins).
    case deny

    static func read(_ o: ConfigObject, default d: BackendFailurePolicy = .local) throws(BitsecError) -> BackendFailurePolicy {
        let s = try o.choice("failure_policy", BackendFailurePolicy.allCases.map(\.rawValue), default: d.rawValue)
        return BackendFailurePolicy(rawValue: s) ?? d
    }
}

/// One named category of the `rate_limits` section.
public final class RateLimitCategory: Sendable {
    public let name: String
    public let shape: BucketShape
    public let failurePolicy: BackendFailurePolicy
    /// The share of the limit the in-process fallback bucket holds under the `local` policy.
    public let localSharePercent: Int64
    /// The buckets of the `process` and `host` stores.
    let buckets: LocalBuckets
    /// The fallback buckets used while Redis is unavailable (store `redis`, policy `local`):
    /// always in this process (the outage may be this host's alone).
    let fallback: LocalBuckets
    /// `<key_prefix>rl:{<name>:` as bytes: the Redis key is this, the caller's key, `}`.
    let redisKeyHead: [UInt8]
    /// The script's constant arguments (full, rate) and `need` for a cost of 1, RESP-encoded.
    let redisShapeArgs: [UInt8]
    let redisNeedOneArg: [UInt8]
    /// The name's bytes, for lookups straight from the ABI's buffer.
    let nameBytes: [UInt8]

    init(name: String, shape: BucketShape, failurePolicy: BackendFailurePolicy, localSharePercent: Int64, maxKeys: Int, keyPrefix: String,
         placement: TablePlacement = .process) throws(BitsecError) {
        self.name = name
        self.shape = shape
        self.failurePolicy = failurePolicy
        self.localSharePercent = localSharePercent
        buckets = try LocalBuckets(shape: shape, maxKeys: maxKeys, name: "rate_limit:\(name)", placement: placement)
        fallback = try LocalBuckets(shape: shape.share(percent: localSharePercent), maxKeys: maxKeys, name: "rate_limit_fallback:\(name)")
        redisKeyHead = Array("\(keyPrefix)rl:{\(name):".utf8)
        redisShapeArgs = RESPEncoder.arguments([Array(String(shape.full).utf8), Array(String(shape.rate).utf8)])
        redisNeedOneArg = RESPEncoder.arguments([Array(String(shape.unit).utf8)])
        nameBytes = Array(name.utf8)
    }

    /// ADR-007's categories: the section's default when `categories` is absent.
    static let adr007: [(String, Int64, Int64)] = [("default", 100, 60), ("auth", 10, 60), ("upload", 20, 300), ("inference", 50, 60)]

    /// Category names: 1-64 bytes of `A-Z a-z 0-9 _ - .` (they are part of Redis keys).
    static func validName(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= RateLimitLimits.maxCategoryBytes else { return false }
        return s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F || c == 0x2D || c == 0x2E
        }
    }

    func describe() -> JSONValue {
        .object(JSONObject([
            ("capacity", .number(JSONNumber(int64: shape.capacity))),
            ("refill", .number(JSONNumber(int64: shape.refill))),
            ("period_seconds", .number(JSONNumber(int64: shape.periodMs / 1000))),
            ("failure_policy", .string(failurePolicy.rawValue)),
            ("local_share_percent", .number(JSONNumber(int64: localSharePercent))),
        ]))
    }
}

/// Documented limits of the capability (mirrored in include/bitsec.h).
public enum RateLimitLimits {
    /// A caller's key (user id, IP, API key), in bytes (`BITSEC_RATE_LIMIT_MAX_KEY_BYTES`).
    public static let maxKeyBytes = 512
    /// A category name, in bytes (`BITSEC_RATE_LIMIT_MAX_CATEGORY_BYTES`).
    public static let maxCategoryBytes = 64
    /// Longest period or window: one year.
    public static let maxPeriodSeconds: Int64 = 366 * 86_400

    /// A key must be 1...maxKeyBytes bytes of UTF-8 (it becomes part of a Redis key and of
    /// audit events).
    @inline(__always)
    public static func checkKey(_ key: String) throws(BitsecError) {
        let n = key.utf8.count
        guard n > 0 else { throw .invalid("key is empty") }
        guard n <= maxKeyBytes else { throw .tooLarge("key: \(n) bytes exceeds the limit of \(maxKeyBytes)") }
    }

    /// The instant of a call in ms: `at` (Unix seconds) when positive; nil for "now".
    @inline(__always)
    public static func instantMs(_ at: Int64) throws(BitsecError) -> Int64? {
        guard at >= 0 else { throw .invalid("at must be >= 0 (0 means now)") }
        guard at > 0 else { return nil }
        guard at <= Int64.max / 1000 else { throw .invalid("at is out of range") }
        return at * 1000
    }

    @inline(__always)
    static func nowMs() -> Int64 { Clock.nowMicros() / 1000 }
}
