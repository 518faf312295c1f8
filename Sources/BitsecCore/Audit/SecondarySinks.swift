internal import Glibc

/// A record on its way to the sinks.
struct OutRecord {
    var seq: UInt64
    var line: [UInt8]
    var key: MetricKey
}

/// Sinks other than the file: they receive the same lines, but the chain does not depend on
/// them. A failure is counted (errors, records lost for that sink) and reported by an
/// `audit`/`sink_recovered` record once the sink works again; it never stops the file sink.
protocol SecondarySink: AnyObject {
    var name: String { get }
    /// Delivers the records; returns how many were lost (0 on success) and the error text.
    func deliver(_ records: ArraySlice<OutRecord>) -> (lost: Int, error: String?)
    func close()
}

/// Standard output (one line per record). Durability is the reader's business.
final class StdoutSink: SecondarySink {
    let name = "stdout"
    func deliver(_ records: ArraySlice<OutRecord>) -> (lost: Int, error: String?) {
        var chunk: [UInt8] = []
        for r in records { chunk.append(contentsOf: r.line) }
        var off = 0
        while off < chunk.count {
            let n = chunk.withUnsafeBytes { p -> Int in
                guard let base = p.baseAddress else { return -1 }
                return write(1, base + off, p.count - off)
            }
            if n < 0 {
                if errno == EINTR { continue }
                return (records.count, "stdout: \(String(cString: strerror(errno)))")
            }
            off += n
        }
        return (0, nil)
    }
    func close() {}
}

/// RFC 5424 over the local syslog socket (a unix datagram socket, `/dev/log` by default):
/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID audit - MSG`, MSG being the JSON record.
/// Severity: warning for failure/denied/error results, err for security incidents, info
/// otherwise.
final class SyslogSink: SecondarySink {
    let name = "syslog"
    let config: AuditConfig.SyslogSink
    private var fd: Int32 = -1
    private let pid = String(getpid())

    init(_ c: AuditConfig.SyslogSink) { config = c }
    deinit { close() }

    func close() { if fd >= 0 { Glibc.close(fd); fd = -1 } }

    private func connectSocket() -> String? {
        let s = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { return "socket: \(String(cString: strerror(errno)))" }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(config.socketPath.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (k, b) in bytes.enumerated() where k < raw.count - 1 { raw[k] = b }
        }
        var tv = timeval(tv_sec: 1, tv_usec: 0)
        _ = setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let why = String(cString: strerror(errno))
            Glibc.close(s)
            return "connect \(config.socketPath): \(why)"
        }
        fd = s
        return nil
    }

    static func severity(_ k: MetricKey) -> Int {
        if k.type == "security_incident" { return 3 }
        switch k.result {
        case "failure", "denied", "error": return 4
        default: return 6
        }
    }

    func deliver(_ records: ArraySlice<OutRecord>) -> (lost: Int, error: String?) {
        if fd < 0, let e = connectSocket() { return (records.count, "syslog: \(e)") }
        var sent = 0
        for r in records {
            var msg: [UInt8] = []
            msg.reserveCapacity(r.line.count + 128)
            msg.append(0x3C)
            msg.append(contentsOf: String(config.facility * 8 + Self.severity(r.key)).utf8)
            msg.append(contentsOf: ">1 ".utf8)
            msg.append(contentsOf: RFC3339.string(micros: Clock.nowMicros()).utf8)
            msg.append(0x20)
            msg.append(contentsOf: config.hostname.utf8)
            msg.append(0x20)
            msg.append(contentsOf: config.appName.utf8)
            msg.append(0x20)
            msg.append(contentsOf: pid.utf8)
            msg.append(contentsOf: " audit - ".utf8)
            msg.append(contentsOf: r.line.dropLast())
            var n: Int
            repeat {
                n = msg.withUnsafeBytes { p in send(fd, p.baseAddress, p.count, Int32(MSG_NOSIGNAL)) }
            } while n < 0 && errno == EINTR
            if n < 0 {
                let why = String(cString: strerror(errno))
                close()
                return (records.count - sent, "syslog: send to \(config.socketPath): \(why)")
            }
            sent += 1
        }
        return (0, nil)
    }
}

/// A Redis Stream through the runtime's shared pool: `XADD <prefix><stream> MAXLEN ~ n * seq
/// <seq> record <line>`. Trimming discards the oldest entries; Redis acknowledges an XADD
/// once it is in memory, so what survives a Redis crash depends on its persistence settings
/// (AOF `appendfsync always` for the strongest): the file sink is the trail of record.
final class RedisStreamSink: SecondarySink {
    let name = "redis"
    let pool: RedisPool
    let key: [UInt8]
    let config: AuditConfig.RedisSink

    init(_ c: AuditConfig.RedisSink, pool: RedisPool) {
        self.pool = pool
        self.config = c
        self.key = Array((pool.config.keyPrefix + c.stream).utf8)
    }

    func deliver(_ records: ArraySlice<OutRecord>) -> (lost: Int, error: String?) {
        var done = 0
        for r in records {
            var args: [[UInt8]] = [Array("XADD".utf8), key]
            if config.maxLen > 0 {
                args.append(Array("MAXLEN".utf8))
                if config.approximate { args.append([0x7E]) }
                args.append(Array(String(config.maxLen).utf8))
            }
            args.append([0x2A])
            args.append(Array("seq".utf8)); args.append(Array(String(r.seq).utf8))
            args.append(Array("record".utf8)); args.append(Array(r.line.dropLast()))
            do {
                let reply = try pool.command(args)
                if let e = reply.errorMessage { return (records.count - done, "redis: XADD refused: \(e)") }
            } catch {
                // The rest of the batch would fail the same way (the pool is in backoff).
                return (records.count - done, "redis: \(error.detail)")
            }
            done += 1
        }
        return (0, nil)
    }

    func close() {}
}
