// These tests go through the exported C functions only (the @c declarations of the Bitsec
// target, which are exactly what libbitsec.so exports).
import Testing
import Glibc
import Dispatch
import Bitsec

let OK = BitsecABI.BITSEC_OK, E_INVALID = BitsecABI.BITSEC_E_INVALID_ARGUMENT, E_CONFIG = BitsecABI.BITSEC_E_CONFIG, E_NOT_CONFIGURED = BitsecABI.BITSEC_E_NOT_CONFIGURED
let E_BUFFER = BitsecABI.BITSEC_E_BUFFER_TOO_SMALL, E_BACKEND = BitsecABI.BITSEC_E_BACKEND_UNAVAILABLE, E_CLOSED = BitsecABI.BITSEC_E_CLOSED, E_TOO_LARGE = BitsecABI.BITSEC_E_TOO_LARGE

func lastError() -> String { String(cString: bitsec_last_error()) }

/// Opens a runtime from text; returns the status and handle.
func open(_ config: String) -> (Int32, OpaquePointer?) {
    var rt: OpaquePointer? = nil
    let rc = config.withCString { bitsec_runtime_open($0, UInt(strlen($0)), &rt) }
    return (rc, rt)
}

/// A new private directory under /tmp (mkdtemp), for tests that need files.
func makeTempDir(_ prefix: String) -> String {
    var template = Array("/tmp/bitsec-\(prefix)-XXXXXX".utf8CString)
    let p = template.withUnsafeMutableBufferPointer { buf in buf.baseAddress.flatMap { mkdtemp($0) } }
    return p.map { String(cString: $0) } ?? "/tmp"
}

/// Removes a directory made by makeTempDir and the files in it (no subdirectories).
func removeTempDir(_ dir: String) {
    if let d = opendir(dir) {
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { unlink("\(dir)/\(name)") }
        }
        closedir(d)
    }
    rmdir(dir)
}

func redisConfig() -> String? {
    guard let p = getenv("BITSEC_TEST_REDIS_PORT") else {
        Issue.record("BITSEC_TEST_REDIS_PORT is not set: run through tools/redis_fixture.py (make test does)")
        return nil
    }
    return #"{"redis": {"host": "127.0.0.1", "port": \#(String(cString: p)), "command_timeout_ms": 1000}}"#
}

@Suite struct VersionTests {
    @Test func versionsAgree() {
        #expect(String(cString: bitsec_version_string()) == BitsecABI.BITSEC_VERSION_STRING)
        #expect(bitsec_version_number() == BitsecABI.BITSEC_VERSION_NUMBER)
        #expect(bitsec_abi_version() == BitsecABI.BITSEC_ABI_VERSION)
    }

    @Test func strerrorCoversEveryCodeAndUnknownOnes() {
        #expect(String(cString: bitsec_strerror(0)) == "ok")
        #expect(String(cString: bitsec_strerror(4)) == "output buffer too small")
        for code in Int32(0)...14 { #expect(String(cString: bitsec_strerror(code)) != "unknown status") }
        #expect(String(cString: bitsec_strerror(-1)) == "unknown status")
        #expect(String(cString: bitsec_strerror(Int32.max)) == "unknown status")
    }
}

@Suite struct OpenCloseTests {
    @Test func nullArguments() {
        var rt: OpaquePointer? = nil
        #expect(bitsec_runtime_open(nil, 10, &rt) == E_INVALID)
        #expect(lastError().contains("config is NULL"))
        #expect(bitsec_runtime_open("{}", 2, nil) == E_INVALID)
        #expect(lastError().contains("out_rt is NULL"))
        #expect(bitsec_runtime_open_file(nil, &rt) == E_INVALID)
        #expect(bitsec_runtime_open_file("/etc/hostname", nil) == E_INVALID)
        bitsec_runtime_close(nil)  // NULL-safe
    }

    @Test func zeroAndHugeLengths() {
        var rt: OpaquePointer? = nil
        // Zero bytes is not a JSON document.
        #expect(bitsec_runtime_open("{}", 0, &rt) == E_CONFIG)
        #expect(rt == nil)
        // NULL with length zero is the empty input, also a config error, not a crash.
        #expect(bitsec_runtime_open(nil, 0, &rt) == E_CONFIG)
        // A length beyond the limit is refused before the pointer is touched.
        #expect(bitsec_runtime_open("{}", UInt.max, &rt) == E_TOO_LARGE)
        #expect(bitsec_runtime_open("{}", UInt(Int.max) + 1, &rt) == E_TOO_LARGE)
        #expect(lastError().contains("exceeds the limit"))
    }

    @Test func invalidUTF8AndTruncatedJSON() {
        var rt: OpaquePointer? = nil
        let bad: [CChar] = [0x7B, 0x22, -1, 0x22, 0x3A, 0x31, 0x7D]  // {"\xFF":1}
        #expect(bitsec_runtime_open(bad, UInt(bad.count), &rt) == E_CONFIG)
        #expect(lastError().contains("UTF-8"))
        let doc = #"{"redis": {"host": "127.0.0.1", "port": 6379}}"#
        for n in 0..<doc.utf8.count {
            let (rc, h) = open(String(doc.prefix(n)))
            #expect(rc == E_CONFIG, "prefix \(n)")
            #expect(h == nil)
        }
    }

    @Test func unknownFieldIsNamed() {
        let (rc, _) = open(#"{"redis": {"port": 1, "pasword": {"env": "X"}}}"#)
        #expect(rc == E_CONFIG)
        #expect(lastError() == "unknown field redis.pasword")
    }

    @Test func openFromFile() {
        let path = "/tmp/bitsec-abi-\(getpid()).json"
        let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o600)
        _ = #"{"redis": {"port": 6390}}"#.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        defer { unlink(path) }
        var rt: OpaquePointer? = nil
        #expect(bitsec_runtime_open_file(path, &rt) == OK)
        #expect(rt != nil)
        bitsec_runtime_close(rt)
        #expect(bitsec_runtime_open_file("/nonexistent/bitsec.json", &rt) == E_CONFIG)
        #expect(lastError().contains("cannot open /nonexistent/bitsec.json"))
        #expect(rt == nil)
    }

    @Test func closedHandleGivesStatus() {
        let (rc, rt) = open("{}")
        #expect(rc == OK)
        bitsec_runtime_close(rt)
        bitsec_runtime_close(rt)  // twice is a no-op
        var len: UInt = 0
        #expect(bitsec_runtime_describe(rt, nil, 0, &len) == E_CLOSED)
        #expect(bitsec_redis_ping(rt, nil) == E_CLOSED)
        #expect(lastError().contains("closed"))
        #expect(bitsec_runtime_describe(nil, nil, 0, &len) == E_INVALID)
    }
}

@Suite struct OutputTests {
    @Test func tooSmallBufferReportsTheSizeNeeded() {
        let (_, rt) = open(#"{"redis": {"port": 6391}}"#)
        defer { bitsec_runtime_close(rt) }
        var needed: UInt = 0
        #expect(bitsec_runtime_describe(rt, nil, 0, &needed) == E_BUFFER)
        #expect(needed > 20)
        var small = [CChar](repeating: 0x55, count: 8)
        var len: UInt = 0
        #expect(bitsec_runtime_describe(rt, &small, 8, &len) == E_BUFFER)
        #expect(len == needed)
        #expect(small.allSatisfy { $0 == 0x55 })  // nothing written on failure
        var exact = [CChar](repeating: 0, count: Int(needed))
        #expect(bitsec_runtime_describe(rt, &exact, needed, &len) == OK)
        #expect(len == needed)
        var roomy = [CChar](repeating: 1, count: Int(needed) + 1)
        #expect(bitsec_runtime_describe(rt, &roomy, needed + 1, &len) == OK)
        #expect(roomy[Int(needed)] == 0)  // NUL-terminated when there is room
        let text = String(cString: roomy)
        #expect(text.contains("\"endpoint\":\"127.0.0.1:6391\""))
        #expect(bitsec_runtime_describe(rt, &roomy, needed + 1, nil) == E_INVALID)
    }

    @Test func allocatedResultIsFreedWithBitsecFree() {
        let (_, rt) = open("{}")
        defer { bitsec_runtime_close(rt) }
        var p: UnsafeMutablePointer<CChar>? = nil
        var len: UInt = 0
        #expect(bitsec_runtime_describe_alloc(rt, &p, &len) == OK)
        #expect(p != nil)
        if let p {
            #expect(strlen(p) == Int(len))
            #expect(String(cString: p).contains("\"redis\":null"))
        }
        bitsec_free(p)
        bitsec_free(nil)
        #expect(bitsec_runtime_describe_alloc(rt, nil, &len) == E_INVALID)
    }

    @Test func randomBytesComeFromOpenSSL() {
        var a = [UInt8](repeating: 0, count: 32), b = [UInt8](repeating: 0, count: 32)
        #expect(bitsec_random_bytes(&a, 32) == OK)
        #expect(bitsec_random_bytes(&b, 32) == OK)
        #expect(a != b)
        #expect(a != [UInt8](repeating: 0, count: 32))
        #expect(bitsec_random_bytes(nil, 0) == OK)
        #expect(bitsec_random_bytes(nil, 16) == E_INVALID)
        #expect(bitsec_random_bytes(&a, UInt.max) == E_TOO_LARGE)
    }
}

@Suite struct RedisABITests {
    @Test func pingThroughAConfiguredRuntime() {
        guard let cfg = redisConfig() else { return }
        let (rc, rt) = open(cfg)
        #expect(rc == OK)
        defer { bitsec_runtime_close(rt) }
        var rtt: Int64 = -1
        #expect(bitsec_redis_ping(rt, &rtt) == OK)
        #expect(rtt >= 0)
        #expect(bitsec_redis_ping(rt, nil) == OK)
    }

    @Test func pingWithoutRedisIsNotConfigured() {
        let (_, rt) = open("{}")
        defer { bitsec_runtime_close(rt) }
        #expect(bitsec_redis_ping(rt, nil) == E_NOT_CONFIGURED)
    }

    @Test func pingToAStoppedServerIsBackendUnavailable() {
        let (_, rt) = open(#"{"redis": {"port": 1, "connect_timeout_ms": 200}}"#)
        defer { bitsec_runtime_close(rt) }
        #expect(bitsec_redis_ping(rt, nil) == E_BACKEND)
        #expect(lastError().contains("redis 127.0.0.1:1"))
    }
}

@Suite struct ConcurrencyTests {
    @Test func eightThreadsShareOneRuntime() {
        guard let cfg = redisConfig() else { return }
        nonisolated(unsafe) let (_, rt) = open(cfg)
        nonisolated(unsafe) let failures = UnsafeMutablePointer<Int32>.allocate(capacity: 8)
        failures.initialize(repeating: 0, count: 8)
        defer { failures.deallocate() }
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            var buf = [CChar](repeating: 0, count: 4096)
            var len: UInt = 0
            var rnd = [UInt8](repeating: 0, count: 16)
            for i in 0..<300 {
                if bitsec_runtime_describe(rt, &buf, 4096, &len) != OK { failures[t] += 1 }
                if bitsec_random_bytes(&rnd, 16) != OK { failures[t] += 1 }
                if i % 10 == 0, bitsec_redis_ping(rt, nil) != OK { failures[t] += 1 }
                // Errors on one thread do not disturb another thread's detail message.
                if bitsec_runtime_describe(rt, nil, 0, &len) != E_BUFFER { failures[t] += 1 }
                if !lastError().hasPrefix("output needs") { failures[t] += 1 }
            }
        }
        #expect((0..<8).map { failures[$0] }.reduce(0, +) == 0)
        bitsec_runtime_close(rt)
    }

    @Test func closeWhileOtherThreadsCallNeverCrashes() {
        nonisolated(unsafe) let (_, rt) = open("{}")
        nonisolated(unsafe) let counts = UnsafeMutablePointer<Int>.allocate(capacity: 16)
        counts.initialize(repeating: 0, count: 16)
        defer { counts.deallocate() }
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            var buf = [CChar](repeating: 0, count: 4096)
            var len: UInt = 0
            for i in 0..<2000 {
                if t == 0 && i == 500 { bitsec_runtime_close(rt) }
                let rc = bitsec_runtime_describe(rt, &buf, 4096, &len)
                if rc == OK { counts[2 * t] += 1 } else if rc == E_CLOSED { counts[2 * t + 1] += 1 }
            }
        }
        // Every call either succeeded or saw the closed handle; calls after close saw it closed.
        #expect((0..<8).map { counts[2 * $0] + counts[2 * $0 + 1] }.allSatisfy { $0 == 2000 })
        #expect(counts[1] == 1500)
    }
}
