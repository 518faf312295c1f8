internal import COpenSSL
internal import CHiredis
internal import Glibc

/// The `redis.tls` configuration: TLS 1.2 or later through OpenSSL, the server's certificate
/// verified against `ca_file` and its name or address, an optional client certificate.
///
/// ```json
/// "tls": {"ca_file": "/etc/bitsec/redis-ca.pem",
///         "cert_file": "/etc/bitsec/client.pem", "key_file": "/etc/bitsec/client.key",
///         "key_password": {"env": "REDIS_KEY_PASSWORD"},   // only for an encrypted key
///         "server_name": "redis.internal",                 // default: the host connected to
///         "verify": true}
/// ```
///
/// The OpenSSL context is built once, when the configuration is read: a missing or unreadable
/// file, a key that does not match its certificate or a wrong key password fail
/// `bitsec_runtime_open` naming the field, never a later request.
public struct RedisTLSConfig: Sendable {
    public var caFile: String?
    public var certFile: String?
    public var keyFile: String?
    public var serverName: String?
    public var verify: Bool
    let context: RedisTLSContext

    public static func read(_ o: ConfigObject, context: ConfigContext) throws(BitsecError) -> RedisTLSConfig {
        let ca = try o.string("ca_file")
        let cert = try o.string("cert_file")
        let key = try o.string("key_file")
        let password = try SecretRef.read(o, "key_password", context: context)
        let serverName = try o.string("server_name")
        // Verification is on unless switched off by this explicit field.
        let verify = try o.bool("verify", default: true)
        try o.finish()
        for (field, value) in [("ca_file", ca), ("cert_file", cert), ("key_file", key), ("server_name", serverName)] {
            if let value, value.isEmpty || value.utf8.contains(0) || value.utf8.count > 4096 {
                throw .config("\(o.fieldPath(field)) must be a non-empty path or name")
            }
        }
        guard (cert == nil) == (key == nil) else {
            throw .config("\(o.path): cert_file and key_file go together (the client certificate and its key)")
        }
        if password != nil && key == nil { throw .config("\(o.fieldPath("key_password")) needs key_file") }
        if verify && ca == nil {
            throw .config("\(o.fieldPath("ca_file")) is required: the CA that signed the Redis server's certificate (or \"verify\": false, never in production)")
        }
        let ctx = try RedisTLSContext(caFile: ca, certFile: cert, keyFile: key, keyPassword: password,
                                      verify: verify, path: o)
        return RedisTLSConfig(caFile: ca, certFile: cert, keyFile: key, serverName: serverName, verify: verify, context: ctx)
    }
}

/// Text of OpenSSL's error queue (library and reason strings: never key material), cleared.
func opensslErrors() -> String {
    var parts: [String] = []
    while true {
        let e = ERR_get_error()
        if e == 0 { break }
        if parts.count >= 4 { continue }
        var buf = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(e, &buf, buf.count)
        let s = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // "error:0A000086:SSL routines::certificate verify failed": keep the reason.
        parts.append(s.split(separator: ":", omittingEmptySubsequences: false).last.map(String.init) ?? s)
    }
    return parts.joined(separator: "; ")
}

/// One `SSL_CTX` for every connection of a pool (OpenSSL contexts are safe to share between
/// threads once configured).
final class RedisTLSContext: @unchecked Sendable {
    let ctx: OpaquePointer

    init(caFile: String?, certFile: String?, keyFile: String?, keyPassword: SecretRef?, verify: Bool,
         path o: ConfigObject) throws(BitsecError) {
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(TLS_client_method()) else { throw .internalError("redis tls: SSL_CTX_new failed") }
        self.ctx = ctx
        guard bitsec_ssl_ctx_set_min_tls12(ctx) == 1 else { throw .internalError("redis tls: cannot require TLS 1.2") }
        if let caFile {
            guard SSL_CTX_load_verify_locations(ctx, caFile, nil) == 1 else {
                throw .config("\(o.fieldPath("ca_file")): cannot load CA certificates from \(caFile) (\(opensslErrors()))")
            }
        }
        SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nil)
        if let certFile, let keyFile {
            guard SSL_CTX_use_certificate_chain_file(ctx, certFile) == 1 else {
                throw .config("\(o.fieldPath("cert_file")): cannot load the client certificate from \(certFile) (\(opensslErrors()))")
            }
            guard let bio = BIO_new_file(keyFile, "r") else {
                ERR_clear_error()
                throw .config("\(o.fieldPath("key_file")): cannot read \(keyFile)")
            }
            defer { BIO_free(bio) }
            let pkey: OpaquePointer?
            if let keyPassword {
                // A NUL-terminated copy for OpenSSL's password argument, wiped after use.
                var pw = keyPassword.withBytes { Array($0) }
                pw.append(0)
                defer { wipe(&pw) }
                pkey = pw.withUnsafeMutableBytes { PEM_read_bio_PrivateKey(bio, nil, nil, $0.baseAddress) }
            } else {
                // An empty password: an encrypted key fails instead of prompting on a terminal.
                var empty: [UInt8] = [0]
                pkey = empty.withUnsafeMutableBytes { PEM_read_bio_PrivateKey(bio, nil, nil, $0.baseAddress) }
            }
            guard let pkey else {
                ERR_clear_error()
                throw .config("\(o.fieldPath("key_file")): cannot read the private key in \(keyFile) (not PEM, or encrypted and key_password wrong or missing)")
            }
            defer { EVP_PKEY_free(pkey) }
            guard SSL_CTX_use_PrivateKey(ctx, pkey) == 1, SSL_CTX_check_private_key(ctx) == 1 else {
                ERR_clear_error()
                throw .config("\(o.fieldPath("key_file")): the private key does not match the certificate in cert_file")
            }
        }
    }

    deinit { SSL_CTX_free(ctx) }
}

/// A TCP connection carrying TLS, with hiredis' reply parser (`redisReader`) over the
/// decrypted bytes. OpenSSL works on memory BIOs and this type moves the bytes with
/// `send(MSG_NOSIGNAL)` and `recv`, so a peer that closes the connection can never raise
/// SIGPIPE in the host process. Blocking socket with `SO_RCVTIMEO`/`SO_SNDTIMEO`: the
/// handshake is bounded by the connect timeout, every command by the command timeout. Not
/// thread-safe (one `RedisConnection` owns it).
final class RedisTLSStream {
    private let fd: Int32
    private let ssl: OpaquePointer
    private let rbio: OpaquePointer  // owned by `ssl`
    private let wbio: OpaquePointer  // owned by `ssl`
    private let reader: UnsafeMutablePointer<redisReader>
    private var buffer = [UInt8](repeating: 0, count: 16 * 1024)
    /// Whether a reply has arrived yet, and whether a client certificate was offered: with
    /// TLS 1.3 a server that refuses the client certificate closes the connection after the
    /// handshake, so the first exchange is where that shows.
    private var answered = false
    var offeredClientCertificate = false
    /// Set in a forked child: the deinit closes the socket only. SSL_free takes locks of the
    /// shared SSL_CTX that another of the parent's threads may have held at the fork; the
    /// SSL object and the reader are left to the process's exit.
    var abandonedByFork = false

    private init(fd: Int32, ssl: OpaquePointer, rbio: OpaquePointer, wbio: OpaquePointer, reader: UnsafeMutablePointer<redisReader>) {
        self.fd = fd
        self.ssl = ssl
        self.rbio = rbio
        self.wbio = wbio
        self.reader = reader
    }

    deinit {
        if abandonedByFork { close(fd); return }
        SSL_free(ssl)  // frees the BIOs; no close_notify: the peer may be gone
        close(fd)
        redisReaderFree(reader)
    }

    /// Socket-level outcome of moving bytes.
    enum IOFailure: Error { case timeout, closed, failed(String) }

    /// Sends everything OpenSSL has queued in the write BIO.
    private func flushOut() -> IOFailure? {
        while BIO_ctrl_pending(wbio) > 0 {
            let n = buffer.withUnsafeMutableBytes { BIO_read(wbio, $0.baseAddress, Int32($0.count)) }
            if n <= 0 { return .failed("TLS output buffer error") }
            var off = 0
            while off < Int(n) {
                let sent = buffer.withUnsafeBytes { send(fd, $0.baseAddress.map { $0 + off }, Int(n) - off, Int32(MSG_NOSIGNAL)) }
                if sent < 0 {
                    if errno == EINTR { continue }
                    if errno == EAGAIN || errno == EWOULDBLOCK { return .timeout }
                    if errno == EPIPE || errno == ECONNRESET { return .closed }
                    return .failed(String(cString: strerror(errno)))
                }
                off += sent
            }
        }
        return nil
    }

    /// Receives what the socket has (waiting up to its timeout) into the read BIO.
    private func fillIn() -> IOFailure? {
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return .closed }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { return .timeout }
                if errno == ECONNRESET { return .closed }
                return .failed(String(cString: strerror(errno)))
            }
            let w = buffer.withUnsafeBytes { BIO_write(rbio, $0.baseAddress, Int32(n)) }
            return w == Int32(n) ? nil : .failed("TLS input buffer error")
        }
    }

    static func isIPAddress(_ host: String) -> Bool {
        var a4 = in_addr()
        var a6 = in6_addr()
        return inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1
    }

    static func setTimeout(_ fd: Int32, ms: Int) {
        var tv = Glibc.timeval(tv_sec: ms / 1000, tv_usec: (ms % 1000) * 1000)
        let len = socklen_t(MemoryLayout<Glibc.timeval>.size)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, len)
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, len)
    }

    func setCommandTimeout(ms: Int) { Self.setTimeout(fd, ms: ms) }

    /// TCP connect within `timeoutMs` to the first address of `host` that answers.
    private static func tcpConnect(host: String, port: Int32, timeoutMs: Int, what: String) throws(BitsecError) -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>? = nil
        let rc = getaddrinfo(host, String(port), &hints, &res)
        guard rc == 0, let first = res else {
            throw .backend("redis \(what): cannot resolve \(host)")
        }
        defer { freeaddrinfo(first) }
        var lastError: Int32 = 0
        var cur: UnsafeMutablePointer<addrinfo>? = first
        while let ai = cur {
            cur = ai.pointee.ai_next
            let fd = socket(ai.pointee.ai_family, ai.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), ai.pointee.ai_protocol)
            if fd < 0 { lastError = errno; continue }
            let flags = fcntl(fd, F_GETFL, 0)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            var ok = Glibc.connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0
            if !ok && errno == EINPROGRESS {
                var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                let n = poll(&p, 1, Int32(clamping: timeoutMs))
                if n == 1 {
                    var err: Int32 = 0
                    var len = socklen_t(MemoryLayout<Int32>.size)
                    _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
                    ok = err == 0
                    lastError = err
                } else {
                    lastError = n == 0 ? ETIMEDOUT : errno
                }
            } else if !ok {
                lastError = errno
            }
            if ok {
                _ = fcntl(fd, F_SETFL, flags)
                var one: Int32 = 1
                _ = setsockopt(fd, Int32(IPPROTO_TCP), 1 /* TCP_NODELAY */, &one, socklen_t(MemoryLayout<Int32>.size))
                return fd
            }
            close(fd)
        }
        if lastError == ETIMEDOUT { throw .backend("redis \(what): connect failed: no answer within \(timeoutMs) ms") }
        throw .backend("redis \(what): connect failed: \(String(cString: strerror(lastError)))")
    }

    /// Connects, then runs the TLS handshake: SNI and the name or address checked are
    /// `tls.server_name` when given, else `host` (an IP address is matched against the
    /// certificate's IP SANs, a name against its DNS SANs).
    static func connect(host: String, port: Int32, tls: RedisTLSConfig, connectTimeoutMs: Int,
                        commandTimeoutMs: Int, what: String) throws(BitsecError) -> RedisTLSStream {
        let fd = try tcpConnect(host: host, port: port, timeoutMs: connectTimeoutMs, what: what)
        setTimeout(fd, ms: connectTimeoutMs)
        ERR_clear_error()
        guard let ssl = SSL_new(tls.context.ctx) else {
            close(fd)
            throw .internalError("redis \(what): SSL_new failed")
        }
        guard let reader = redisReaderCreate() else {
            SSL_free(ssl)
            close(fd)
            throw .internalError("redis \(what): cannot allocate a reply reader")
        }
        let rbioOrNil = BIO_new(BIO_s_mem())
        let wbioOrNil = BIO_new(BIO_s_mem())
        guard let rbio = rbioOrNil, let wbio = wbioOrNil else {
            if let b = rbioOrNil { BIO_free(b) }
            if let b = wbioOrNil { BIO_free(b) }
            SSL_free(ssl)
            redisReaderFree(reader)
            close(fd)
            throw .internalError("redis \(what): cannot allocate TLS buffers")
        }
        SSL_set_bio(ssl, rbio, wbio)
        let stream = RedisTLSStream(fd: fd, ssl: ssl, rbio: rbio, wbio: wbio, reader: reader)
        let name = tls.serverName ?? host
        let nameIsIP = isIPAddress(name)
        if tls.verify {
            let param = SSL_get0_param(ssl)
            let set = nameIsIP ? X509_VERIFY_PARAM_set1_ip_asc(param, name) : X509_VERIFY_PARAM_set1_host(param, name, 0)
            guard set == 1 else { throw .config("redis \(what): \(name) is not a usable host name or address for verification") }
        }
        // SNI carries names only, never addresses (RFC 6066).
        if !nameIsIP { _ = bitsec_ssl_set_sni(ssl, name) }
        var failure: IOFailure? = nil
        var rc: Int32 = 0
        while true {
            ERR_clear_error()
            rc = SSL_connect(ssl)
            if let f = stream.flushOut() { failure = f; break }
            if rc == 1 { break }
            guard SSL_get_error(ssl, rc) == SSL_ERROR_WANT_READ else { break }
            if let f = stream.fillIn() { failure = f; break }
        }
        if rc != 1 {
            let verifyResult = SSL_get_verify_result(ssl)
            let queue = opensslErrors()
            if verifyResult != X509_V_OK {
                let why = String(cString: X509_verify_cert_error_string(verifyResult))
                throw .backend("redis \(what): TLS handshake failed: server certificate not accepted: \(why) (checked name: \(name))")
            }
            if case .timeout = failure {
                throw .backend("redis \(what): TLS handshake failed: no answer within \(connectTimeoutMs) ms")
            }
            if queue.contains("certificate required") || queue.contains("handshake failure") && tls.certFile == nil {
                throw .backend("redis \(what): TLS handshake failed: the server requires a client certificate (tls.cert_file/key_file) (\(queue))")
            }
            if queue.contains("bad certificate") || queue.contains("unknown ca") {
                throw .backend("redis \(what): TLS handshake failed: the server refused the client certificate (\(queue))")
            }
            let detail: String
            switch failure {
            case .closed?: detail = "connection closed by the server (is it a TLS port?)"
            case .failed(let t)?: detail = t
            default: detail = queue.isEmpty ? "protocol error" : queue
            }
            throw .backend("redis \(what): TLS handshake failed: \(detail)")
        }
        setTimeout(fd, ms: commandTimeoutMs)
        stream.offeredClientCertificate = tls.certFile != nil
        return stream
    }

    /// Writes all of `bytes`. Returns nil on success, else the failure text ("timeout" for
    /// a timeout).
    func write(_ bytes: [UInt8]) -> String? {
        var off = 0
        while off < bytes.count {
            ERR_clear_error()
            let n = bytes.withUnsafeBytes { raw -> Int32 in
                SSL_write(ssl, raw.baseAddress.map { $0 + off }, Int32(clamping: raw.count - off))
            }
            if let f = flushOut() { return text(f) }
            if n <= 0 {
                guard SSL_get_error(ssl, n) == SSL_ERROR_WANT_READ else { return text(.failed(sslFailure())) }
                if let f = fillIn() { return text(f) }
                continue
            }
            off += Int(n)
        }
        return nil
    }

    /// Reads until hiredis' reader yields one reply (owned by the caller: `freeReplyObject`).
    func readReply(timeoutMs: Int) -> Result<UnsafeMutableRawPointer, ReadFailure> {
        while true {
            var reply: UnsafeMutableRawPointer? = nil
            if redisReaderGetReply(reader, &reply) != bitsec_redis_ok() {
                return .failure(.init(text: "protocol error in the reply", timeout: false))
            }
            if let reply {
                answered = true
                return .success(reply)
            }
            ERR_clear_error()
            let n = buffer.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
            if n <= 0 {
                let code = SSL_get_error(ssl, n)
                // A key update or an alert may have queued output.
                if let f = flushOut() { return .failure(.init(text: text(f), timeout: isTimeout(f))) }
                if code == SSL_ERROR_WANT_READ {
                    if let f = fillIn() { return .failure(.init(text: text(f), timeout: isTimeout(f))) }
                    continue
                }
                if code == SSL_ERROR_ZERO_RETURN { return .failure(.init(text: text(.closed), timeout: false)) }
                let q = sslFailure()
                if q.contains("certificate required") { return .failure(.init(text: text(.closed) + " (\(q))", timeout: false)) }
                return .failure(.init(text: q, timeout: false))
            }
            let fed = buffer.withUnsafeBytes { raw in
                redisReaderFeed(reader, raw.baseAddress?.assumingMemoryBound(to: CChar.self), Int(n))
            }
            if fed != bitsec_redis_ok() { return .failure(.init(text: "protocol error in the reply", timeout: false)) }
        }
    }

    struct ReadFailure: Error { let text: String; let timeout: Bool }

    private func isTimeout(_ f: IOFailure) -> Bool { if case .timeout = f { return true }; return false }

    private func text(_ f: IOFailure) -> String {
        switch f {
        case .timeout: return "timeout"
        case .failed(let t): return t
        case .closed:
            if !answered {
                return offeredClientCertificate
                    ? "TLS connection closed by the server before its first reply (client certificate refused?)"
                    : "TLS connection closed by the server before its first reply (does it require a client certificate? set tls.cert_file and tls.key_file)"
            }
            return "connection lost"
        }
    }

    private func sslFailure() -> String {
        let queue = opensslErrors()
        return "TLS error: \(queue.isEmpty ? "protocol error" : queue)"
    }
}
