/// The cluster part of the `redis` section (`"mode": "cluster"`):
///
/// ```json
/// "redis": {
///   "mode": "cluster",
///   "nodes": ["10.0.0.1:6379", "10.0.0.2:6379"],   // seeds: any reachable one gives the map
///   "cluster_refresh_ms": 5000,                     // periodic slot-map refresh
///   "cluster_max_redirects": 5                      // MOVED/ASK/TRYAGAIN/... per command
/// }
/// ```
///
/// Every other field of the section (credentials, timeouts, `pool_size` per node, backoff,
/// `key_prefix`) applies to each node; `host`, `port` and `unix_socket` are not allowed and
/// `db` must be 0 (a cluster has only database 0).
public struct RedisClusterSettings: Sendable, Equatable {
    public struct Node: Sendable, Hashable {
        public var host: String
        public var port: Int32
        public init(host: String, port: Int32) { self.host = host; self.port = port }
        public var text: String { "\(host):\(port)" }
    }

    public var seeds: [Node]
    public var refreshMs: Int
    public var maxRedirects: Int

    public init(seeds: [Node], refreshMs: Int = 5000, maxRedirects: Int = 5) {
        self.seeds = seeds
        self.refreshMs = refreshMs
        self.maxRedirects = maxRedirects
    }

    /// Reads the cluster fields of `o` (its `mode` is `cluster`).
    static func read(_ o: ConfigObject) throws(BitsecError) -> RedisClusterSettings {
        for f in ["host", "port", "unix_socket"] where o.has(f) {
            throw .config("\(o.fieldPath(f)) is not used in cluster mode: list the nodes in \(o.fieldPath("nodes"))")
        }
        guard let list = try o.stringArray("nodes"), !list.isEmpty else {
            throw .config("\(o.fieldPath("nodes")) must list at least one \"host:port\" in cluster mode")
        }
        guard list.count <= 64 else { throw .config("\(o.fieldPath("nodes")) lists more than 64 nodes") }
        var seeds: [Node] = []
        for s in list {
            guard let n = parse(s) else { throw .config("\(o.fieldPath("nodes")): \"\(s)\" is not \"host:port\"") }
            if !seeds.contains(n) { seeds.append(n) }
        }
        return RedisClusterSettings(
            seeds: seeds,
            refreshMs: Int(try o.int("cluster_refresh_ms", in: 100...3_600_000, default: 5000)),
            maxRedirects: Int(try o.int("cluster_max_redirects", in: 1...100, default: 5)))
    }

    /// `host:port`, `[v6]:port`; the port 1...65535.
    public static func parse(_ s: String) -> Node? {
        let u = Array(s.utf8)
        guard let colon = u.lastIndex(of: UInt8(ascii: ":")), colon > 0, colon < u.count - 1, u.count <= 300,
              !u.contains(0) else { return nil }
        var host = Array(u[..<colon])
        if host.first == UInt8(ascii: "["), host.last == UInt8(ascii: "]") { host = Array(host.dropFirst().dropLast()) }
        guard !host.isEmpty, host.count <= 255, let port = Int32(String(decoding: u[(colon + 1)...], as: UTF8.self)),
              (1...65535).contains(port) else { return nil }
        return Node(host: String(decoding: host, as: UTF8.self), port: port)
    }
}
