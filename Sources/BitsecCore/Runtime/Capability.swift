/// What every capability (tokens, permissions, rate limits, TOTP, fields, audit) provides to
/// the runtime: how to read its configuration section, describe itself and shut down.
public protocol Capability: AnyObject, Sendable {
    /// The configuration section's name (`tokens`, `permissions`, ...).
    static var sectionName: String { get }
    /// Reads and validates the section (call `o.finish()` to refuse unknown fields).
    static func read(_ o: ConfigObject, context: CapabilityContext) throws(BitsecError) -> Self
    /// What is configured, without any secret (for `bitsec_runtime_describe`).
    func describe() -> JSONValue
    /// Stops background work and releases resources; called once, after calls have drained.
    func shutdown()
    /// The bounded in-process tables keyed by client input that this capability uses
    /// (their counters appear in `bitsec_metrics_text`).
    var boundedTables: [BoundedTableStats] { get }
}

extension Capability {
    public func shutdown() {}
    public var boundedTables: [BoundedTableStats] { [] }
}

/// What a capability can use while it is built: the configuration context, the shared Redis
/// pool (nil when the document has no `redis` section), the runtime's stores (the `store`
/// section and the shared region of the `host` store), the audit hook (nil without an
/// `audit` section) and the capabilities built before it.
public struct CapabilityContext: Sendable {
    public let config: ConfigContext
    public let redis: RedisPool?
    public let stores: StoreContext
    public let audit: (any AuditHook)?
    public let rateLimits: RateLimitService?
    public let fields: FieldService?
    /// The token service (for the sessions, whose endings revoke their tokens).
    public let tokens: TokenService?

    public init(config: ConfigContext, redis: RedisPool?, audit: (any AuditHook)?,
                rateLimits: RateLimitService? = nil, fields: FieldService? = nil, stores: StoreContext? = nil,
                tokens: TokenService? = nil) {
        self.config = config
        self.redis = redis
        self.stores = stores ?? StoreContext(settings: StoreSettings(hasRedis: redis != nil))
        self.audit = audit
        self.rateLimits = rateLimits
        self.fields = fields
        self.tokens = tokens
    }
}
