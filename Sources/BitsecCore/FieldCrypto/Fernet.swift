internal import COpenSSL

/// Fernet (https://github.com/fernet/spec), for data written by Python's
/// `cryptography.fernet`: decrypt (with an optional TTL), produce tokens, MultiFernet-style
/// rotation. Token = base64url(0x80 || timestamp (u64 BE) || IV (16) || AES-128-CBC/PKCS7
/// ciphertext || HMAC-SHA256(signing key, everything before)), padded like cryptography's.
///
/// Keys are tried in order (the first one signs new tokens), as MultiFernet does. The HMAC
/// is verified (CRYPTO_memcmp) before anything else is trusted; the TTL is checked only on
/// authentic tokens, so a forged token is `tampered`, never `expired`.
public final class FernetKeyring: Sendable {
    struct Key: Sendable {
        let signing: SecretBytes
        let encryption: SecretBytes
    }
    let keys: [Key]
    /// cryptography's _MAX_CLOCK_SKEW: a timestamp further in the future fails with a TTL.
    public static let maxClockSkew: Int64 = 60
    public static let version: UInt8 = 0x80
    static let overhead = 1 + 8 + 16 + 32

    /// `secrets` are the 32-byte Fernet keys (decoded), first = primary.
    public init(secrets: [SecretBytes]) throws(BitsecError) {
        var out: [Key] = []
        for (i, s) in secrets.enumerated() {
            guard s.count == 32 else { throw .config("fields.fernet.keys[\(i)]: a Fernet key is 32 bytes (url-safe base64 of 32 bytes; use \"encoding\": \"base64url\"), got \(s.count)") }
            let b = s.bytes
            var sign = Array(b[0..<16]), enc = Array(b[16..<32])
            out.append(Key(signing: SecretBytes(sign), encryption: SecretBytes(enc)))
            var copy = b
            wipe(&copy); wipe(&sign); wipe(&enc)
        }
        guard !out.isEmpty else { throw .config("fields.fernet.keys must hold at least one key") }
        keys = out
    }

    /// The token length for a plaintext of `n` bytes (BITSEC_FERNET_* bound); 0 beyond the maximum.
    public static func bound(plaintext n: Int) -> Int {
        guard n >= 0, n <= FieldFormat.maxPlaintextBytes else { return 0 }
        let raw = overhead + (n / 16 + 1) * 16
        return (raw + 2) / 3 * 4
    }

    public static let maxTokenBytes = bound(plaintext: FieldFormat.maxPlaintextBytes)

    nonisolated(unsafe) private static let cbc: OpaquePointer? = { () -> OpaquePointer? in EVP_CIPHER_fetch(nil, "AES-128-CBC", nil) }()

    private static func hmac(_ key: SecretBytes, _ data: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) -> Bool {
        var n = 0
        return key.withBytes { k in
            EVP_Q_mac(nil, "HMAC", nil, "SHA256", nil, k.baseAddress, k.count,
                      data.baseAddress?.assumingMemoryBound(to: UInt8.self), data.count,
                      out.assumingMemoryBound(to: UInt8.self), 32, &n) != nil && n == 32
        }
    }

    // MARK: - Encrypt

    /// A token for `plaintext` with `timestamp`, under the first key. `iv` is for the spec's
    /// test vector only; nil draws a random IV (RAND_bytes).
    public func encrypt(_ plaintext: UnsafeRawBufferPointer, timestamp: Int64, iv: [UInt8]? = nil) throws(BitsecError) -> [UInt8] {
        guard plaintext.count <= FieldFormat.maxPlaintextBytes else {
            throw .tooLarge("plaintext: \(plaintext.count) bytes exceeds the limit of \(FieldFormat.maxPlaintextBytes)")
        }
        guard timestamp >= 0 else { throw .invalid("timestamp is negative") }
        ERR_clear_error()
        let key = keys[0]
        let ctLen = (plaintext.count / 16 + 1) * 16
        var raw = [UInt8](repeating: 0, count: 1 + 8 + 16 + ctLen + 32)
        raw[0] = Self.version
        for i in 0..<8 { raw[1 + i] = UInt8(truncatingIfNeeded: UInt64(timestamp) >> UInt64(56 - 8 * i)) }
        if let iv {
            guard iv.count == 16 else { throw .invalid("iv must be 16 bytes") }
            raw.replaceSubrange(9..<25, with: iv)
        } else {
            try raw.withMutableRawBytes { (r) throws(BitsecError) in
                try OpenSSL.randomBytes(UnsafeMutableRawBufferPointer(rebasing: r[9..<25]))
            }
        }
        guard let cbc = Self.cbc, let ctx = EVP_CIPHER_CTX_new() else { throw OpenSSL.lastError("AES-128-CBC") }
        defer { EVP_CIPHER_CTX_free(ctx) }
        let ok: Bool = raw.withUnsafeMutableBytes { r in
            guard let base = r.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return false }
            let keyed = key.encryption.withBytes { k in
                EVP_EncryptInit_ex2(ctx, cbc, k.baseAddress?.assumingMemoryBound(to: UInt8.self), base + 9, nil) == 1
            }
            guard keyed else { return false }
            var n: Int32 = 0, f: Int32 = 0
            guard EVP_EncryptUpdate(ctx, base + 25, &n, plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(plaintext.count)) == 1 else { return false }
            guard EVP_EncryptFinal_ex(ctx, base + 25 + Int(n), &f) == 1, Int(n + f) == ctLen else { return false }
            return Self.hmac(key.signing, UnsafeRawBufferPointer(start: base, count: 25 + ctLen), into: base + 25 + ctLen)
        }
        guard ok else { throw OpenSSL.lastError("Fernet encrypt") }
        return Base64.encode(raw, urlSafe: true, padded: true)
    }

    // MARK: - Decrypt

    /// The result of opening a Fernet token: the decision, and on success the plaintext
    /// (the caller wipes it) and the token's timestamp.
    public struct Opened {
        public var reason: FieldReason
        public var plaintext: [UInt8]
        public var timestamp: Int64
    }

    /// Opens a token. `ttl` > 0 enforces the age (`expired`) and the 60 s future skew
    /// (`notYetValid`) at `now`, as cryptography does; `ttl` == 0 checks neither (the
    /// original meaning of 0 in `bitsec_fernet_decrypt`; `decrypt(_:timeToLive:now:)` takes
    /// an optional TTL where 0 is a limit).
    public func decrypt(_ token: UnsafeRawBufferPointer, ttl: Int64, now: Int64) throws(BitsecError) -> Opened {
        guard ttl >= 0 else { throw .invalid("ttl is negative") }
        return try decrypt(token, timeToLive: ttl > 0 ? ttl : nil, now: now)
    }

    /// Opens a token. A `timeToLive` (nil = no limit, as cryptography's `ttl=None`) is
    /// applied exactly as cryptography's `Fernet.decrypt(token, ttl)`: `expired` when
    /// `timestamp + ttl < now`, `notYetValid` when `now + 60 < timestamp` (so `ttl` 0 accepts
    /// only tokens stamped in the current second or up to 60 s ahead). Negative TTLs are
    /// refused (`invalid`).
    public func decrypt(_ token: UnsafeRawBufferPointer, timeToLive: Int64?, now: Int64) throws(BitsecError) -> Opened {
        guard token.count <= Self.maxTokenBytes else {
            throw .tooLarge("token: \(token.count) bytes exceeds the limit of \(Self.maxTokenBytes)")
        }
        if let ttl = timeToLive, ttl < 0 { throw .invalid("ttl is negative") }
        let fail = { (r: FieldReason) in Opened(reason: r, plaintext: [], timestamp: 0) }
        guard var raw = Base64.decodeLenient(token, urlSafe: true) else { return fail(.malformed) }
        defer { wipe(&raw) }
        guard raw.count >= Self.overhead + 16, (raw.count - Self.overhead) % 16 == 0, raw[0] == Self.version else {
            return fail(.malformed)
        }
        ERR_clear_error()
        let signedLen = raw.count - 32
        var match: Key? = nil
        raw.withUnsafeBytes { r in
            guard let base = r.baseAddress else { return }
            var mac = [UInt8](repeating: 0, count: 32)
            for k in keys {
                let ok = mac.withUnsafeMutableBytes { m -> Bool in
                    guard let mp = m.baseAddress else { return false }
                    return Self.hmac(k.signing, UnsafeRawBufferPointer(start: base, count: signedLen), into: mp)
                        && CRYPTO_memcmp(mp, base + signedLen, 32) == 0
                }
                if ok { match = k; break }
            }
        }
        ERR_clear_error()
        guard let key = match else { return fail(.tampered) }
        var ts: UInt64 = 0
        for i in 1...8 { ts = ts << 8 | UInt64(raw[i]) }
        guard ts <= UInt64(Int64.max) else { return fail(.malformed) }
        let timestamp = Int64(ts)
        if let ttl = timeToLive {
            let (limit, over) = timestamp.addingReportingOverflow(ttl)
            if !over, limit < now { return fail(.expired) }
            if now.addingReportingOverflow(Self.maxClockSkew).partialValue < timestamp { return fail(.notYetValid) }
        }
        guard let cbc = Self.cbc, let ctx = EVP_CIPHER_CTX_new() else { throw OpenSSL.lastError("AES-128-CBC") }
        defer { EVP_CIPHER_CTX_free(ctx) }
        let ctLen = signedLen - 25
        var pt = [UInt8](repeating: 0, count: ctLen)
        var ptLen = 0
        let ok: Bool = raw.withUnsafeBytes { r in
            pt.withUnsafeMutableBytes { p in
                guard let base = r.baseAddress?.assumingMemoryBound(to: UInt8.self),
                      let out = p.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return false }
                let keyed = key.encryption.withBytes { k in
                    EVP_DecryptInit_ex2(ctx, cbc, k.baseAddress?.assumingMemoryBound(to: UInt8.self), base + 9, nil) == 1
                }
                guard keyed else { return false }
                var n: Int32 = 0, f: Int32 = 0
                guard EVP_DecryptUpdate(ctx, out, &n, base + 25, Int32(ctLen)) == 1 else { return false }
                guard EVP_DecryptFinal_ex(ctx, out + Int(n), &f) == 1 else { return false }
                ptLen = Int(n + f)
                return true
            }
        }
        ERR_clear_error()
        guard ok else {
            wipe(&pt)
            return fail(.malformed)  // authentic but badly padded: not a token any Fernet writes
        }
        let plain = Array(pt[0..<ptLen])
        wipe(&pt)
        return Opened(reason: .ok, plaintext: plain, timestamp: timestamp)
    }

    /// MultiFernet.rotate: re-encrypts an authentic token under the first key, keeping its
    /// timestamp. No TTL is applied (as in cryptography).
    public func rotate(_ token: UnsafeRawBufferPointer) throws(BitsecError) -> (FieldReason, [UInt8]) {
        var o = try decrypt(token, timeToLive: nil, now: 0)
        defer { wipe(&o.plaintext) }
        guard o.reason == .ok else { return (o.reason, []) }
        let t = try o.plaintext.withRawBytes { (p) throws(BitsecError) -> [UInt8] in try encrypt(p, timestamp: o.timestamp) }
        return (.ok, t)
    }
}
