/// One runtime: everything built from one configuration document. Immutable after `open`
/// except through the capabilities' own atomic reloads, so it is shared between threads freely.
///
/// The configuration document has one section per capability; an absent section leaves its
/// operations answering `notConfigured`. Top-level fields:
///
/// - `allow_inline_secrets` (bool, default false): accept `{"value": ...}` secrets.
/// - `redis`: see `RedisConfig`.
///
/// Unknown fields anywhere are refused, with the field's path in the message.
public final class Runtime: Sendable {
    public let redis: RedisPool?
    public let allowInlineSecrets: Bool

    /// Section names in the order they are read; a capability adds its own here.
    public static let sections = ["redis"]

    private init(redis: RedisPool?, allowInlineSecrets: Bool) {
        self.redis = redis
        self.allowInlineSecrets = allowInlineSecrets
    }

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
        var redis: RedisPool? = nil
        if let o = try root.object("redis") {
            redis = RedisPool(config: try RedisConfig.read(o, context: ctx))
        }
        try root.finish()
        return Runtime(redis: redis, allowInlineSecrets: ctx.allowInlineSecrets)
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
        redis?.shutdown()
    }

    /// What is configured, as JSON, without any secret: for `make demo`, health endpoints
    /// and support tickets.
    public func describe() -> JSONValue {
        var sections: [(key: String, value: JSONValue)] = []
        if let redis {
            let c = redis.config
            sections.append(("redis", .object(JSONObject([
                ("endpoint", .string(c.endpointText)),
                ("db", .number(JSONNumber(int64: Int64(c.db)))),
                ("pool_size", .number(JSONNumber(int64: Int64(c.poolSize)))),
                ("connect_timeout_ms", .number(JSONNumber(int64: Int64(c.connectTimeoutMs)))),
                ("command_timeout_ms", .number(JSONNumber(int64: Int64(c.commandTimeoutMs)))),
                ("auth", .bool(c.password != nil)),
                ("key_prefix", .string(c.keyPrefix)),
            ]))))
        } else {
            sections.append(("redis", .null))
        }
        return .object(JSONObject([
            ("version", .string(BitsecVersion.string.description)),
            ("abi", .number(JSONNumber(int64: Int64(BitsecVersion.abi)))),
            ("openssl", .string(OpenSSL.versionText)),
            ("sections", .object(JSONObject(sections))),
        ]))
    }

    /// The Redis pool, or `notConfigured`.
    public func requireRedis() throws(BitsecError) -> RedisPool {
        guard let redis else { throw BitsecError(.notConfigured, "the redis section is not configured") }
        return redis
    }
}
