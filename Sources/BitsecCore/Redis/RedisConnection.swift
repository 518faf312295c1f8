internal import CHiredis
internal import Glibc

/// One synchronous hiredis connection. Not thread-safe: the pool hands it to one thread at a
/// time. After any I/O error or timeout hiredis' context is unusable, so the connection is
/// marked broken and the pool discards it.
public final class RedisConnection {
    private let ctx: UnsafeMutablePointer<redisContext>
    public private(set) var broken = false
    let endpointText: String
    let commandTimeoutMs: Int

    private init(ctx: UnsafeMutablePointer<redisContext>, endpointText: String, commandTimeoutMs: Int) {
        self.ctx = ctx
        self.endpointText = endpointText
        self.commandTimeoutMs = commandTimeoutMs
    }

    deinit { redisFree(ctx) }

    private static func timeval(ms: Int) -> Glibc.timeval {
        Glibc.timeval(tv_sec: ms / 1000, tv_usec: (ms % 1000) * 1000)
    }

    private static func errorText(_ ctx: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: ctx.pointee.errstr) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    /// Connects, sets the command timeout, authenticates and selects the database.
    public static func connect(_ config: RedisConfig) throws(BitsecError) -> RedisConnection {
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
        let conn = RedisConnection(ctx: raw, endpointText: config.endpointText, commandTimeoutMs: config.commandTimeoutMs)
        guard redisSetTimeout(raw, timeval(ms: config.commandTimeoutMs)) == bitsec_redis_ok() else {
            throw .backend("redis \(config.endpointText): cannot set the command timeout")
        }
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
        for _ in commands { replies.append(try readReply(appended: appended)) }
        return replies
    }

    private func append(_ resp: [UInt8]) -> Bool {
        resp.withUnsafeBytes { raw in
            redisAppendFormattedCommand(ctx, raw.baseAddress?.assumingMemoryBound(to: CChar.self), raw.count)
        } == bitsec_redis_ok()
    }

    /// Reads the next reply (flushing what was appended first).
    private func readReply(appended: Bool) throws(BitsecError) -> RedisReply {
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
