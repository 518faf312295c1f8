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
///   "key_prefix": "bitsec:",
///   "mode": "standalone",                      // or "sentinel" (see below)
///   "tls": {"ca_file": "...", "cert_file": "...", "key_file": "...", "server_name": "...", "verify": true},
///   "wait_replicas": 0, "wait_timeout_ms": 100
/// }
/// ```
///
/// `mode` is one of `standalone` (default), `sentinel` or `cluster`.
///
/// Sentinel mode replaces host/port/unix_socket with `"sentinels": ["10.0.0.1:26379", ...]`
/// and `"master_name": "mymaster"` (optional `sentinel_username`/`sentinel_password`): the
/// pool asks the sentinels for the primary, confirms it with `ROLE` and discovers it again
/// after a failover (`RedisPool`).
///
/// Redis Cluster: `"mode": "cluster"` with `"nodes"` instead of host/port (see
/// `RedisClusterSettings`); the other fields (TLS and credentials included) apply to every
/// node. With `wait_replicas`, the `WAIT` goes to the node that took the write, on the same
/// connection.
public struct RedisConfig: Sendable {
    public enum Endpoint: Sendable, Equatable {
        case tcp(host: String, port: Int32)
        case unix(path: String)
    }

    public enum Mode: String, Sendable { case standalone, sentinel, cluster }

    public var endpoint: Endpoint
    public var mode: Mode = .standalone
    /// Where connections record their round trips (`bitsec_redis_roundtrip_seconds`); set by
    /// the runtime from its `metrics` section, nil when histograms are off.
    public var latency: LatencyHistograms? = nil
    /// TLS for every connection (the server, and in sentinel mode the sentinels too).
    public var tls: RedisTLSConfig? = nil
    /// Sentinel mode: the sentinels' addresses, the primary's name, their credentials.
    public var sentinels: [(host: String, port: Int32)] = []
    public var masterName: String = ""
    public var sentinelUsername: String? = nil
    public var sentinelPassword: SecretRef? = nil
    /// After an acknowledged revocation or TOTP claim: `WAIT waitReplicas waitTimeoutMs`
    /// (0: no WAIT).
    public var waitReplicas: Int = 0
    public var waitTimeoutMs: Int = 100
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

    /// Parses `host:port`, `[v6]:port` (a sentinel's address).
    static func hostPort(_ text: String, field: String) throws(BitsecError) -> (host: String, port: Int32) {
        guard let colon = text.lastIndex(of: ":") else { throw .config("\(field) must be host:port, got \(text)") }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard let p = Int32(text[text.index(after: colon)...]), (1...65535).contains(p),
              !host.isEmpty, host.utf8.count <= 255, !host.utf8.contains(0) else {
            throw .config("\(field) must be host:port, got \(text)")
        }
        return (host, p)
    }

    public static func read(_ o: ConfigObject, context: ConfigContext) throws(BitsecError) -> RedisConfig {
        let mode = try o.choice("mode", ["standalone", "sentinel", "cluster"], default: "standalone")
        let cluster = mode == "cluster" ? try RedisClusterSettings.read(o) : nil
        let host = try o.string("host")
        let port = try o.int("port", in: 1...65535)
        let socket = try o.string("unix_socket")
        let endpoint: Endpoint
        var sentinels: [(host: String, port: Int32)] = []
        var masterName = ""
        if mode == "sentinel" {
            guard host == nil, port == nil, socket == nil else {
                throw .config("\(o.path): host, port and unix_socket name a standalone server; sentinel mode finds the primary through sentinels")
            }
            guard let list = try o.stringArray("sentinels"), !list.isEmpty, list.count <= 64 else {
                throw .config("\(o.fieldPath("sentinels")) is required in sentinel mode: [\"host:port\", ...] (1 to 64)")
            }
            for (k, item) in list.enumerated() { sentinels.append(try hostPort(item, field: "\(o.fieldPath("sentinels"))[\(k)]")) }
            masterName = try o.requiredString("master_name")
            guard !masterName.isEmpty, masterName.utf8.count <= 255 else { throw .config("\(o.fieldPath("master_name")) must not be empty") }
            endpoint = .tcp(host: sentinels[0].host, port: sentinels[0].port)  // replaced by the discovered primary
        } else if o.has("sentinels") || o.has("master_name") || o.has("sentinel_username") || o.has("sentinel_password") {
            throw .config("\(o.path): sentinels, master_name and sentinel credentials need \"mode\": \"sentinel\"")
        } else if let cluster {
            endpoint = .tcp(host: cluster.seeds[0].host, port: cluster.seeds[0].port)  // a seed; the router connects per node
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
        cfg.mode = mode == "sentinel" ? .sentinel : mode == "cluster" ? .cluster : .standalone
        cfg.sentinels = sentinels
        cfg.masterName = masterName
        if cfg.mode == .sentinel {
            cfg.sentinelUsername = try o.string("sentinel_username")
            cfg.sentinelPassword = try SecretRef.read(o, "sentinel_password", context: context)
            if cfg.sentinelUsername != nil && cfg.sentinelPassword == nil {
                throw .config("\(o.fieldPath("sentinel_username")) needs sentinel_password")
            }
        }
        if let t = try o.object("tls") {
            if case .unix = cfg.endpoint { throw .config("\(o.fieldPath("tls")) needs host/port (TLS over a unix socket is not supported)") }
            cfg.tls = try RedisTLSConfig.read(t, context: context)
        }
        cfg.waitReplicas = Int(try o.int("wait_replicas", in: 0...64, default: 0))
        // WAIT with timeout 0 blocks forever: a bound is required.
        cfg.waitTimeoutMs = Int(try o.int("wait_timeout_ms", in: 1...60_000, default: 100))
        try o.finish()
        return cfg
    }

    /// The same settings aimed at another server (a discovered primary, a cluster node): TLS,
    /// credentials and timeouts carry over.
    public func aimed(at host: String, port: Int32) -> RedisConfig {
        var c = self
        c.endpoint = .tcp(host: host, port: port)
        c.mode = .standalone
        c.cluster = nil
        return c
    }

    /// Settings to talk to one sentinel: the sentinel credentials, db 0, TLS as configured.
    func sentinelConfig(_ host: String, _ port: Int32) -> RedisConfig {
        var c = aimed(at: host, port: port)
        c.username = sentinelUsername
        c.password = sentinelPassword
        c.db = 0
        return c
    }

    /// Where the server is, for messages and `describe` (no credentials).
    public var endpointText: String {
        if mode == .sentinel {
            return "sentinel master \(masterName)"
        }
        if let cluster { return "cluster " + cluster.seeds.map(\.text).joined(separator: ",") }
        switch endpoint {
        case .tcp(let h, let p): return "\(h):\(p)"
        case .unix(let path): return "unix:\(path)"
        }
    }
}
