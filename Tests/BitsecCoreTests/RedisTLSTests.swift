import Testing
import Glibc
import BitsecCore

/// The TLS-only server that tools/redis_fixture.py starts next to the plain one, and its
/// certificates (a CA, a client certificate and key, an unrelated CA).
enum TestRedisTLS {
    static func env(_ name: String) -> String? {
        guard let p = getenv(name) else {
            Issue.record("\(name) is not set: run the tests through tools/redis_fixture.py (make test does)")
            return nil
        }
        return String(cString: p)
    }

    /// The `redis` section for the TLS server (client certificate included unless `client` is false).
    static func section(client: Bool = true, tls extra: String = "", timeoutMs: Int = 1000, _ more: String = "") -> String? {
        guard let port = env("BITSEC_TEST_REDIS_TLS_PORT"), let ca = env("BITSEC_TEST_REDIS_TLS_CA"),
              let cert = env("BITSEC_TEST_REDIS_TLS_CERT"), let key = env("BITSEC_TEST_REDIS_TLS_KEY") else { return nil }
        let clientPart = client ? #", "cert_file": "\#(cert)", "key_file": "\#(key)""# : ""
        return #"{"host": "127.0.0.1", "port": \#(port), "command_timeout_ms": \#(timeoutMs), "tls": {"ca_file": "\#(ca)"\#(clientPart)\#(extra)}\#(more)}"#
    }
}

@Suite struct RedisTLSTests {
    @Test func commandsPipelinesAndLargeRepliesOverTLS() throws {
        guard let section = TestRedisTLS.section() else { return }
        let pool = try Runtime.open(config: #"{"redis": \#(section)}"#).requireRedis()
        #expect(try pool.ping() >= 0)
        let key = "bitsec:test:\(getpid()):tls"
        // Larger than one TLS record and than the read buffer: the reply reader is fed in parts.
        let big = [UInt8](repeating: UInt8(ascii: "x"), count: 300_000) + [0, 1, 2]
        #expect(try pool.command([Array("SET".utf8), Array(key.utf8), big]) == .status("OK"))
        #expect(try pool.command([Array("GET".utf8), Array(key.utf8)]) == .string(big))
        let replies = try pool.pipeline([[Array("INCR".utf8), Array((key + ":n").utf8)],
                                         [Array("INCR".utf8), Array((key + ":n").utf8)],
                                         [Array("NOSUCHCOMMAND".utf8)],
                                         [Array("DEL".utf8), Array(key.utf8), Array((key + ":n").utf8)]])
        #expect(replies[0] == .integer(1) && replies[1] == .integer(2))
        #expect(replies[2].errorMessage != nil)
        #expect(replies[3] == .integer(2))
    }

    @Test func commandTimeoutOverTLSThenRecovery() throws {
        guard let cfg = TestRedisTLS.section(timeoutMs: 200, #", "pool_size": 1"#) else { return }
        let pool = try Runtime.open(config: #"{"redis": \#(cfg)}"#).requireRedis()
        #expect(throws: BitsecError.self) { try pool.command("BLPOP", "bitsec:test:\(getpid()):never", "2") }
        do {
            _ = try pool.command("BLPOP", "bitsec:test:\(getpid()):never", "2")
        } catch {
            #expect(error.detail.contains("no reply within 200 ms"), "\(error.detail)")
        }
        #expect(try pool.command("PING") == .status("PONG"))
    }

    @Test func wrongCAIsRefusedWithTheReason() throws {
        guard let other = TestRedisTLS.env("BITSEC_TEST_REDIS_TLS_OTHER_CA"),
              let port = TestRedisTLS.env("BITSEC_TEST_REDIS_TLS_PORT") else { return }
        let pool = try Runtime.open(config: #"{"redis": {"host": "127.0.0.1", "port": \#(port), "tls": {"ca_file": "\#(other)"}}}"#).requireRedis()
        do {
            _ = try pool.ping()
            Issue.record("a server certificate from another CA was accepted")
        } catch {
            #expect(error.status == .backendUnavailable)
            #expect(error.detail.contains("server certificate not accepted"), "\(error.detail)")
        }
    }

    /// Not a performance assertion: prints what a take costs over TLS and over plain TCP
    /// (one connection, sequential calls), for BENCHMARKS.md.
    @Test func takeLatencyTLSVersusPlain() throws {
        guard let tls = TestRedisTLS.section(), let plainPort = TestRedis.port else { return }
        let plain = #"{"host": "127.0.0.1", "port": \#(plainPort), "command_timeout_ms": 1000}"#
        let n = 3000
        var results: [(String, Double)] = []
        for (name, redis) in Array(repeating: [("plain", plain), ("tls", tls)], count: 4).flatMap({ $0 }) {
            let rt = try Runtime.open(config: #"{"redis": \#(redis), "rate_limits": {"categories": {"c": {"capacity": 1000000, "period_seconds": 60}}}}"#)
            let s = try rt.require(rt.rateLimits)
            let key = "bench-\(name)-\(getpid())-\(Clock.nowMicros())"
            for _ in 0..<200 { _ = try s.take(category: "c", key: key) }  // warm up: connection, script cache
            let start = nanos()
            for _ in 0..<n { _ = try s.take(category: "c", key: key) }
            let us = Double(nanos() - start) / 1000 / Double(n)
            results.append((name, us))
            rt.shutdown()
        }
        for (name, us) in results { print("redis rate_limit_take over \(name): \(us) us per call (\(n) sequential calls)") }
    }
}

private func nanos() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}
