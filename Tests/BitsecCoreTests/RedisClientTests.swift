import Testing
import Glibc
import Dispatch
import BitsecCore

@Suite struct RedisClientTests {
    func pool(_ extra: String = "") throws -> RedisPool? {
        guard let cfg = TestRedis.config(extra) else { return nil }
        return try Runtime.open(config: cfg).requireRedis()
    }

    @Test func pingAndCommandsOverTCP() throws {
        guard let p = try pool() else { return }
        #expect(try p.ping() >= 0)
        let key = "bitsec:test:\(getpid()):tcp"
        #expect(try p.command("SET", key, "v\u{0}binary") == .status("OK"))
        #expect(try p.command("GET", key) == .string(Array("v\u{0}binary".utf8)))
        #expect(try p.command("DEL", key) == .integer(1))
        #expect(try p.command("GET", key) == .null)
        #expect(try p.command("NOSUCHCOMMAND").errorMessage != nil)
        #expect(try p.command("MGET", key, key).array?.count == 2)
    }

    @Test func unixSocket() throws {
        guard let path = TestRedis.socketPath else { return }
        let rt = try Runtime.open(config: #"{"redis": {"unix_socket": "\#(path)"}}"#)
        #expect(try rt.requireRedis().ping() >= 0)
    }

    @Test func aclUserAuthAndDatabase() throws {
        guard let admin = try pool() else { return }
        let user = "bitsec-test-\(getpid())"
        #expect(try admin.command("ACL", "SETUSER", user, "on", ">s3cret-pw", "~*", "+@all") == .status("OK"))
        defer { _ = try? admin.command("ACL", "DELUSER", user) }
        guard let port = TestRedis.port else { return }
        setenv("BITSEC_TEST_REDIS_PW", "s3cret-pw", 1)
        let good = try Runtime.open(config: #"{"redis": {"port": \#(port), "username": "\#(user)", "password": {"env": "BITSEC_TEST_REDIS_PW"}, "db": 3}}"#)
        let r = try good.requireRedis()
        let key = "bitsec:test:\(getpid()):db"
        _ = try r.command("SET", key, "3")
        #expect(try admin.command("GET", key) == .null)  // admin is on db 0
        #expect(try r.command("GET", key) == .string(Array("3".utf8)))
        _ = try r.command("DEL", key)

        setenv("BITSEC_TEST_REDIS_BADPW", "wrong-pw", 1)
        let bad = try Runtime.open(config: #"{"redis": {"port": \#(port), "username": "\#(user)", "password": {"env": "BITSEC_TEST_REDIS_BADPW"}}}"#)
        do {
            _ = try bad.requireRedis().ping()
            Issue.record("a wrong password authenticated")
        } catch {
            #expect(error.status == .backendUnavailable)
            #expect(error.detail.contains("authentication failed"))
            #expect(!error.detail.contains("wrong-pw"))
        }
    }

    @Test func refusedConnectionFailsFastThenBacksOff() throws {
        let port = closedPort()
        let p = try Runtime.open(config: #"{"redis": {"port": \#(port), "reconnect_backoff_ms": 60000}}"#).requireRedis()
        expectError(.backendUnavailable, "connect failed") { _ = try p.ping() }
        // Within the backoff, no new connection attempt is made.
        expectError(.backendUnavailable, "next attempt in") { _ = try p.ping() }
        #expect(p.openConnections == 0)
    }

    @Test func silentServerTimesOut() throws {
        let (fd, port) = silentServer()
        defer { close(fd) }
        let p = try Runtime.open(config: #"{"redis": {"port": \#(port), "command_timeout_ms": 150}}"#).requireRedis()
        expectError(.backendUnavailable, "no reply within 150 ms") { _ = try p.ping() }
        #expect(p.openConnections == 0)  // the broken connection was discarded
    }

    @Test func poolIsSafeAndBoundedAcrossThreads() throws {
        guard let p = try pool(#", "pool_size": 3"#) else { return }
        let key = "bitsec:test:\(getpid()):incr"
        _ = try p.command("DEL", key)
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for _ in 0..<200 { _ = try? p.command("INCR", key) }
        }
        #expect(try p.command("GET", key) == .string(Array("1600".utf8)))
        #expect(p.openConnections <= 3)
        _ = try p.command("DEL", key)
    }

    @Test func recoversAfterTheServerReturns() throws {
        // A server that was never there, then is: the pool reconnects after its backoff.
        guard let port = TestRedis.port else { return }
        let p = try Runtime.open(config: #"{"redis": {"port": \#(port), "reconnect_backoff_ms": 1}}"#).requireRedis()
        let id = try #require(try p.command("CLIENT", "ID").integer)
        // Kill the pooled connection server-side (as a server restart would): it is now dead.
        let admin = try Runtime.open(config: TestRedis.config() ?? "{}").requireRedis()
        #expect(try admin.command("CLIENT", "KILL", "ID", String(id)) == .integer(1))
        #expect(try p.ping() >= 0)  // retried once on a fresh connection
        #expect(try p.command("CLIENT", "ID").integer != id)
    }
}
