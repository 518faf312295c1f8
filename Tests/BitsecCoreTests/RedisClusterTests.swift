// Redis Cluster mode against the fixture's real six-node cluster (three primaries, three
// replicas): slots, routing, every Redis-backed operation compared with a standalone server,
// resharding and a killed primary under load.
import Testing
import Glibc
import Synchronization
import BitsecCore

/// The fixture's cluster (tools/redis_fixture.py exports its nodes and directory).
enum TestCluster {
    static var nodes: [String]? {
        guard let p = getenv("BITSEC_TEST_REDIS_CLUSTER_NODES") else {
            Issue.record("BITSEC_TEST_REDIS_CLUSTER_NODES is not set: run the tests through tools/redis_fixture.py (make test does)")
            return nil
        }
        return String(cString: p).split(separator: ",").map(String.init)
    }

    static var dir: String? {
        guard let p = getenv("BITSEC_TEST_REDIS_CLUSTER_DIR") else {
            Issue.record("BITSEC_TEST_REDIS_CLUSTER_DIR is not set: run the tests through tools/redis_fixture.py")
            return nil
        }
        return String(cString: p)
    }

    /// The `redis` section in cluster mode (all nodes as seeds).
    static func section(_ extra: String = "") -> String? {
        guard let nodes else { return nil }
        let list = nodes.map { "\"\($0)\"" }.joined(separator: ", ")
        return #"{"mode": "cluster", "nodes": [\#(list)], "command_timeout_ms": 1000, "reconnect_backoff_ms": 20, "reconnect_backoff_max_ms": 200\#(extra)}"#
    }

    /// A standalone pool on one node (administration: CLUSTER, MIGRATE).
    static func admin(_ node: RedisCluster.Node) -> RedisPool {
        RedisPool(config: RedisConfig(endpoint: .tcp(host: node.host, port: node.port), commandTimeoutMs: 5000))
    }

    static func pid(_ node: RedisCluster.Node) -> pid_t? {
        guard let dir, let f = fopen("\(dir)/\(node.port)/redis.pid", "r") else { return nil }
        defer { fclose(f) }
        var buf = [CChar](repeating: 0, count: 32)
        guard fgets(&buf, 32, f) != nil else { return nil }
        let text = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return pid_t(text.filter(\.isNumber))
    }

    /// Starts a killed node again with its configuration file (it rejoins as a replica).
    static func restart(_ node: RedisCluster.Node) -> Bool {
        guard let dir else { return false }
        let conf = "\(dir)/\(node.port)/redis.conf"
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("redis-server"), strdup(conf), nil]
        defer { for a in argv { free(a) } }
        // Not the test's stdin/stdout/stderr: the test runner reads the test's output until
        // every holder of the pipe has closed it, and this server outlives the test.
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd in Int32(0)...2 { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0) }
        return posix_spawnp(&pid, "redis-server", &actions, nil, argv, environ) == 0
    }

    static func info(_ node: RedisCluster.Node) -> String {
        (try? admin(node).command("CLUSTER", "INFO").text) ?? ""
    }

    /// Until every listed node answers `cluster_state:ok` (bounded).
    static func waitOK(_ nodes: [RedisCluster.Node], seconds: Int = 30) -> Bool {
        for _ in 0..<(seconds * 20) {
            if nodes.allSatisfy({ info($0).contains("cluster_state:ok") }) { return true }
            usleep(50_000)
        }
        return false
    }
}

private func node(_ s: String) -> RedisCluster.Node {
    let parts = s.split(separator: ":")
    return RedisCluster.Node(host: String(parts[0]), port: Int32(parts[1]) ?? 0)
}

private func clusterRuntime(_ sections: String, prefix: String, extra: String = "") throws -> Runtime? {
    guard let redis = TestCluster.section(#", "key_prefix": "\#(prefix)""# + extra) else { return nil }
    return try Runtime.open(config: #"{"allow_inline_secrets": true, "redis": \#(redis), \#(sections)}"#)
}

private func standaloneRuntime(_ sections: String, prefix: String) throws -> Runtime? {
    guard let port = TestRedis.port else { return nil }
    return try Runtime.open(config: #"{"allow_inline_secrets": true, "redis": {"host": "127.0.0.1", "port": \#(port), "command_timeout_ms": 1000, "key_prefix": "\#(prefix)"}, \#(sections)}"#)
}

private func unique(_ s: String) -> String { "\(s)\(getpid())-\(Clock.nowMicros()):" }

private let sections = #"""
"rate_limits": {"store": "redis", "categories": {"default": {"capacity": 5, "period_seconds": 60}},
  "brute_force": {"max_failures": 3, "window_seconds": 600, "block_seconds": 600},
  "login_guard": {"client": {"max_failures": 3, "window_seconds": 600, "block_seconds": 600},
                  "account": {"free_failures": 2, "base_delay_seconds": 1, "max_delay_seconds": 60, "max_failures": 20, "window_seconds": 600}}},
"tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "0123456789abcdef0123456789abcdef"}}], "issuer": "iss", "audience": "aud", "cache_size": 0},
"totp": {"state": "redis", "backup_codes": {"iterations": 1000}}
"""#

private func rawT<R>(_ s: String, _ body: (UnsafeRawBufferPointer) throws(BitsecError) -> R) throws(BitsecError) -> R {
    try Array(s.utf8).withRawBytes(body)
}

private func string(_ o: JSONObject, _ k: String) -> String {
    if case .string(let s)? = o[k] { return s }
    return ""
}

/// Every Redis-backed operation, at explicit instants, as a transcript of the decisions.
private func transcript(_ rt: Runtime, totpSecret: String, backup: BackupCodes.Batch, now: Int64) throws -> [String] {
    var out: [String] = []
    let rl = try #require(rt.rateLimits)
    let t0: Int64 = 1_800_000_000
    let keys = (0..<12).map { "client-\($0)" }
    // Rate limits: take until denied, a take of cost 3, reset, take again.
    for k in keys {
        for i in 0..<7 { out.append("take \(k) \(i): \(try rl.take(category: "default", key: k, at: t0 + Int64(i)))") }
        out.append("take3 \(k): \(try rl.take(category: "default", key: k + "-3", cost: 3, at: t0))")
        try rl.reset(category: "default", key: k)
        out.append("after reset \(k): \(try rl.take(category: "default", key: k, at: t0 + 8))")
    }
    // Brute force: failures up to the block, check, success, reset.
    for k in keys {
        for i in 0..<4 { out.append("bf fail \(k) \(i): \(try rl.bruteForce.recordFailure(key: k, at: t0 + Int64(i)))") }
        out.append("bf check \(k): \(try rl.bruteForce.check(key: k, at: t0 + 5))")
        out.append("bf success \(k): \(try rl.bruteForce.recordSuccess(key: k, at: t0 + 6))")
        try rl.bruteForce.reset(key: k)
        out.append("bf after reset \(k): \(try rl.bruteForce.check(key: k, at: t0 + 7))")
    }
    // Login guard: begin/succeeded, begin/cancel, failures (begin without an outcome).
    for (i, k) in keys.enumerated() {
        let account = "user\(i)", client = "10.0.\(i).1"
        let a = try rl.loginGuard.begin(account: account, client: client, at: t0)
        out.append("lg begin \(k): \(a)")
        try rl.loginGuard.succeeded(account: account, client: client, ticket: a.ticket, at: t0)
        let b = try rl.loginGuard.begin(account: account, client: client, at: t0 + 1)
        try rl.loginGuard.cancel(account: account, client: client, ticket: b.ticket, at: t0 + 1)
        out.append("lg cancel \(k): \(b)")
        for j in 0..<4 { out.append("lg fail \(k) \(j): \(try rl.loginGuard.begin(account: account, client: client, at: t0 + 2 + Int64(j)))") }
    }
    // Revocation: jti with and without the subject, session, subject; verification checks them.
    let tokens = try #require(rt.tokens)
    for i in 0..<9 {
        let sub = "subject-\(i)"
        var pairs: [(access: String, session: String)] = []
        for _ in 0..<4 {
            let p = try rawT(#"{"sub": "\#(sub)"}"#) { (raw) throws(BitsecError) -> [UInt8] in try tokens.issuePair(claims: raw, kid: nil, at: now) }
            guard case .object(let o) = try JSONReader.parse(p) else { throw BitsecError.invalid("not an object") }
            pairs.append((string(o, "access_token"), string(o, "session_id")))
        }
        let claims = try pairs.map { try #require(try tokens.verify($0.access, at: now).claims) }
        out.append("verify \(i): \(try tokens.verify(pairs[0].access, at: now).reason)")
        out.append("revoke jti \(i): \(try tokens.revoke(jti: try #require(claims[0].jti), exp: try #require(claims[0].exp), at: now))")
        out.append("revoke claims \(i): \(try tokens.revoke(claims[1], at: now))")
        out.append("revoke claims again \(i): \(try tokens.revoke(claims[1], at: now))")
        out.append("revoke session \(i): \(try tokens.revokeSession(pairs[2].session, subject: sub, at: now))")
        out.append("is_revoked \(i): \(try tokens.isRevoked(jti: try #require(claims[0].jti), at: now)) \(try tokens.isRevoked(jti: try #require(claims[1].jti), at: now)) \(try tokens.isRevoked(jti: try #require(claims[3].jti), at: now))")
        for (k, p) in pairs.enumerated() { out.append("verify after \(i).\(k): \(try tokens.verify(p.access, at: now).reason)") }
        out.append("revoke subject \(i): \(try tokens.revokeSubject(sub, notBefore: now, at: now))")
        out.append("verify after subject \(i): \(try tokens.verify(pairs[3].access, at: now).reason)")
    }
    // TOTP replay and backup-code claims.
    let totp = try #require(rt.totp)
    for i in 0..<9 {
        let user = "mfa-user-\(i)"
        let code = String(decoding: try rawT(totpSecret) { (s) throws(BitsecError) -> [UInt8] in try totp.now(secret: s, at: t0) }, as: UTF8.self)
        for j in 0..<2 {
            let d = try rawT(totpSecret) { (s) throws(BitsecError) -> OTPDecision in
                try rawT(code) { (c) throws(BitsecError) -> OTPDecision in try totp.verify(secret: s, code: c, user: user, at: t0) }
            }
            out.append("totp \(i) \(j): \(d)")
        }
        let stored = backup.hashes.joined(separator: "\n")
        for j in 0..<2 {
            let d = try rawT(backup.codes[i % backup.codes.count]) { (c) throws(BitsecError) -> OTPDecision in
                try totp.verifyBackupCode(c, stored: stored, user: user, at: t0)
            }
            out.append("backup \(i) \(j): \(d)")
        }
    }
    return out
}

@Suite(.serialized) struct RedisClusterTests {
    @Test func crc16AndKeySlotsMatchTheServer() throws {
        #expect(ClusterSlot.crc16(Array("123456789".utf8)) == 0x31C3)
        guard let nodes = TestCluster.nodes else { return }
        let admin = TestCluster.admin(node(nodes[0]))
        var keys = ["", "a", "foo", "{user1000}.following", "{user1000}.followers", "foo{}{bar}", "foo{{bar}}zap",
                    "foo{bar}{zap}", "{}", "}{", "{a", "a}", "bitsec:rl:{default:client-1}", "bitsec:revoked:{#~YWJj}:j:x",
                    "bitsec:fw:{bf:k}:f", "bitsec:fw:{bf:k}:b", "totp:last:alice", "é{ü}", "\u{1F600}"]
        for i in 0..<200 { keys.append("key:\(i * 7919)") }
        for k in keys {
            let server = try admin.command([Array("CLUSTER".utf8), Array("KEYSLOT".utf8), Array(k.utf8)]).integer
            #expect(server.map(Int.init) == ClusterSlot.of(k), "key \(k)")
        }
        // The key a command is routed by, from arguments and from its RESP encoding.
        let eval: [[UInt8]] = [Array("EVALSHA".utf8), Array("abc".utf8), Array("1".utf8), Array("{x}:1".utf8), Array("v".utf8)]
        #expect(ClusterSlot.of(command: eval) == ClusterSlot.of("x"))
        var e = RESPEncoder(count: eval.count)
        for a in eval { e.bulk(a) }
        #expect(ClusterSlot.of(resp: e.bytes) == ClusterSlot.of("x"))
        #expect(ClusterSlot.of(command: [Array("EVAL".utf8), Array("return 1".utf8), Array("0".utf8)]) == nil)
        #expect(ClusterSlot.of(command: [Array("SET".utf8), Array("k".utf8), Array("v".utf8)]) == ClusterSlot.of("k"))
        #expect(ClusterSlot.of(resp: Array("*2\r\n$3\r\nGET\r\n$9\r\n".utf8)) == nil)
    }

    @Test func configuration() throws {
        let base = #""mode": "cluster", "nodes": ["127.0.0.1:7000"]"#
        expectError(.config, "redis.db") { _ = try Runtime.open(config: #"{"redis": {\#(base), "db": 1}}"#) }
        expectError(.config, "redis.host") { _ = try Runtime.open(config: #"{"redis": {\#(base), "host": "x"}}"#) }
        expectError(.config, "redis.port") { _ = try Runtime.open(config: #"{"redis": {\#(base), "port": 7000}}"#) }
        expectError(.config, "redis.key_prefix") { _ = try Runtime.open(config: #"{"redis": {\#(base), "key_prefix": "a{b}:"}}"#) }
        expectError(.config, "redis.nodes") { _ = try Runtime.open(config: #"{"redis": {"mode": "cluster"}}"#) }
        expectError(.config, "redis.nodes") { _ = try Runtime.open(config: #"{"redis": {"mode": "cluster", "nodes": []}}"#) }
        expectError(.config, "redis.nodes") { _ = try Runtime.open(config: #"{"redis": {"mode": "cluster", "nodes": ["localhost"]}}"#) }
        expectError(.config, "redis.nodes") { _ = try Runtime.open(config: #"{"redis": {"mode": "cluster", "nodes": ["h:70000"]}}"#) }
        expectError(.config, "redis.mode") { _ = try Runtime.open(config: #"{"redis": {"mode": "clustre", "nodes": ["h:1"]}}"#) }
        expectError(.config, "redis.nodes") { _ = try Runtime.open(config: #"{"redis": {"nodes": ["h:1"]}}"#) }
        let rt = try Runtime.open(config: #"{"redis": {\#(base), "cluster_refresh_ms": 1000, "cluster_max_redirects": 3, "db": 0}}"#)
        let c = try #require(rt.redis?.config.cluster)
        #expect(c.seeds == [RedisCluster.Node(host: "127.0.0.1", port: 7000)])
        #expect(c.refreshMs == 1000 && c.maxRedirects == 3)
        #expect(RedisClusterSettings.parse("[::1]:7001") == RedisCluster.Node(host: "::1", port: 7001))
    }

    @Test func redirectRepliesAreParsed() {
        #expect(RedisCluster.redirect("MOVED 3999 127.0.0.1:6381") == .moved(slot: 3999, RedisCluster.Node(host: "127.0.0.1", port: 6381)))
        #expect(RedisCluster.redirect("ASK 3999 127.0.0.1:6381") == .ask(slot: 3999, RedisCluster.Node(host: "127.0.0.1", port: 6381)))
        #expect(RedisCluster.redirect("MOVED 3999 :6381") == .moved(slot: 3999, RedisCluster.Node(host: "", port: 6381)))
        #expect(RedisCluster.redirect("MOVED 16384 127.0.0.1:6381") == nil)
        #expect(RedisCluster.redirect("TRYAGAIN Multiple keys request during rehashing of slot") == .retry(refreshFirst: false))
        #expect(RedisCluster.redirect("CLUSTERDOWN The cluster is down") == .retry(refreshFirst: true))
        #expect(RedisCluster.redirect("READONLY You can't write against a read only replica.") == .retry(refreshFirst: true))
        #expect(RedisCluster.redirect("LOADING Redis is loading the dataset in memory") == .retry(refreshFirst: false))
        #expect(RedisCluster.redirect("ASKING") == nil)
        #expect(RedisCluster.redirect("ERR wrong number of arguments") == nil)
    }

    /// Every Redis-backed operation gives the same decisions through the cluster as through a
    /// standalone server, with its keys on all three primaries.
    @Test func everyOperationEqualsStandalone() throws {
        let cprefix = unique("eqc"), sprefix = unique("eqs")
        guard let c = try clusterRuntime(sections, prefix: cprefix), let s = try standaloneRuntime(sections, prefix: sprefix) else { return }
        let totp = try #require(s.totp)
        let secret = String(decoding: try OTP.generateSecret(bits: 160), as: UTF8.self)
        let backup = try totp.generateBackupCodes(count: 10)
        let now = Clock.nowSeconds()
        let viaCluster = try transcript(c, totpSecret: secret, backup: backup, now: now)
        let viaStandalone = try transcript(s, totpSecret: secret, backup: backup, now: now)
        #expect(viaCluster.count == viaStandalone.count)
        for (a, b) in zip(viaCluster, viaStandalone) where a != b { Issue.record("cluster: \(a)\nstandalone: \(b)") }
        // Sanity: the transcript holds denials, blocks, revocations and replays.
        #expect(viaCluster.contains { $0.hasPrefix("take client-0 6:") && $0.contains("allowed: false") })
        #expect(viaCluster.contains { $0.hasPrefix("verify after 0.0: revoked") })
        #expect(viaCluster.contains { $0.hasPrefix("totp 0 1:") && $0.contains("replay") })
        #expect(viaCluster.contains { $0.hasPrefix("backup 0 1:") && $0.contains("replayed") })
        // The keys were spread over every primary: each holds some of this run's keys.
        let cluster = try #require(c.redis?.cluster)
        #expect(cluster.primaryNodes.count == 3)
        for p in cluster.primaryNodes {
            let r = try TestCluster.admin(p).command([Array("SCAN".utf8), Array("0".utf8), Array("MATCH".utf8), Array("\(cprefix)*".utf8),
                                                      Array("COUNT".utf8), Array("100000".utf8)])
            let found = r.array?.dropFirst().first?.array?.count ?? 0
            #expect(found > 0, "primary \(p.text) holds none of the keys")
        }
    }

    /// `wait_replicas` in cluster mode: every write followed by `WAIT` (revocations, TOTP
    /// steps, backup-code claims) is routed by its key and WAITed for on the node that took
    /// it; the decisions equal a standalone server's. More replicas than a node has is the
    /// documented `backendUnavailable` (the node's own replica count is reported).
    @Test func waitReplicasGoesToTheNodeThatTookTheWrite() throws {
        let cprefix = unique("waitc"), sprefix = unique("waits")
        guard let c = try clusterRuntime(sections, prefix: cprefix, extra: #", "wait_replicas": 1, "wait_timeout_ms": 5000"#),
              let s = try standaloneRuntime(sections, prefix: sprefix) else { return }
        #expect(c.redis?.config.mode == .cluster)
        let totp = try #require(s.totp)
        let secret = String(decoding: try OTP.generateSecret(bits: 160), as: UTF8.self)
        let backup = try totp.generateBackupCodes(count: 10)
        let now = Clock.nowSeconds()
        let viaCluster = try transcript(c, totpSecret: secret, backup: backup, now: now)
        let viaStandalone = try transcript(s, totpSecret: secret, backup: backup, now: now)
        #expect(viaCluster.count == viaStandalone.count)
        for (a, b) in zip(viaCluster, viaStandalone) where a != b { Issue.record("cluster: \(a)\nstandalone: \(b)") }
        #expect(viaCluster.contains { $0.hasPrefix("verify after 0.0: revoked") })

        // Two replicas asked, each node has one: the revocation is written, then refused.
        guard let c2 = try clusterRuntime(sections, prefix: unique("wait2"), extra: #", "wait_replicas": 2, "wait_timeout_ms": 50"#) else { return }
        let tokens = try #require(c2.tokens)
        for i in 0..<6 {
            expectError(.backendUnavailable, "acknowledged by 1 of 2 replicas") {
                _ = try tokens.revoke(jti: "wait-jti-\(i)", exp: now + 600, at: now)
            }
            // Written on the owner all the same: a second revocation finds it.
            #expect(try tokens.isRevoked(jti: "wait-jti-\(i)", at: now))
        }
    }

    /// A TLS-only cluster (the fixture's second cluster: `port 0`, bus over TLS): every node
    /// pool is built with the section's `tls`, so the slot map loads, rate-limit takes,
    /// revocations and the rest of the transcript work across the three primaries and equal
    /// a standalone server's decisions; without `tls` the nodes cannot be reached at all.
    @Test func clusterOverTLSTakesAndRevokes() throws {
        guard let list = TestRedisTLS.env("BITSEC_TEST_REDIS_TLS_CLUSTER_NODES"), let ca = TestRedisTLS.env("BITSEC_TEST_REDIS_TLS_CA"),
              let cert = TestRedisTLS.env("BITSEC_TEST_REDIS_TLS_CERT"), let key = TestRedisTLS.env("BITSEC_TEST_REDIS_TLS_KEY") else { return }
        let nodes = list.split(separator: ",").map { "\"\($0)\"" }.joined(separator: ", ")
        let cprefix = unique("tlsc"), sprefix = unique("tlss")
        func open(tls: Bool) throws -> Runtime {
            let tlsPart = tls ? #", "tls": {"ca_file": "\#(ca)", "cert_file": "\#(cert)", "key_file": "\#(key)"}"# : ""
            return try Runtime.open(config: #"{"allow_inline_secrets": true, "redis": {"mode": "cluster", "nodes": [\#(nodes)], "command_timeout_ms": 1000, "connect_timeout_ms": 500, "key_prefix": "\#(cprefix)"\#(tlsPart)}, \#(sections)}"#)
        }
        let c = try open(tls: true)
        guard let s = try standaloneRuntime(sections, prefix: sprefix) else { return }
        let cluster = try #require(c.redis?.cluster)
        try cluster.loadMap()
        #expect(cluster.primaryNodes.count == 3)
        #expect(Set(cluster.primaryNodes.map(\.text)) == Set(list.split(separator: ",").map(String.init)))
        let totp = try #require(s.totp)
        let secret = String(decoding: try OTP.generateSecret(bits: 160), as: UTF8.self)
        let backup = try totp.generateBackupCodes(count: 10)
        let now = Clock.nowSeconds()
        let viaCluster = try transcript(c, totpSecret: secret, backup: backup, now: now)
        let viaStandalone = try transcript(s, totpSecret: secret, backup: backup, now: now)
        #expect(viaCluster.count == viaStandalone.count)
        for (a, b) in zip(viaCluster, viaStandalone) where a != b { Issue.record("cluster: \(a)\nstandalone: \(b)") }
        #expect(viaCluster.contains { $0.hasPrefix("take client-0 6:") && $0.contains("allowed: false") })
        #expect(viaCluster.contains { $0.hasPrefix("verify after 0.0: revoked") })
        // Plain TCP to the same nodes is refused: the map cannot even be loaded.
        let plain = try open(tls: false)
        expectError(.backendUnavailable) { _ = try plain.redis?.cluster?.loadMap() }
    }

    /// Numbers for the documentation (printed; never asserted): a take through the cluster
    /// vs the same take in standalone mode on the node that owns the key, and one redirect
    /// (a command answered `MOVED` by the wrong node) vs a direct round trip.
    @Test func measurements() throws {
        let prefix = unique("m")
        let cfg = #""rate_limits": {"store": "redis", "categories": {"default": {"capacity": 1000000000, "period_seconds": 1}}}"#
        guard let c = try clusterRuntime(cfg, prefix: prefix) else { return }
        let cluster = try #require(c.redis?.cluster)
        try cluster.loadMap()
        let key = "bench-key"
        let owner = try #require(cluster.primary(forSlot: ClusterSlot.of(Array("\(prefix)rl:{default:\(key)}".utf8))))
        let other = try #require(cluster.primaryNodes.first { $0 != owner })
        let s = try Runtime.open(config: #"{"redis": {"host": "\#(owner.host)", "port": \#(owner.port), "command_timeout_ms": 1000, "key_prefix": "\#(prefix)"}, \#(cfg)}"#)
        let rc = try #require(c.rateLimits), rs = try #require(s.rateLimits)
        // Interleaved, so that load from other processes touches both sides alike.
        func medians(_ n: Int, _ a: () throws -> Void, _ b: () throws -> Void) rethrows -> (Int64, Int64) {
            var ta: [Int64] = [], tb: [Int64] = []
            for _ in 0..<n {
                var t = Clock.nowMicros(); try a(); ta.append(Clock.nowMicros() - t)
                t = Clock.nowMicros(); try b(); tb.append(Clock.nowMicros() - t)
            }
            return (ta.sorted()[n / 2], tb.sorted()[n / 2])
        }
        for _ in 0..<200 { _ = try rc.take(category: "default", key: key); _ = try rs.take(category: "default", key: key) }
        let (viaCluster, direct) = try medians(5000, { () throws -> Void in #expect(try !rc.take(category: "default", key: key).degraded) },
                                               { () throws -> Void in #expect(try !rs.take(category: "default", key: key).degraded) })
        let get: [[UInt8]] = [Array("GET".utf8), Array("\(prefix)rl:{default:\(key)}".utf8)]
        let right = TestCluster.admin(owner), wrong = TestCluster.admin(other)
        let (rtt, moved) = try medians(5000, { () throws -> Void in _ = try right.command(get) },
                                       { () throws -> Void in #expect(try wrong.command(get).errorMessage?.hasPrefix("MOVED") == true) })
        // A raw EVALSHA round trip on the owner (a one-line script), for scale.
        let one = RedisScript("return 1")
        let ownerPool = TestCluster.admin(owner)
        let (raw, _) = try medians(5000, { () throws -> Void in _ = try one.run(ownerPool, keys: [get[1]], args: []) }, {})
        print("cluster measurements (median µs): take via cluster \(viaCluster), same take standalone on the owning node \(direct), raw EVALSHA 'return 1' on the owner \(raw); GET round trip \(rtt), MOVED reply from the wrong node \(moved) (a redirect costs that plus the round trip to the owner)")
    }

    /// The first calls of a fresh runtime, from 8 threads at once, wait for the one slot-map
    /// load instead of failing while it is in progress (which would look like an outage).
    @Test func concurrentFirstCallsShareTheMapLoad() throws {
        for round in 0..<5 {
            let prefix = unique("first\(round)")
            guard let rt = try clusterRuntime(#""rate_limits": {"store": "redis", "outage_retry_ms": 100, "categories": {"default": {"capacity": 10, "period_seconds": 60, "failure_policy": "deny"}}}"#,
                                              prefix: prefix) else { return }
            let rl = try #require(rt.rateLimits)
            let load = Load(keys: 0)
            let threads = ThreadBox(count: 8) { t in
                load.ready.add(1, ordering: .relaxed)
                while load.ready.load(ordering: .relaxed) < 8 {}
                do {
                    if try rl.take(category: "default", key: "first-\(t)").degraded { load.degraded.add(1, ordering: .relaxed) }
                } catch {
                    load.errors.add(1, ordering: .relaxed)
                }
            }
            threads.join()
            #expect(load.degraded.load(ordering: .relaxed) == 0, "round \(round)")
            #expect(load.errors.load(ordering: .relaxed) == 0, "round \(round)")
        }
    }

    /// A redirect to an address the slot map does not list is never connected to: it makes
    /// the client reload the map, and with a map that still does not list it the command
    /// fails after the bounded number of attempts.
    @Test func redirectToAnUnknownAddressReloadsTheMapAndNeverConnects() throws {
        let bait = silentServer()  // listens, never accepts: a connection would wait in its queue
        defer { close(bait.fd) }
        let fake = FakeClusterNode(movedTo: bait.port)
        defer { fake.stop() }
        let rt = try Runtime.open(config: #"{"redis": {"mode": "cluster", "nodes": ["127.0.0.1:\#(fake.port)"], "command_timeout_ms": 500, "cluster_max_redirects": 3}}"#)
        let pool = try #require(rt.redis)
        expectError(.backendUnavailable, "redirects") { _ = try pool.command([Array("GET".utf8), Array("k".utf8)]) }
        let cluster = try #require(pool.cluster)
        #expect(cluster.counters.refreshes == 1)  // the first load; reloads are spaced by 50 ms
        usleep(100_000)
        expectError(.backendUnavailable, "redirects") { _ = try pool.command([Array("GET".utf8), Array("k".utf8)]) }
        // The unknown address made the client reload the map (not connect there).
        #expect(cluster.counters.refreshes >= 2)
        #expect(fake.commands.filter { $0.hasPrefix("CLUSTER") }.count >= 2)
        #expect(cluster.primaryNodes == [RedisCluster.Node(host: "127.0.0.1", port: fake.port)])
        // Nothing ever connected to the redirect's address.
        var flags = fcntl(bait.fd, F_GETFL)
        flags |= O_NONBLOCK
        _ = fcntl(bait.fd, F_SETFL, flags)
        let c = accept(bait.fd, nil, nil)
        #expect(c < 0, "the client connected to an address only a MOVED reply named")
        if c >= 0 { close(c) }
        #expect(fake.commands.contains { $0.hasPrefix("CLUSTER") })
    }

    /// A pipeline whose commands live on different primaries is split per node and the
    /// replies come back in the commands' order.
    @Test func pipelineAcrossNodesKeepsTheOrder() throws {
        guard let section = TestCluster.section() else { return }
        let rt = try Runtime.open(config: #"{"redis": \#(section)}"#)
        let pool = try #require(rt.redis)
        let p = unique("pipe")
        let keys = (0..<30).map { Array("\(p)\($0)".utf8) }
        let cluster = try #require(pool.cluster)
        try cluster.loadMap()
        #expect(Set(keys.compactMap { cluster.primary(forSlot: ClusterSlot.of($0)) }).count == 3)
        var cmds: [[[UInt8]]] = []
        for (i, k) in keys.enumerated() { cmds.append([Array("SET".utf8), k, Array("v\(i)".utf8)]) }
        for k in keys.reversed() { cmds.append([Array("GET".utf8), k]) }
        let replies = try pool.pipeline(cmds)
        #expect(replies.count == cmds.count)
        #expect(replies.prefix(30).allSatisfy { $0 == .status("OK") })
        #expect(replies.suffix(30).map { $0.text ?? "" } == (0..<30).reversed().map { "v\($0)" })
        #expect(try pool.command([Array("GET".utf8), keys[7]]).text == "v7")
        #expect(try pool.ping() >= 0)
    }

    /// Slots moved under load (MIGRATING/IMPORTING, MIGRATE, SETSLOT NODE): every take is
    /// decided by Redis (none degraded) and no key is allowed more than its capacity.
    @Test func reshardingUnderLoadStaysExact() throws {
        let prefix = unique("rs")
        guard let rt = try clusterRuntime(#""rate_limits": {"store": "redis", "outage_retry_ms": 100, "categories": {"default": {"capacity": 60, "period_seconds": 3600, "failure_policy": "deny"}}}"#,
                                          prefix: prefix) else { return }
        let rl = try #require(rt.rateLimits)
        let cluster = try #require(rt.redis?.cluster)
        try cluster.loadMap()
        let keys = (0..<8).map { "rk\($0)" }
        let slots = keys.map { ClusterSlot.of(Array("\(prefix)rl:{default:\($0)}".utf8)) }
        let before = cluster.counters
        let load = Load(keys: keys.count)
        let threads = ThreadBox(count: 8) { t in
            var i = t
            while !load.stop.load(ordering: .relaxed) {
                let k = i % keys.count
                i += 1
                do {
                    let d = try rl.take(category: "default", key: keys[k])
                    if d.degraded { load.degraded.add(1, ordering: .relaxed) }
                    if d.allowed { load.allowed.with { $0[k] += 1 } }
                } catch {
                    load.errors.add(1, ordering: .relaxed)
                }
            }
        }
        // Move each key's slot to the next primary, a key at a time, while the load runs.
        var moved = 0
        for (k, slot) in slots.enumerated() {
            guard let from = cluster.primary(forSlot: slot) else { continue }
            let primaries = cluster.primaryNodes
            guard let fi = primaries.firstIndex(of: from) else { continue }
            let to = primaries[(fi + 1) % primaries.count]
            try migrate(slot: slot, from: from, to: to, all: primaries)
            moved += 1
            _ = k
        }
        usleep(200_000)
        load.stop.store(true, ordering: .relaxed)
        threads.join()
        #expect(moved == keys.count)
        #expect(load.degraded.load(ordering: .relaxed) == 0)
        #expect(load.errors.load(ordering: .relaxed) == 0)
        let counts = load.allowed.with { $0 }
        for k in keys.indices { #expect(counts[k] == 60, "key \(keys[k])") }
        // Both kinds of redirect were met and followed: ASK while a key was half-way, MOVED after.
        let after = cluster.counters
        #expect(after.asks > before.asks)
        #expect(after.redirects - after.asks > before.redirects - before.asks)
        // The map followed: each slot is now served where it was moved.
        for slot in slots {
            let owner = try #require(cluster.primary(forSlot: slot))
            let r = try TestCluster.admin(owner).command([Array("CLUSTER".utf8), Array("COUNTKEYSINSLOT".utf8), Array(String(slot).utf8)])
            // At least this test's key: the tests share the cluster, so another test's key may
            // hash to the same slot.
            #expect((r.integer ?? 0) >= 1)
        }
    }

    /// A primary killed (SIGKILL) under 8 threads of load: every decision is Redis' or the
    /// category's failure policy, no key is allowed more than its capacity plus the local
    /// share, and decisions recover without intervention once a replica has taken over.
    @Test func killedPrimaryUnderLoadFollowsThePolicyAndRecovers() throws {
        let prefix = unique("kill")
        let cap = 400
        guard let rt = try clusterRuntime(#"""
            "rate_limits": {"store": "redis", "outage_retry_ms": 100, "categories": {
              "deny": {"capacity": \#(cap), "period_seconds": 3600, "failure_policy": "deny"},
              "local": {"capacity": \#(cap), "period_seconds": 3600, "failure_policy": "local", "local_share_percent": 25},
              "allow": {"capacity": \#(cap), "period_seconds": 3600, "failure_policy": "allow"}}}
            """#, prefix: prefix) else { return }
        let rl = try #require(rt.rateLimits)
        let cluster = try #require(rt.redis?.cluster)
        try cluster.loadMap()
        let categories = ["deny", "local", "allow"]
        let keys = (0..<9).map { "kk\($0)" }
        // The victim: the primary of the first key's bucket in the deny category.
        let victim = try #require(cluster.primary(forSlot: ClusterSlot.of(Array("\(prefix)rl:{deny:\(keys[0])}".utf8))))
        let victimPid = try #require(TestCluster.pid(victim))
        let survivors = cluster.primaryNodes.filter { $0 != victim }
        let onVictim = keys.map { k in categories.map { c in cluster.primary(forSlot: ClusterSlot.of(Array("\(prefix)rl:{\(c):\(k)}".utf8))) == victim } }

        let load = Load(keys: 0)
        let threads = ThreadBox(count: 8) { t in
            var i = t
            while !load.stop.load(ordering: .relaxed) {
                let k = (i / 3) % keys.count, c = i % 3
                i += 1
                do {
                    let afterKill = load.killDone.load(ordering: .relaxed)
                    let d = try rl.take(category: categories[c], key: keys[k])
                    if afterKill, onVictim[k][c], !d.degraded {
                        _ = load.recoveredAt.compareExchange(expected: 0, desired: Clock.nowMicros(), ordering: .relaxed)
                    }
                    var wrong = false
                    if d.degraded {
                        switch categories[c] {
                        case "deny": wrong = d.allowed
                        case "allow": wrong = !d.allowed
                        default: wrong = d.limit != Int64(cap / 4)
                        }
                    }
                    load.tallies.with {
                        var x = $0["\(categories[c])/\(keys[k])", default: Tally()]
                        if d.allowed { x.allowed += 1; if d.degraded { x.degradedAllowed += 1 } }
                        if wrong { x.wrongPolicy += 1 }
                        $0["\(categories[c])/\(keys[k])"] = x
                    }
                } catch {
                    load.errors.add(1, ordering: .relaxed)
                }
                if !load.killDone.load(ordering: .relaxed) { usleep(200) }
            }
        }
        usleep(300_000)
        load.killedAt.store(Clock.nowMicros(), ordering: .relaxed)
        #expect(kill(victimPid, SIGKILL) == 0)
        load.killDone.store(true, ordering: .relaxed)
        // Until a key of the victim is decided by Redis again (bounded: 30 s).
        var waited = 0
        while load.recoveredAt.load(ordering: .relaxed) == 0 && waited < 3000 { usleep(10_000); waited += 1 }
        usleep(300_000)
        load.stop.store(true, ordering: .relaxed)
        threads.join()
        let recovered = load.recoveredAt.load(ordering: .relaxed)
        #expect(recovered != 0, "decisions did not recover after the failover")
        if recovered != 0 {
            print("cluster failover: correct decisions again \((recovered - load.killedAt.load(ordering: .relaxed)) / 1000) ms after SIGKILL of the primary")
        }
        #expect(load.errors.load(ordering: .relaxed) == 0)
        let t = load.tallies.with { $0 }
        for (name, x) in t.sorted(by: { $0.key < $1.key }) {
            #expect(x.wrongPolicy == 0, "\(name): decisions against the failure policy")
            if name.hasPrefix("deny/") { #expect(x.allowed <= cap, "\(name): \(x.allowed) allowed") }
            if name.hasPrefix("local/") { #expect(x.allowed <= cap + cap / 4, "\(name): \(x.allowed) allowed") }
        }
        // After recovery every key is decided by Redis.
        for c in categories { for k in keys { #expect(try !rl.take(category: c, key: k).degraded) } }
        // Restore the cluster's shape: the killed node rejoins as a replica.
        #expect(TestCluster.restart(victim))
        #expect(TestCluster.waitOK(survivors + [victim]))
    }
}

/// A one-node "cluster" on loopback: `CLUSTER SLOTS` gives every slot to itself, every other
/// command is answered `MOVED 866 127.0.0.1:<movedTo>`. One command per read (the client
/// under test sends them one at a time).
private final class FakeClusterNode: @unchecked Sendable {
    let fd: Int32
    let port: Int32
    private let done = Atomic<Bool>(false)
    private let seen = Locked<[String]>([])
    private var thread: ThreadBox?

    init(movedTo: Int32) {
        let l = silentServer()
        fd = l.fd
        port = l.port
        let me = port
        thread = ThreadBox(count: 1) { [self] _ in
            var clients: [Int32] = []
            while !self.done.load(ordering: .relaxed) {
                var fds = [pollfd(fd: self.fd, events: Int16(POLLIN), revents: 0)] + clients.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
                guard poll(&fds, nfds_t(fds.count), 20) > 0 else { continue }
                if fds[0].revents != 0 { let c = accept(self.fd, nil, nil); if c >= 0 { clients.append(c) } }
                for p in fds.dropFirst() where p.revents != 0 {
                    var buf = [UInt8](repeating: 0, count: 4096)
                    let n = read(p.fd, &buf, buf.count)
                    if n <= 0 { close(p.fd); clients.removeAll { $0 == p.fd }; continue }
                    let text = String(decoding: buf.prefix(n), as: UTF8.self)
                    let words = text.split(separator: "\r\n").filter { !$0.hasPrefix("*") && !$0.hasPrefix("$") }
                    self.seen.with { $0.append(words.joined(separator: " ")) }
                    let reply: String
                    if words.first?.uppercased() == "CLUSTER" {
                        let id = String(repeating: "a", count: 40)
                        reply = "*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:\(me)\r\n$40\r\n\(id)\r\n"
                    } else {
                        reply = "-MOVED 866 127.0.0.1:\(movedTo)\r\n"
                    }
                    _ = Array(reply.utf8).withUnsafeBytes { write(p.fd, $0.baseAddress, $0.count) }
                }
            }
            for c in clients { close(c) }
        }
    }

    var commands: [String] { seen.with { $0 } }

    func stop() {
        done.store(true, ordering: .relaxed)
        thread?.join()
        thread = nil  // its body holds this node: drop the cycle
        close(fd)
    }
}

private struct Tally { var allowed = 0, degradedAllowed = 0, wrongPolicy = 0 }

/// What the load threads of a test share.
private final class Load: Sendable {
    let stop = Atomic<Bool>(false)
    let errors = Atomic<Int>(0)
    let degraded = Atomic<Int>(0)
    let allowed: Locked<[Int]>
    let tallies = Locked<[String: Tally]>([:])
    let killedAt = Atomic<Int64>(0)
    let killDone = Atomic<Bool>(false)
    let recoveredAt = Atomic<Int64>(0)
    let ready = Atomic<Int>(0)
    init(keys: Int) { allowed = Locked(Array(repeating: 0, count: keys)) }
}

/// Moves `slot` from `from` to `to` the way `redis-cli --cluster reshard` does, one key per
/// MIGRATE with a pause, so that commands meet both MOVED and ASK.
private func migrate(slot: Int, from: RedisCluster.Node, to: RedisCluster.Node, all: [RedisCluster.Node]) throws {
    let src = TestCluster.admin(from), dst = TestCluster.admin(to)
    let srcID = try #require(try src.command("CLUSTER", "MYID").text)
    let dstID = try #require(try dst.command("CLUSTER", "MYID").text)
    let s = String(slot)
    #expect(try dst.command("CLUSTER", "SETSLOT", s, "IMPORTING", srcID) == .status("OK"))
    #expect(try src.command("CLUSTER", "SETSLOT", s, "MIGRATING", dstID) == .status("OK"))
    usleep(50_000)
    while true {
        let keys = try src.command("CLUSTER", "GETKEYSINSLOT", s, "10").array ?? []
        if keys.isEmpty { break }
        for k in keys {
            guard let key = k.bytes else { continue }
            let r = try src.command([Array("MIGRATE".utf8), Array(to.host.utf8), Array(String(to.port).utf8), key, Array("0".utf8), Array("5000".utf8)])
            #expect(r == .status("OK") || r == .status("NOKEY"), "MIGRATE: \(r)")
            usleep(30_000)
        }
    }
    usleep(50_000)
    for n in [to, from] + all.filter({ $0 != to && $0 != from }) {
        _ = try TestCluster.admin(n).command("CLUSTER", "SETSLOT", s, "NODE", dstID)
    }
}
