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
