import Testing
import Glibc
import BitsecCore

/// The real redis-server of the shared fixture (tools/redis_fixture.py; `make test` wraps
/// `swift test` with it). A missing server is a test failure, never a skip.
enum TestRedis {
    static var port: Int32? {
        guard let p = getenv("BITSEC_TEST_REDIS_PORT"), let n = Int32(String(cString: p)) else {
            Issue.record("BITSEC_TEST_REDIS_PORT is not set: run the tests through tools/redis_fixture.py (make test does)")
            return nil
        }
        return n
    }

    static var socketPath: String? {
        guard let p = getenv("BITSEC_TEST_REDIS_SOCKET") else {
            Issue.record("BITSEC_TEST_REDIS_SOCKET is not set: run the tests through tools/redis_fixture.py")
            return nil
        }
        return String(cString: p)
    }

    /// An environment variable of the fixture (its absence is recorded as an issue).
    static func env(_ name: String) -> String? {
        guard let p = getenv(name) else {
            Issue.record("\(name) is not set: run the tests through tools/redis_fixture.py (make test does)")
            return nil
        }
        return String(cString: p)
    }

    /// A comma-separated address list of the fixture as a JSON array of strings.
    static func list(_ name: String) -> String? {
        guard let v = env(name) else { return nil }
        return "[" + v.split(separator: ",").map { "\"\($0)\"" }.joined(separator: ", ") + "]"
    }

    static func config(_ extra: String = "") -> String? {
        guard let port else { return nil }
        return #"{"redis": {"host": "127.0.0.1", "port": \#(port), "command_timeout_ms": 1000\#(extra)}}"#
    }
}

/// A TCP port on loopback where nothing listens.
func closedPort() -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    close(fd)
    return Int32(UInt16(bigEndian: addr.sin_port))
}

/// A server that accepts TCP connections (the kernel completes the handshake) and never
/// answers: the listening socket is never accept()ed. Close it with `close(fd)`.
func silentServer() -> (fd: Int32, port: Int32) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    listen(fd, 64)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return (fd, Int32(UInt16(bigEndian: addr.sin_port)))
}

func expectError(_ status: Status, _ fragment: String? = nil, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected \(status), got success", sourceLocation: sourceLocation)
    } catch let e as BitsecError {
        #expect(e.status == status, "detail: \(e.detail)", sourceLocation: sourceLocation)
        if let fragment { #expect(e.detail.contains(fragment), "detail: \(e.detail)", sourceLocation: sourceLocation) }
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
}

/// One store a semantics test runs against: in process, the host store, or Redis in one of
/// its deployment modes (a standalone server, the fixture's six-node cluster, its TLS-only
/// server with a client certificate, or a primary behind its three sentinels). Every Redis
/// mode is `StoreKind.redis`; `kind == .redis` is true for each of them.
enum TestStore: Sendable, Hashable, CustomStringConvertible {
    case process, host, redisStandalone, redisCluster, redisTLS, redisSentinel

    var kind: StoreKind {
        switch self {
        case .process: .process
        case .host: .host
        case .redisStandalone, .redisCluster, .redisTLS, .redisSentinel: .redis
        }
    }

    /// The store's configuration name ("process", "host", "redis").
    var rawValue: String { kind.rawValue }

    var description: String {
        switch self {
        case .process: "process"
        case .host: "host"
        case .redisStandalone: "redis"
        case .redisCluster: "redis-cluster"
        case .redisTLS: "redis-tls"
        case .redisSentinel: "redis-sentinel"
        }
    }

    /// The Redis modes a test run covers: BITSEC_TEST_REDIS_MODES (comma-separated among
    /// standalone, cluster, tls, sentinel), all four when unset. The sanitizer targets of the
    /// Makefile set it to `standalone`: the other modes run once, in the normal run.
    static let redisModes: [TestStore] = {
        let all: [(String, TestStore)] = [("standalone", .redisStandalone), ("cluster", .redisCluster), ("tls", .redisTLS), ("sentinel", .redisSentinel)]
        guard let p = getenv("BITSEC_TEST_REDIS_MODES") else { return all.map(\.1) }
        let wanted = String(cString: p).split(separator: ",").map { part in String(part.filter { c in c != " " }) }
        let unknown = wanted.filter { w in !all.contains { $0.0 == w } }
        if !unknown.isEmpty { print("BITSEC_TEST_REDIS_MODES: unknown mode(s) \(unknown) ignored (tools/redis_fixture.py refuses them)") }
        return all.filter { wanted.contains($0.0) }.map(\.1)
    }()
}

func == (a: TestStore, b: StoreKind) -> Bool { a.kind == b }
func != (a: TestStore, b: StoreKind) -> Bool { a.kind != b }
func == (a: StoreKind, b: TestStore) -> Bool { a == b.kind }
func != (a: StoreKind, b: TestStore) -> Bool { a != b.kind }

/// The stores every semantics suite runs against, defined once. A parametrised test opens its
/// runtime with one of them through the real configuration path (`store.default`), so the
/// same assertions pin the same decisions in every store and in every Redis mode.
enum TestStores {
    static let kinds: [TestStore] = [.process, .host] + TestStore.redisModes

    /// The stores whose tables are bounded in memory (widening, eviction, table-full refusals).
    static var boundedKinds: [TestStore] { kinds.filter { $0 != .redis } }

    /// Where the host store's test regions go: the directory `tools/redis_fixture.py run`
    /// makes for the run and removes after it (else /tmp).
    static let regionDirectory: String = {
        if let p = getenv("BITSEC_TEST_REGION_DIR") { return String(cString: p) }
        return "/tmp"
    }()

    /// A name no other runtime of this test run uses (a Redis key prefix, a region name).
    static func uniqueName(_ tag: String) -> String {
        "\(tag)-\(getpid())-\(Clock.nowMicros())-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// The top-level members that put every stateful feature of a runtime in `kind`, with state
    /// of its own (a fresh key prefix, a fresh region). Nil (recorded as an issue) when the
    /// test run has no Redis.
    static func members(_ kind: TestStore) -> String? {
        let redis = #""store": {"default": "redis"}"#
        let common = #""command_timeout_ms": 1000, "key_prefix": "\#(uniqueName("t"))""#
        switch kind {
        case .process:
            return #""store": {"default": "process"}"#
        case .redisStandalone:
            guard let port = TestRedis.port else { return nil }
            return #""redis": {"host": "127.0.0.1", "port": \#(port), \#(common)}, \#(redis)"#
        case .redisCluster:
            guard let nodes = TestRedis.list("BITSEC_TEST_REDIS_CLUSTER_NODES") else { return nil }
            return #""redis": {"mode": "cluster", "nodes": \#(nodes), \#(common)}, \#(redis)"#
        case .redisTLS:
            guard let port = TestRedis.env("BITSEC_TEST_REDIS_TLS_PORT"), let ca = TestRedis.env("BITSEC_TEST_REDIS_TLS_CA"),
                  let cert = TestRedis.env("BITSEC_TEST_REDIS_TLS_CERT"), let key = TestRedis.env("BITSEC_TEST_REDIS_TLS_KEY") else { return nil }
            return #""redis": {"host": "127.0.0.1", "port": \#(port), \#(common), "tls": {"ca_file": "\#(ca)", "cert_file": "\#(cert)", "key_file": "\#(key)"}}, \#(redis)"#
        case .redisSentinel:
            guard let sentinels = TestRedis.list("BITSEC_TEST_REDIS_SENTINELS"),
                  let master = TestRedis.env("BITSEC_TEST_REDIS_SENTINEL_MASTER") else { return nil }
            return #""redis": {"mode": "sentinel", "sentinels": \#(sentinels), "master_name": "\#(master)", \#(common)}, \#(redis)"#
        case .host:
            return #""store": {"default": "host", "host": {"name": "\#(uniqueName("t"))", "directory": "\#(regionDirectory)", "max_bytes": 33554432}}"#
        }
    }

    /// A configuration document: `members(kind)` and `sections` (JSON members, no braces).
    static func document(_ kind: TestStore, _ sections: String) -> String? {
        guard let m = members(kind) else { return nil }
        return "{" + m + (sections.isEmpty ? "" : ", " + sections) + "}"
    }

    /// A runtime whose features are all in `kind`.
    static func runtime(_ kind: TestStore, _ sections: String) throws -> Runtime? {
        guard let doc = document(kind, sections) else { return nil }
        return try Runtime.open(config: doc)
    }

    /// A second runtime sharing the state of `rt` (same Redis prefix, same region), for the
    /// stores that share between runtimes; nil for `process`.
    static func peer(of doc: String, _ kind: TestStore) throws -> Runtime? {
        guard kind != .process else { return nil }
        return try Runtime.open(config: doc)
    }

    /// The context a capability section is read with inside `rt` (its Redis pool and stores),
    /// with an audit hook of the test's own.
    static func context(_ rt: Runtime, audit: (any AuditHook)?, allowInlineSecrets: Bool = true) -> CapabilityContext {
        CapabilityContext(config: ConfigContext(allowInlineSecrets: allowInlineSecrets), redis: rt.redis, audit: audit, stores: rt.stores)
    }
}
