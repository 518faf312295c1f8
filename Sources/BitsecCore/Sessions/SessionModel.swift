internal import COpenSSL

/// How a session is tied to the client that created it. A request that does not match is
/// treated as a hijack: the session ends and an audit event records it.
public enum SessionBinding: String, Sendable, CaseIterable {
    /// No binding: the identifier alone authenticates.
    case none
    /// The client address's network (IPv4 /24, IPv6 /64 by default).
    case clientAddress = "client_address"
    /// The exact `User-Agent` text.
    case userAgent = "user_agent"

    var code: UInt8 {
        switch self {
        case .none: return 0
        case .clientAddress: return 1
        case .userAgent: return 2
        }
    }
}

/// Why a session was accepted or refused. The codes are stable (C: BITSEC_SESSION_REASON_*).
public enum SessionReason: Int32, Sendable, CaseIterable {
    case valid = 0
    /// No such session: never created, revoked, rotated away, evicted, or a malformed token.
    case unknown = 1
    /// The absolute timeout passed.
    case expired = 2
    /// The idle timeout passed since the session was last used.
    case idleTimeout = 3
    /// The request came from another client than the one bound (client address or user
    /// agent): the session was ended.
    case bindingMismatch = 4

    public var text: String {
        switch self {
        case .valid: return "valid"
        case .unknown: return "unknown"
        case .expired: return "expired"
        case .idleTimeout: return "idle_timeout"
        case .bindingMismatch: return "binding_mismatch"
        }
    }
}

/// One session as stored: the user, the tenant, the instants (Unix seconds) and the binding
/// digest. Never the identifier: the record is keyed by the identifier's hash.
public struct SessionRecord: Sendable, Equatable, FixedLayoutValue {
    public var user: [UInt8]
    public var tenant: [UInt8]
    public var created: Int64
    public var lastSeen: Int64
    /// The absolute expiry (created + absolute timeout).
    public var expires: Int64
    /// The idle timeout in seconds (0: none).
    public var idle: Int64
    /// 16 bytes: a digest of the bound value (zero without a binding).
    public var binding: [UInt8]
    /// `SessionBinding.code`.
    public var kind: UInt8

    /// Longest user identifier and tenant a session holds (bytes of UTF-8).
    public static let maxUserBytes = 128
    public static let maxTenantBytes = 64
    static let bindingBytes = 16

    /// The instant the session stops being valid when not used again.
    public var validUntil: Int64 {
        guard idle > 0 else { return expires }
        let (s, o) = lastSeen.addingReportingOverflow(idle)
        return o ? expires : min(expires, s)
    }

    public func isLive(at now: Int64) -> Bool { now < validUntil }

    public static func storedSize(layout: Int) -> Int { 32 + 16 + 3 + maxUserBytes + maxTenantBytes + 5 }

    public init(user: [UInt8], tenant: [UInt8], created: Int64, lastSeen: Int64, expires: Int64, idle: Int64, binding: [UInt8], kind: UInt8) {
        self.user = user; self.tenant = tenant; self.created = created; self.lastSeen = lastSeen
        self.expires = expires; self.idle = idle; self.binding = binding; self.kind = kind
    }

    public init(loading p: UnsafeRawPointer, layout: Int) {
        created = p.loadUnaligned(fromByteOffset: 0, as: Int64.self)
        lastSeen = p.loadUnaligned(fromByteOffset: 8, as: Int64.self)
        expires = p.loadUnaligned(fromByteOffset: 16, as: Int64.self)
        idle = p.loadUnaligned(fromByteOffset: 24, as: Int64.self)
        binding = Array(UnsafeRawBufferPointer(start: p + 32, count: Self.bindingBytes))
        kind = p.load(fromByteOffset: 48, as: UInt8.self)
        let ul = min(Int(p.load(fromByteOffset: 49, as: UInt8.self)), Self.maxUserBytes)
        let tl = min(Int(p.load(fromByteOffset: 50, as: UInt8.self)), Self.maxTenantBytes)
        user = Array(UnsafeRawBufferPointer(start: p + 51, count: ul))
        tenant = Array(UnsafeRawBufferPointer(start: p + 51 + Self.maxUserBytes, count: tl))
    }

    public func store(to p: UnsafeMutableRawPointer, layout: Int) {
        p.storeBytes(of: created, toByteOffset: 0, as: Int64.self)
        p.storeBytes(of: lastSeen, toByteOffset: 8, as: Int64.self)
        p.storeBytes(of: expires, toByteOffset: 16, as: Int64.self)
        p.storeBytes(of: idle, toByteOffset: 24, as: Int64.self)
        for i in 0..<Self.bindingBytes { p.storeBytes(of: i < binding.count ? binding[i] : 0, toByteOffset: 32 + i, as: UInt8.self) }
        p.storeBytes(of: kind, toByteOffset: 48, as: UInt8.self)
        let ul = min(user.count, Self.maxUserBytes), tl = min(tenant.count, Self.maxTenantBytes)
        p.storeBytes(of: UInt8(ul), toByteOffset: 49, as: UInt8.self)
        p.storeBytes(of: UInt8(tl), toByteOffset: 50, as: UInt8.self)
        for i in 0..<ul { p.storeBytes(of: user[i], toByteOffset: 51 + i, as: UInt8.self) }
        for i in 0..<tl { p.storeBytes(of: tenant[i], toByteOffset: 51 + Self.maxUserBytes + i, as: UInt8.self) }
    }
}

/// Session tokens and identifiers.
///
/// - The token (the cookie's value, a secret): 32 bytes from OpenSSL's DRBG (256 bits)
///   base64url-encoded, a dot, and the user's tag: 56 characters of `A-Za-z0-9-_.`.
/// - The tag: 9 bytes of SHA-256 over the tenant and user, base64url (12 characters). It
///   places a user's sessions together (one Redis Cluster slot); it is not secret.
/// - The session identifier (`session_id`, public: listed, put in tokens, logged): 18 bytes of
///   SHA-256 over the token, base64url, a dot and the tag: 37 characters. Records are keyed
///   by it, so the store never holds a token.
public enum SessionToken {
    public static let tokenLength = 56
    public static let idLength = 37
    static let randomBytes = 32
    static let hashBytes = 18
    static let tagLength = 12

    /// SHA-256 of the concatenated parts, with the digest fetched once (an implicit fetch on
    /// every call costs microseconds in OpenSSL 3).
    static func sha256Checked(_ parts: [[UInt8]]) -> [UInt8]? {
        var md = [UInt8](repeating: 0, count: 32)
        var data: [UInt8] = []
        data.reserveCapacity(parts.reduce(0) { $0 + $1.count })
        for p in parts { data.append(contentsOf: p) }
        var n: UInt32 = 0
        let type = Fetched.sha256 ?? EVP_sha256()
        let ok = data.withUnsafeBytes { d in
            md.withUnsafeMutableBytes { m in
                EVP_Digest(d.baseAddress, d.count, m.baseAddress?.assumingMemoryBound(to: UInt8.self), &n, type, nil)
            }
        }
        return ok == 1 ? md : nil
    }

    /// SHA-256 where a failure (an OpenSSL defect: hashing memory cannot fail otherwise) may
    /// give a fixed value: the tag (placement only) and a request's binding digest (0xFF
    /// bytes, which no stored binding has: the session is refused).
    static func sha256(_ parts: [[UInt8]]) -> [UInt8] {
        sha256Checked(parts) ?? [UInt8](repeating: 0xFF, count: 32)
    }

    static let tagDomain = Array("bitsec-session-user\u{0}".utf8)
    static let idDomain = Array("bitsec-session-id\u{0}".utf8)
    static let bindingDomain = Array("bitsec-session-binding\u{0}".utf8)

    /// The tag of a (tenant, user).
    public static func tag(user: [UInt8], tenant: [UInt8]) -> String {
        let lens: [UInt8] = [UInt8(truncatingIfNeeded: tenant.count), UInt8(truncatingIfNeeded: user.count)]
        return Base64.encodeString(sha256([tagDomain, lens, tenant, user]).prefix(9))
    }

    /// A new token and its identifier.
    static func make(tag: String) throws(BitsecError) -> (token: String, id: String) {
        let r = try OpenSSL.randomBytes(count: randomBytes)
        let token = Base64.encodeString(r) + "." + tag
        guard let id = id(ofValidToken: Array(token.utf8), tag: tag) else { throw BitsecError(.crypto, "SHA-256 failed") }
        return (token, id)
    }

    /// Nil when hashing failed: never a fixed identifier that many tokens would share.
    static func id(ofValidToken t: [UInt8], tag: String) -> String? {
        guard let h = sha256Checked([idDomain, t]) else { return nil }
        return Base64.encodeString(h.prefix(hashBytes)) + "." + tag
    }

    @inline(__always)
    static func isB64(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F
    }

    static func wellFormed(_ b: UnsafeRawBufferPointer, hashLength: Int) -> Bool {
        guard b.count == hashLength + 1 + tagLength, b[hashLength] == UInt8(ascii: ".") else { return false }
        for (i, c) in b.enumerated() where i != hashLength { if !isB64(c) { return false } }
        return true
    }

    /// The identifier of a token, nil when it is not a well-formed token.
    public static func id(ofToken b: UnsafeRawBufferPointer) -> String? {
        guard wellFormed(b, hashLength: 43) else { return nil }
        let tag = String(decoding: b[44...], as: UTF8.self)
        return id(ofValidToken: Array(b), tag: tag)
    }

    /// The (hash, tag) parts of a well-formed identifier.
    public static func parts(ofID s: String) -> (hash: String, tag: String)? {
        let u = Array(s.utf8)
        let ok = u.withUnsafeBytes { wellFormed($0, hashLength: 24) }
        guard ok else { return nil }
        return (String(decoding: u[0..<24], as: UTF8.self), String(decoding: u[25...], as: UTF8.self))
    }

    /// The digest of a bound value (`kind`: `SessionBinding.code`).
    static func bindingDigest(kind: UInt8, _ value: [UInt8]) -> [UInt8] {
        guard kind != 0 else { return [UInt8](repeating: 0, count: SessionRecord.bindingBytes) }
        return Array(sha256([bindingDomain, [kind], value]).prefix(SessionRecord.bindingBytes))
    }

    /// As `bindingDigest`, nil when hashing failed (a session is never stored with it).
    static func bindingDigestChecked(kind: UInt8, _ value: [UInt8]) -> [UInt8]? {
        guard kind != 0 else { return [UInt8](repeating: 0, count: SessionRecord.bindingBytes) }
        return sha256Checked([bindingDomain, [kind], value]).map { Array($0.prefix(SessionRecord.bindingBytes)) }
    }
}

/// What a validation found: the record when valid (or when its binding did not match).
public enum SessionCheck: Sendable {
    case valid(SessionRecord)
    case refused(SessionReason, SessionRecord?)
}

/// The bound values of one request, as digests per binding kind.
public struct SessionClient: Sendable {
    public let address: [UInt8]
    public let userAgent: [UInt8]
    let ipv4Prefix: Int
    let ipv6Prefix: Int

    func value(kind: UInt8) -> [UInt8] {
        switch kind {
        case 1: return Array(LoginKeys.client(String(decoding: address, as: UTF8.self), ipv4Prefix: ipv4Prefix, ipv6Prefix: ipv6Prefix).utf8)
        case 2: return userAgent
        default: return []
        }
    }

    func digest(kind: UInt8) -> [UInt8] {
        // An absent value never matches: a bound session used without it is refused.
        if kind == 1 && address.isEmpty || kind == 2 && userAgent.isEmpty { return [UInt8](repeating: 0xFF, count: SessionRecord.bindingBytes) }
        return SessionToken.bindingDigest(kind: kind, value(kind: kind))
    }
}
