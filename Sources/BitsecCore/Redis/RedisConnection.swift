internal import CHiredis
internal import Glibc

/// One synchronous Redis connection. Not thread-safe: the pool hands it to one thread at a
/// time. After any I/O error or timeout the connection is unusable, so it is marked broken
/// and the pool discards it.
///
/// Two transports, one reply parser: a plain TCP or Unix connection is hiredis' own
/// (`redisContext`); a TLS connection (`redis.tls`) is a socket and an OpenSSL `SSL` of
/// bitsec's own (`RedisTLSStream`, hiredis 0.14 has no TLS) whose bytes go through hiredis'
/// reply reader. Either way replies are converted by the same code.
public final class RedisConnection {
    private let ctx: UnsafeMutablePointer<redisContext>?
    private let tls: RedisTLSStream?
    /// Encoded commands waiting to be written (TLS transport: flushed by the next read).
    private var pendingOut: [UInt8] = []
    public private(set) var broken = false
    let endpointText: String
    let commandTimeoutMs: Int
    /// Round-trip histogram (nil: not timed).
    var latency: LatencyHistograms? = nil

    private init(ctx: UnsafeMutablePointer<redisContext>?, tls: RedisTLSStream?, endpointText: String, commandTimeoutMs: Int) {
        self.ctx = ctx
        self.tls = tls
        self.endpointText = endpointText
        self.commandTimeoutMs = commandTimeoutMs
    }

    deinit { if let ctx { redisFree(ctx) } }

    /// In a forked child, before the parent's connection is dropped: a TLS stream closes its
    /// socket only (RedisTLSStream.abandonedByFork). A plain hiredis context frees as usual
    /// (close and free: no lock another thread could hold).
    func abandonAfterFork() { tls?.abandonedByFork = true }

    private static func timeval(ms: Int) -> Glibc.timeval {
        Glibc.timeval(tv_sec: ms / 1000, tv_usec: (ms % 1000) * 1000)
    }

    private static func errorText(_ ctx: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: ctx.pointee.errstr) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    /// Connects (with TLS when `config.tls` is set), sets the command timeout, authenticates
    /// and selects the database.
    public static func connect(_ config: RedisConfig) throws(BitsecError) -> RedisConnection {
        let conn: RedisConnection
        if let tls = config.tls {
            guard case .tcp(let host, let port) = config.endpoint else {
                throw .config("redis \(config.endpointText): tls needs a host and port, not a unix socket")
            }
            let stream = try RedisTLSStream.connect(host: host, port: port, tls: tls, connectTimeoutMs: config.connectTimeoutMs,
                                                    commandTimeoutMs: config.commandTimeoutMs, what: config.endpointText)
            conn = RedisConnection(ctx: nil, tls: stream, endpointText: config.endpointText, commandTimeoutMs: config.commandTimeoutMs)
        } else {
            let tv = timeval(ms: config.connectTimeoutMs)
            let raw: UnsafeMutablePointer<redisContext>?
            switch config.endpoint {
            case .tcp(let host, let port): raw = redisConnectWithTimeout(host, port, tv)
            case .unix(let path): raw = redisConnectUnixWithTimeout(path, tv)
            }
            guard let raw else { throw .backend("redis \(config.endpointText): cannot allocate a connection") }
            if raw.pointee.err != 0 {
                let text = errorText(raw)
                redisFree(raw)
                throw .backend("redis \(config.endpointText): connect failed: \(text)")
            }
            conn = RedisConnection(ctx: raw, tls: nil, endpointText: config.endpointText, commandTimeoutMs: config.commandTimeoutMs)
            guard redisSetTimeout(raw, timeval(ms: config.commandTimeoutMs)) == bitsec_redis_ok() else {
                throw .backend("redis \(config.endpointText): cannot set the command timeout")
            }
        }
        conn.latency = config.latency
        if let password = config.password {
            var args: [[UInt8]] = [Array("AUTH".utf8)]
            if let user = config.username { args.append(Array(user.utf8)) }
            var pw = password.withBytes { Array($0) }
            args.append(pw)
            defer { wipe(&pw); for k in args.indices { wipe(&args[k]) } }
            let reply = try conn.command(args)
            if reply.errorMessage != nil {
                // Never echo the server's text: it could quote the credentials.
                throw .backend("redis \(config.endpointText): authentication failed")
            }
        }
        if config.db != 0 {
            let reply = try conn.command([Array("SELECT".utf8), Array(String(config.db).utf8)])
            if let e = reply.errorMessage { throw .backend("redis \(config.endpointText): SELECT \(config.db) failed: \(e)") }
        }
        return conn
    }

    /// Sends one command and waits up to the command timeout plus `extraTimeoutMs` for its
    /// reply (for commands that block on the server by design, such as `WAIT`).
    public func command(_ args: [[UInt8]], extraTimeoutMs: Int) throws(BitsecError) -> RedisReply {
        guard extraTimeoutMs > 0 else { return try command(args) }
        let longer = commandTimeoutMs + extraTimeoutMs
        if let ctx { _ = redisSetTimeout(ctx, Self.timeval(ms: longer)) } else { tls?.setCommandTimeout(ms: longer) }
        let r = try command(args)
        if let ctx { _ = redisSetTimeout(ctx, Self.timeval(ms: commandTimeoutMs)) } else { tls?.setCommandTimeout(ms: commandTimeoutMs) }
        return r
    }

    /// Sends one command and waits for its reply (bounded by the command timeout).
    /// A Redis error reply is returned as `.error`, not thrown; I/O failures throw.
    public func command(_ args: [[UInt8]]) throws(BitsecError) -> RedisReply {
        guard !args.isEmpty, args.count <= Int(Int32.max) else { throw .invalid("redis command needs arguments") }
        var e = RESPEncoder(count: args.count, capacity: args.reduce(16) { $0 + $1.count + 16 })
        for a in args { e.bulk(a) }
        return try command(resp: e.bytes)
    }

    /// Sends one command already encoded in RESP (`*N\r\n$len\r\narg\r\n...`, see
    /// `RESPEncoder`) and waits for its reply, as `command(_:)` does. For hot paths that keep
    /// most of a command pre-encoded: hiredis' argv formatting costs microseconds per command.
    /// `resp` must be exactly one well-formed command (a malformed one desynchronises the
    /// connection: the server answers with an error and closes it, and it is then discarded).
    public func command(resp: [UInt8]) throws(BitsecError) -> RedisReply {
        guard !broken else { throw .backend("redis \(endpointText): connection is broken") }
        guard !resp.isEmpty else { throw .invalid("redis command needs arguments") }
        guard let latency else { return try readReply(appended: append(resp)) }
        let t0 = latency.start(.redisRoundTrip)
        defer { latency.finish(.redisRoundTrip, t0) }
        return try readReply(appended: append(resp))
    }

    /// Sends several commands in one write and reads their replies in order: one network
    /// round trip for all of them (they need not touch one slot). Error replies come back as
    /// `.error` in their place; an I/O failure throws and breaks the connection.
    public func pipeline(_ commands: [[[UInt8]]]) throws(BitsecError) -> [RedisReply] {
        guard !broken else { throw .backend("redis \(endpointText): connection is broken") }
        guard !commands.isEmpty else { return [] }
        // Every command is checked before any is appended: a half-appended batch would leave
        // commands in hiredis' buffer whose replies nobody reads.
        for args in commands where args.isEmpty || args.count > Int(Int32.max) {
            throw .invalid("redis command needs arguments")
        }
        var appended = true
        for args in commands {
            var e = RESPEncoder(count: args.count, capacity: args.reduce(16) { $0 + $1.count + 16 })
            for a in args { e.bulk(a) }
            appended = appended && append(e.bytes)
        }
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        let t0 = latency?.start(.redisRoundTrip) ?? 0
        defer { latency?.finish(.redisRoundTrip, t0) }
        for _ in commands { replies.append(try readReply(appended: appended)) }
        return replies
    }

    private func append(_ resp: [UInt8]) -> Bool {
        guard let ctx else {
            pendingOut.append(contentsOf: resp)
            return true
        }
        return resp.withUnsafeBytes { raw in
            redisAppendFormattedCommand(ctx, raw.baseAddress?.assumingMemoryBound(to: CChar.self), raw.count)
        } == bitsec_redis_ok()
    }

    /// Reads the next reply (flushing what was appended first).
    private func readReply(appended: Bool) throws(BitsecError) -> RedisReply {
        let r: RedisReply
        if let tls {
            r = try readTLSReply(tls, appended: appended)
        } else if let ctx {
            r = try readHiredisReply(ctx, appended: appended)
        } else {
            throw .internalError("redis \(endpointText): connection without a transport")
        }
        if case .error(let e) = r, e.hasPrefix("READONLY") || e.contains("READONLY You can't write") {
            // The server is a replica now (a failover demoted it): nothing was written. The
            // connection is discarded, and in sentinel mode the primary is discovered again.
            broken = true
            throw .backend("redis \(endpointText): the server is a read-only replica (READONLY)")
        }
        return r
    }

    private func readTLSReply(_ tls: RedisTLSStream, appended: Bool) throws(BitsecError) -> RedisReply {
        guard appended else {
            broken = true
            throw .backend("redis \(endpointText): connection lost")
        }
        if !pendingOut.isEmpty {
            let out = pendingOut
            pendingOut.removeAll(keepingCapacity: true)
            if let e = tls.write(out) {
                broken = true
                throw .backend("redis \(endpointText): \(e == "timeout" ? "no reply within \(commandTimeoutMs) ms" : e)")
            }
        }
        switch tls.readReply(timeoutMs: commandTimeoutMs) {
        case .success(let reply):
            defer { freeReplyObject(reply) }
            return Self.convert(reply.assumingMemoryBound(to: redisReply.self), depth: 0)
        case .failure(let f):
            broken = true
            throw .backend("redis \(endpointText): \(f.timeout ? "no reply within \(commandTimeoutMs) ms" : f.text)")
        }
    }

    private func readHiredisReply(_ ctx: UnsafeMutablePointer<redisContext>, appended: Bool) throws(BitsecError) -> RedisReply {
        var reply: UnsafeMutableRawPointer? = nil
        if !appended || redisGetReply(ctx, &reply) != bitsec_redis_ok() || reply == nil {
            // Any failure leaves hiredis' context unusable: the pool discards this connection.
            if let reply { freeReplyObject(reply) }
            broken = true
            let code = ctx.pointee.err
            let text = Self.errorText(ctx)
            if code == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK || text.contains("temporarily unavailable")) {
                throw .backend("redis \(endpointText): no reply within \(commandTimeoutMs) ms")
            }
            throw .backend("redis \(endpointText): \(text.isEmpty ? "connection lost" : text)")
        }
        guard let reply else { throw .backend("redis \(endpointText): connection lost") }
        defer { freeReplyObject(reply) }
        return Self.convert(reply.assumingMemoryBound(to: redisReply.self), depth: 0)
    }

    private static func convert(_ r: UnsafeMutablePointer<redisReply>, depth: Int) -> RedisReply {
        let t = r.pointee.type
        if t == bitsec_redis_reply_integer() { return .integer(Int64(r.pointee.integer)) }
        if t == bitsec_redis_reply_nil() { return .null }
        if t == bitsec_redis_reply_string() || t == bitsec_redis_reply_status() || t == bitsec_redis_reply_error() {
            let bytes: [UInt8]
            if let s = r.pointee.str, r.pointee.len > 0 {
                bytes = Array(UnsafeRawBufferPointer(start: s, count: r.pointee.len))
            } else {
                bytes = []
            }
            if t == bitsec_redis_reply_string() { return .string(bytes) }
            let text = String(decoding: bytes, as: UTF8.self)
            return t == bitsec_redis_reply_status() ? .status(text) : .error(text)
        }
        if t == bitsec_redis_reply_array() {
            guard depth < 16, let elements = r.pointee.element else { return .array([]) }
            var out: [RedisReply] = []
            out.reserveCapacity(r.pointee.elements)
            for k in 0..<r.pointee.elements {
                if let e = elements[k] { out.append(convert(e, depth: depth + 1)) } else { out.append(.null) }
            }
            return .array(out)
        }
        return .error("unexpected reply type \(t)")
    }
}
