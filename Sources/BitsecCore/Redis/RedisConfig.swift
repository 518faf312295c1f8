/// The `redis` configuration section: the one Redis every cluster-wide feature shares.
///
/// ```json
/// "redis": {
///   "host": "127.0.0.1", "port": 6379,        // or "unix_socket": "/run/redis.sock"
///   "db": 0,
///   "username": "bitsec",                      // optional (Redis 6 ACL user)
///   "password": {"env": "REDIS_PASSWORD"},     // optional, a secret reference
///   "connect_timeout_ms": 250, "command_timeout_ms": 250,
///   "pool_size": 8,
///   "reconnect_backoff_ms": 50, "reconnect_backoff_max_ms": 5000,
///   "key_prefix": "bitsec:"
/// }
/// ```
///
/// Redis Cluster: `"mode": "cluster"` with `"nodes"` instead of host/port (see
/// `RedisClusterSettings`); the other fields apply to every node.
public struct RedisConfig: Sendable {
    public enum Endpoint: Sendable, Equatable {
        case tcp(host: String, port: Int32)
        case unix(path: String)
    }

    public var endpoint: Endpoint
    public var db: Int
    public var username: String?
    public var password: SecretRef?
    public var connectTimeoutMs: Int
    public var commandTimeoutMs: Int
    public var poolSize: Int
    public var backoffInitialMs: Int
    public var backoffMaxMs: Int
    public var keyPrefix: String
    /// Set in cluster mode (`"mode": "cluster"`): the seeds and the routing settings.
    public var cluster: RedisClusterSettings? = nil

    public init(endpoint: Endpoint, db: Int = 0, username: String? = nil, password: SecretRef? = nil,
                connectTimeoutMs: Int = 250, commandTimeoutMs: Int = 250, poolSize: Int = 8,
                backoffInitialMs: Int = 50, backoffMaxMs: Int = 5000, keyPrefix: String = "bitsec:") {
        self.endpoint = endpoint
        self.db = db
        self.username = username
        self.password = password
        self.connectTimeoutMs = connectTimeoutMs
        self.commandTimeoutMs = commandTimeoutMs
        self.poolSize = poolSize
        self.backoffInitialMs = backoffInitialMs
        self.backoffMaxMs = backoffMaxMs
        self.keyPrefix = keyPrefix
    }

    public static func read(_ o: ConfigObject, context: ConfigContext) throws(BitsecError) -> RedisConfig {
        let mode = try o.choice("mode", ["standalone", "cluster"], default: "standalone")
        let cluster = mode == "cluster" ? try RedisClusterSettings.read(o) : nil
        let host = try o.string("host")
        let port = try o.int("port", in: 1...65535)
        let socket = try o.string("unix_socket")
        let endpoint: Endpoint
        if let cluster {
            endpoint = .tcp(host: cluster.seeds[0].host, port: cluster.seeds[0].port)
        } else if let socket {
            guard host == nil, port == nil else { throw .config("\(o.path): give either unix_socket or host/port, not both") }
            guard !socket.isEmpty, socket.utf8.count < 108 else { throw .config("\(o.fieldPath("unix_socket")) must be a socket path shorter than 108 bytes") }
            endpoint = .unix(path: socket)
        } else {
            let h = host ?? "127.0.0.1"
            guard !h.isEmpty, h.utf8.count <= 255, !h.utf8.contains(0) else { throw .config("\(o.fieldPath("host")) must be a host name or address") }
            endpoint = .tcp(host: h, port: Int32(port ?? 6379))
        }
        var cfg = RedisConfig(
            endpoint: endpoint,
            db: Int(try o.int("db", in: 0...1_000_000, default: 0)),
            username: try o.string("username"),
            password: try SecretRef.read(o, "password", context: context),
            connectTimeoutMs: Int(try o.int("connect_timeout_ms", in: 1...60_000, default: 250)),
            commandTimeoutMs: Int(try o.int("command_timeout_ms", in: 1...60_000, default: 250)),
            poolSize: Int(try o.int("pool_size", in: 1...1024, default: 8)),
            backoffInitialMs: Int(try o.int("reconnect_backoff_ms", in: 0...60_000, default: 50)),
            backoffMaxMs: Int(try o.int("reconnect_backoff_max_ms", in: 0...600_000, default: 5000)),
            keyPrefix: try o.string("key_prefix", default: "bitsec:")
        )
        cfg.cluster = cluster
        if cluster != nil {
            guard cfg.db == 0 else { throw .config("\(o.fieldPath("db")) must be 0 in cluster mode (a Redis Cluster has only database 0)") }
            // A brace in the prefix would become every key's hash tag: one slot for everything.
            guard !cfg.keyPrefix.utf8.contains(UInt8(ascii: "{")), !cfg.keyPrefix.utf8.contains(UInt8(ascii: "}")) else {
                throw .config("\(o.fieldPath("key_prefix")) must not contain { or } in cluster mode (it would put every key in one slot)")
            }
        }
        if cfg.username != nil && cfg.password == nil { throw .config("\(o.fieldPath("username")) needs a password") }
        try o.finish()
        return cfg
    }

    /// Where the server is, for messages and `describe` (no credentials).
    public var endpointText: String {
        if let cluster { return "cluster " + cluster.seeds.map(\.text).joined(separator: ",") }
        switch endpoint {
        case .tcp(let h, let p): return "\(h):\(p)"
        case .unix(let path): return "unix:\(path)"
        }
    }
}
