internal import Glibc
internal import Synchronization

/// One runtime: everything built from one configuration document. Immutable after `open`
/// except through the capabilities' own atomic reloads, so it is shared between threads freely.
///
/// The configuration document has one section per capability; an absent section leaves its
/// operations answering `notConfigured`. Top-level fields:
///
/// - `allow_inline_secrets` (bool, default false): accept `{"value": ...}` secrets.
/// - `redis`: see `RedisConfig`.
/// - `store`: where stateful features keep their state by default (`process`, `host`,
///   `redis`) and the shared region of the `host` store; see `StoreSettings`.
/// - `metrics`: the latency histograms; see `MetricsSettings`.
///
/// Unknown fields anywhere are refused, with the field's path in the message.
public final class Runtime: Sendable {
    public let redis: RedisPool?
    /// The `store` settings (and the shared region of the `host` store, when one is used).
    public let stores: StoreContext
    public let allowInlineSecrets: Bool
    public let audit: AuditService?
    public let rateLimits: RateLimitService?
    public let fields: FieldService?
    public let tokens: TokenService?
    public let permissions: PermissionService?
    public let totp: TOTPService?
    public let sessions: SessionService?
    public let csrf: CSRFService?
    public let passwords: PasswordService?
    /// Per-operation latency histograms (the `metrics` section), shared by the ABI's timed
    /// calls and the Redis pool's round trips.
    public let latency: LatencyHistograms
    /// Reloads shared with the other processes of the host region (nil without one).
    let hostReloads: HostReloads?
    /// Calls that crossed the C ABI on this runtime (every export taking the runtime handle
    /// adds one, relaxed: a statistic, not a synchronisation point; wraps at 2^64).
    private let abiCalls = Atomic<UInt64>(0)

    /// Counts one call through the C ABI (called by the ABI's runtime-handle lookup).
    public func countABICall() { abiCalls.wrappingAdd(1, ordering: .relaxed) }

    /// The calls through the C ABI on this runtime so far.
    public var abiCallCount: UInt64 { abiCalls.load(ordering: .relaxed) }

    private init(redis: RedisPool?, stores: StoreContext, allowInlineSecrets: Bool, audit: AuditService?, rateLimits: RateLimitService?,
                 fields: FieldService?, tokens: TokenService?, permissions: PermissionService?, totp: TOTPService?,
                 sessions: SessionService?, hostReloads: HostReloads?, latency: LatencyHistograms, csrf: CSRFService? = nil,
                 passwords: PasswordService? = nil) {
        self.sessions = sessions
        self.csrf = csrf
        self.hostReloads = hostReloads
        self.latency = latency
        self.redis = redis
        self.stores = stores
        self.allowInlineSecrets = allowInlineSecrets
        self.audit = audit
        self.rateLimits = rateLimits
        self.fields = fields
        self.tokens = tokens
        self.permissions = permissions
        self.totp = totp
        self.passwords = passwords
    }

    /// Reads one capability's section when present.
    private static func section<C: Capability>(_ root: ConfigObject, _ type: C.Type, _ ctx: CapabilityContext) throws(BitsecError) -> C? {
        guard let o = try root.object(C.sectionName) else { return nil }
        return try C.read(o, context: ctx)
    }

    /// The capabilities that are configured, in construction order.
    public var capabilities: [any Capability] {
        var out: [any Capability] = []
        if let audit { out.append(audit) }
        if let rateLimits { out.append(rateLimits) }
        if let fields { out.append(fields) }
        if let tokens { out.append(tokens) }
        if let permissions { out.append(permissions) }
        if let totp { out.append(totp) }
        if let sessions { out.append(sessions) }
        if let csrf { out.append(csrf) }
        if let passwords { out.append(passwords) }
        return out
    }

    /// Section names, in construction order (audit first: the others emit into it).
    public static let sectionNames = ["redis", AuditService.sectionName, RateLimitService.sectionName, FieldService.sectionName,
                                      TokenService.sectionName, PermissionService.sectionName, TOTPService.sectionName,
                                      SessionService.sectionName, CSRFService.sectionName, PasswordService.sectionName]

    /// Builds a runtime from a JSON configuration document.
    public static func open(config bytes: UnsafeRawBufferPointer) throws(BitsecError) -> Runtime {
        let doc: JSONValue
        do {
            doc = try JSONReader.parse(bytes, options: .init(maxBytes: Limits.maxConfigBytes, maxDepth: Limits.maxJSONDepth))
        } catch {
            throw BitsecError(error.status == .tooLarge ? .tooLarge : .config, "configuration: \(error.detail)")
        }
        let root = try ConfigObject(doc, path: "")
        let ctx = ConfigContext(allowInlineSecrets: try root.bool("allow_inline_secrets", default: false))
        _ = root.value("$schema")  // editors' schema hint, ignored
        let latency = LatencyHistograms(settings: try MetricsSettings.read(try root.object("metrics")))
        var redis: RedisPool? = nil
        if let o = try root.object("redis") {
            var rc = try RedisConfig.read(o, context: ctx)
            if latency.enabled { rc.latency = latency }
            redis = RedisPool(config: rc)
        }
        // Capabilities built so far; if a later section fails, they are shut down (a writer
        // thread or a connection must not outlive a runtime that never opened).
        var built: [any Capability] = []
        func keep<C: Capability>(_ c: C?) -> C? { if let c { built.append(c) }; return c }
        do {
            let stores = StoreContext(settings: try StoreSettings.read(try root.object("store"), hasRedis: redis != nil))
            var cc = CapabilityContext(config: ctx, redis: redis, audit: nil, stores: stores)
            let audit = keep(try section(root, AuditService.self, cc))
            cc = CapabilityContext(config: ctx, redis: redis, audit: audit.map { $0 as any AuditHook }, stores: stores)
            let rateLimits = keep(try section(root, RateLimitService.self, cc))
            cc = CapabilityContext(config: ctx, redis: redis, audit: cc.audit, rateLimits: rateLimits, stores: stores)
            let fields = keep(try section(root, FieldService.self, cc))
            cc = CapabilityContext(config: ctx, redis: redis, audit: cc.audit, rateLimits: rateLimits, fields: fields, stores: stores)
            let tokens = keep(try section(root, TokenService.self, cc))
            let permissions = keep(try section(root, PermissionService.self, cc))
            let totp = keep(try section(root, TOTPService.self, cc))
            let sessions = keep(try section(root, SessionService.self, CapabilityContext(
                config: ctx, redis: redis, audit: cc.audit, rateLimits: rateLimits, fields: fields, stores: stores, tokens: tokens)))
            // weak: the sessions hold the tokens; a strong capture would be a cycle that never frees either
            if let sessions, let tokens { tokens.onFamilyRevoked { [weak sessions] id, now in sessions?.familyRevoked(id: id, at: now) } }
            let csrf = keep(try section(root, CSRFService.self, cc))
            let passwords = keep(try section(root, PasswordService.self, cc))
            try root.finish()
            let reloads = try stores.hostReloads(config: bytes)
            return Runtime(redis: redis, stores: stores, allowInlineSecrets: ctx.allowInlineSecrets, audit: audit, rateLimits: rateLimits,
                           fields: fields, tokens: tokens, permissions: permissions, totp: totp, sessions: sessions,
                           hostReloads: reloads, latency: latency, csrf: csrf, passwords: passwords)
        } catch {
            for c in built.reversed() { c.shutdown() }
            redis?.shutdown()
            throw error
        }
    }

    public static func open(config text: String) throws(BitsecError) -> Runtime {
        let bytes = Array(text.utf8)
        return try bytes.withRawBytes { (raw) throws(BitsecError) -> Runtime in try open(config: raw) }
    }

    /// Reads the configuration from a file (bounded by `Limits.maxConfigBytes`).
    public static func open(configFile path: String) throws(BitsecError) -> Runtime {
        let bytes: [UInt8]
        do {
            bytes = try readFile(path, limit: Limits.maxConfigBytes)
        } catch {
            throw BitsecError(error.status == .tooLarge ? .tooLarge : .config, "configuration file: \(error.detail)")
        }
        return try bytes.withRawBytes { (raw) throws(BitsecError) -> Runtime in try open(config: raw) }
    }

    /// Stops background work and releases connections. Called once, by the ABI's close, after
    /// in-flight calls have drained.
    public func shutdown() {
        // Reverse construction order: audit last, so it records everything before it stops.
        for c in capabilities.reversed() { c.shutdown() }
        redis?.shutdown()
    }

    /// What is configured, as JSON, without any secret: for `make demo`, health endpoints
    /// and support tickets.
    /// The Prometheus text of `bitsec_metrics_text`: the audit counters (when the audit
    /// section exists), then the bounded in-process tables' gauges and counters, then the
    /// latency histograms of the configured capabilities (unless `metrics.histograms` is off),
    /// then the count of ABI calls on this runtime (`bitsec_abi_calls_total{pid}`, always present:
    /// a per-process series, like the histograms, since each worker process counts its own).
    public func metricsText() -> String {
        (audit?.metricsText() ?? "") + BoundedTableStats.prometheusText(capabilities.flatMap(\.boundedTables))
            + latency.prometheusText(timedOperations, redis: redis != nil)
            + "# HELP bitsec_abi_calls_total Calls through the C ABI on this runtime (per process).\n"
            + "# TYPE bitsec_abi_calls_total counter\n"
            + "bitsec_abi_calls_total{pid=\"\(getpid())\"} \(abiCalls.load(ordering: .relaxed))\n"
    }

    /// The timed operations of the configured capabilities, in a fixed order.
    public var timedOperations: [TimedOperation] {
        var ops: [TimedOperation] = []
        if tokens != nil { ops += [.tokenVerify, .tokenSign] }
        if permissions != nil { ops.append(.permissionCheck) }
        if rateLimits != nil { ops += [.rateLimitTake, .bruteforce, .loginGuard] }
        if totp != nil { ops += [.totpVerify, .backupCodeVerify] }
        if fields != nil { ops += [.fieldEncrypt, .fieldDecrypt] }
        if audit != nil { ops.append(.auditEmit) }
        return ops
    }

    public func describe() -> JSONValue {
        var sections: [(key: String, value: JSONValue)] = []
        if let redis {
            let c = redis.config
            var fields: [(key: String, value: JSONValue)] = [
                ("endpoint", .string(c.endpointText)),
                ("mode", .string(c.mode.rawValue)),
                ("db", .number(JSONNumber(int64: Int64(c.db)))),
                ("pool_size", .number(JSONNumber(int64: Int64(c.poolSize)))),
                ("connect_timeout_ms", .number(JSONNumber(int64: Int64(c.connectTimeoutMs)))),
                ("command_timeout_ms", .number(JSONNumber(int64: Int64(c.commandTimeoutMs)))),
                ("auth", .bool(c.password != nil)),
                ("key_prefix", .string(c.keyPrefix)),
            ]
            if let t = c.tls {
                // `verify: false` is shown here: a switched-off verification must be visible.
                var tf: [(key: String, value: JSONValue)] = [
                    ("verify", .bool(t.verify)),
                    ("client_certificate", .bool(t.certFile != nil)),
                ]
                if let ca = t.caFile { tf.append(("ca_file", .string(ca))) }
                if let n = t.serverName { tf.append(("server_name", .string(n))) }
                fields.append(("tls", .object(JSONObject(tf))))
            } else {
                fields.append(("tls", .bool(false)))
            }
            if c.mode == .sentinel {
                fields.append(("sentinels", .array(c.sentinels.map { .string("\($0.host):\($0.port)") })))
                fields.append(("master_name", .string(c.masterName)))
                fields.append(("primary", redis.currentPrimary.map { .string($0) } ?? .null))
            }
            if let cl = c.cluster {
                fields.append(("nodes", .array(cl.seeds.map { .string($0.text) })))
                fields.append(("cluster_refresh_ms", .number(JSONNumber(int64: Int64(cl.refreshMs)))))
                fields.append(("cluster_max_redirects", .number(JSONNumber(int64: Int64(cl.maxRedirects)))))
            }
            if c.waitReplicas > 0 {
                fields.append(("wait_replicas", .number(JSONNumber(int64: Int64(c.waitReplicas)))))
                fields.append(("wait_timeout_ms", .number(JSONNumber(int64: Int64(c.waitTimeoutMs)))))
            }
            sections.append(("redis", .object(JSONObject(fields))))
        } else {
            sections.append(("redis", .null))
        }
        sections.append(("store", stores.describe()))
        sections.append(("metrics", .object(JSONObject([
            ("histograms", .string(latency.settings.histograms.rawValue)),
            ("sample_every", .number(JSONNumber(int64: Int64(latency.settings.sampleEvery)))),
        ]))))
        let configured = capabilities
        for name in Self.sectionNames.dropFirst() {
            let c = configured.first { type(of: $0).sectionName == name }
            sections.append((name, c?.describe() ?? .null))
        }
        return .object(JSONObject([
            ("version", .string(BitsecVersion.string.description)),
            ("abi", .number(JSONNumber(int64: Int64(BitsecVersion.abi)))),
            ("openssl", .string(OpenSSL.versionText)),
            ("sections", .object(JSONObject(sections))),
        ]))
    }

    /// A configured capability, or `notConfigured` naming its section.
    @inline(__always)
    public func require<C: Capability>(_ c: C?) throws(BitsecError) -> C {
        guard let c else { throw BitsecError(.notConfigured, "the \(C.sectionName) section is not configured") }
        return c
    }

    // MARK: - Reloads that reach every worker on the host

    /// Applies the reloads other processes of the host region published since this runtime
    /// last caught up (see `HostReloads`). Called at the start of every ABI call: one atomic
    /// load when nothing changed, nothing at all without a host region.
    @inline(__always)
    public func followHostReloads() {
        guard let h = hostReloads, h.behind else { return }
        catchUpHostReloads(h)
    }

    @inline(never)
    private func catchUpHostReloads(_ h: HostReloads) {
        h.catchUp { (kind, payload) throws(BitsecError) in try apply(kind, payload) }
    }

    /// Applies one reload published by another process (without publishing it again).
    @inline(never)
    private func apply(_ kind: HostReloads.Kind, _ payload: [UInt8]) throws(BitsecError) {
        switch kind {
        case .tokenKeys:
            try tokens?.reload(jwks: payload)
        case .policy:
            try payload.withRawBytes { (p) throws(BitsecError) in try permissions?.loadPolicy(p) }
        case .shadowPolicy:
            try payload.withRawBytes { (p) throws(BitsecError) in try permissions?.loadShadowPolicy(p) }
        case .fieldKeys:
            try payload.withRawBytes { (p) throws(BitsecError) in try fields?.reload(section: p) }
        case .csrfKeys:
            try payload.withRawBytes { (p) throws(BitsecError) in try csrf?.reloadKeys(p) }
        }
    }

    /// Replaces the JWK Set keys (`TokenService.reload`) here and, with a host region, in
    /// every process of the host.
    public func reloadTokenKeys(_ jwks: UnsafeRawBufferPointer) throws(BitsecError) {
        try require(tokens).reload(jwks: Array(jwks))
        try publish(.tokenKeys, jwks)
    }

    /// Replaces the active policy (`PermissionService.loadPolicy`) here and, with a host
    /// region, in every process of the host.
    public func loadPolicy(_ policy: UnsafeRawBufferPointer) throws(BitsecError) {
        try require(permissions).loadPolicy(policy)
        try publish(.policy, policy)
    }

    /// Sets or removes the shadow policy here and, with a host region, in every process.
    public func loadShadowPolicy(_ policy: UnsafeRawBufferPointer) throws(BitsecError) {
        try require(permissions).loadShadowPolicy(policy)
        try publish(.shadowPolicy, policy)
    }

    /// Replaces the field keyring (`FieldService.reload`) here and, with a host region, in
    /// every process of the host.
    public func reloadFieldKeys(_ section: UnsafeRawBufferPointer) throws(BitsecError) {
        try require(fields).reload(section: section)
        try publish(.fieldKeys, section)
    }

    /// Replaces the CSRF keys (`CSRFService.reloadKeys`) here and, with a host region, in
    /// every process of the host.
    public func reloadCSRFKeys(_ keys: UnsafeRawBufferPointer) throws(BitsecError) {
        try require(csrf).reloadKeys(keys)
        try publish(.csrfKeys, keys)
    }

    private func publish(_ kind: HostReloads.Kind, _ payload: UnsafeRawBufferPointer) throws(BitsecError) {
        guard let h = hostReloads else { return }
        do {
            try h.publish(kind, payload)
        } catch {
            throw BitsecError(error.status, "applied in this process, but not published to the other processes of the host: \(error.detail)")
        }
    }

    /// The Redis pool, or `notConfigured`.
    public func requireRedis() throws(BitsecError) -> RedisPool {
        guard let redis else { throw BitsecError(.notConfigured, "the redis section is not configured") }
        return redis
    }
}
