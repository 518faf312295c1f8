internal import COpenSSL
internal import Glibc

/// Per-thread keyed-HMAC contexts, one per algorithm: duplicating a context and freeing it
/// on every call cost more than the HMACs of a whole window, so each thread keeps one and
/// re-keys it (EVP_MAC_init with the new key). Freed when the thread exits.
private final class HMACThreadCache {
    var contexts: [OpaquePointer?] = [nil, nil, nil]

    deinit { for c in contexts { if let c { EVP_MAC_CTX_free(c) } } }

    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k) { p in
            guard let p else { return }
            Unmanaged<HMACThreadCache>.fromOpaque(p).release()
        }
        return k
    }()

    static func context(_ a: OTPAlgorithm) -> OpaquePointer? {
        let cache: HMACThreadCache
        if let p = pthread_getspecific(key) {
            cache = Unmanaged<HMACThreadCache>.fromOpaque(p).takeUnretainedValue()
        } else {
            cache = HMACThreadCache()
            pthread_setspecific(key, Unmanaged.passRetained(cache).toOpaque())
        }
        let i = Int(a.rawValue)
        if let c = cache.contexts[i] { return c }
        guard let template = HMACTemplate.of(a).ctx, let c = EVP_MAC_CTX_dup(template) else { return nil }
        cache.contexts[i] = c
        return c
    }
}

/// An unkeyed HMAC context per digest, made once; each computation duplicates it and sets the
/// key, so the digest is fetched from the provider once per process, not once per call.
private final class HMACTemplate: @unchecked Sendable {
    let ctx: OpaquePointer?

    init(digest: String) {
        var made: OpaquePointer? = nil
        if let mac = EVP_MAC_fetch(nil, "HMAC", nil) {
            if let c = EVP_MAC_CTX_new(mac) {
                var ok = false
                digest.withCString { name in
                    // OSSL_PARAM keeps the key pointer until set_params: it must be a static
                    // C string, not a String literal (whose bridged temporary is freed as soon
                    // as OSSL_PARAM_construct_utf8_string returns; ASan: use-after-free).
                    var params = [
                        OSSL_PARAM_construct_utf8_string(staticCString("digest"), UnsafeMutablePointer(mutating: name), 0),
                        OSSL_PARAM_construct_end(),
                    ]
                    ok = EVP_MAC_CTX_set_params(c, &params) == 1
                }
                if ok { made = c } else { EVP_MAC_CTX_free(c) }
            }
            EVP_MAC_free(mac)  // the context keeps its own reference
        }
        ERR_clear_error()
        ctx = made
    }

    static let sha1 = HMACTemplate(digest: "SHA1")
    static let sha256 = HMACTemplate(digest: "SHA256")
    static let sha512 = HMACTemplate(digest: "SHA512")

    static func of(_ a: OTPAlgorithm) -> HMACTemplate {
        switch a {
        case .sha1: return sha1
        case .sha256: return sha256
        case .sha512: return sha512
        }
    }
}

/// HMAC-based one-time codes (RFC 4226 §5.3) over one key: the key is set once, each counter
/// re-initialises the context (OpenSSL keeps the key) and computes one HMAC.
/// Uses the calling thread's context: lives for one call, on one thread.
public struct OTPGenerator: ~Copyable {
    private let ctx: OpaquePointer
    public let digits: Int
    private let modulus: UInt32

    /// `key`: the decoded secret (borrowed, not retained).
    public init(key: UnsafeRawBufferPointer, algorithm: OTPAlgorithm, digits: Int) throws(BitsecError) {
        guard digits >= OTPLimits.minDigits, digits <= OTPLimits.maxDigits else {
            throw .invalid("digits must be 6 to 8, not \(digits)")
        }
        guard key.count > 0 else { throw .invalid("secret is empty") }
        ERR_clear_error()
        guard let c = HMACThreadCache.context(algorithm) else {
            throw OpenSSL.lastError("EVP_MAC_CTX_dup(HMAC-\(algorithm.name))")
        }
        guard EVP_MAC_init(c, key.baseAddress?.assumingMemoryBound(to: UInt8.self), key.count, nil) == 1 else {
            throw OpenSSL.lastError("EVP_MAC_init")
        }
        ctx = c
        self.digits = digits
        var m: UInt32 = 1
        for _ in 0..<digits { m &*= 10 }
        modulus = m
    }

    // The context is the thread's (HMACThreadCache): not freed here, but re-keyed with a
    // fixed all-zero key, so no state derived from the secret outlives the call.
    deinit {
        let zero = (UInt64(0), UInt64(0))
        withUnsafeBytes(of: zero) { z in
            _ = EVP_MAC_init(ctx, z.baseAddress?.assumingMemoryBound(to: UInt8.self), z.count, nil)
        }
    }

    /// The HOTP value of `counter`: dynamic truncation modulo 10^digits.
    public func value(counter: UInt64) throws(BitsecError) -> UInt32 {
        var msg = counter.bigEndian
        var mac = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))  // 64 bytes
        var len = 0
        let ok = withUnsafeBytes(of: &msg) { m in
            withUnsafeMutableBytes(of: &mac) { out -> Bool in
                guard let o = out.baseAddress?.assumingMemoryBound(to: UInt8.self),
                      EVP_MAC_init(ctx, nil, 0, nil) == 1,
                      EVP_MAC_update(ctx, m.baseAddress?.assumingMemoryBound(to: UInt8.self), 8) == 1,
                      EVP_MAC_final(ctx, o, &len, out.count) == 1, len >= 20, len <= out.count else { return false }
                return true
            }
        }
        guard ok else { throw OpenSSL.lastError("HMAC") }
        return withUnsafeBytes(of: &mac) { b -> UInt32 in
            let offset = Int(b[len - 1] & 0x0F)
            let bin = (UInt32(b[offset] & 0x7F) << 24) | (UInt32(b[offset + 1]) << 16) | (UInt32(b[offset + 2]) << 8) | UInt32(b[offset + 3])
            return bin % modulus
        }
    }

    /// The code of `counter` as `digits` ASCII digits (leading zeros kept).
    public func code(counter: UInt64) throws(BitsecError) -> [UInt8] {
        Self.render(try value(counter: counter), digits: digits)
    }

    /// True when `code` (already known to be `digits` ASCII digits) is the code of `counter`.
    /// The comparison is constant-time (CRYPTO_memcmp) over the rendered digits.
    public func matches(_ code: UnsafeRawBufferPointer, counter: UInt64) throws(BitsecError) -> Bool {
        var v = try value(counter: counter)
        var expected: (UInt64) = 0  // up to 8 digits
        let eq = withUnsafeMutableBytes(of: &expected) { e -> Bool in
            var i = digits
            while i > 0 {
                i -= 1
                e[i] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: v % 10)
                v /= 10
            }
            return CRYPTO_memcmp(e.baseAddress, code.baseAddress, digits) == 0
        }
        return eq
    }

    public static func render(_ value: UInt32, digits: Int) -> [UInt8] {
        var out = [UInt8](repeating: UInt8(ascii: "0"), count: digits)
        var v = value
        var i = digits
        while i > 0 {
            i -= 1
            out[i] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: v % 10)
            v /= 10
        }
        return out
    }

    /// A code is exactly `digits` ASCII digits; anything else is `malformed_code`.
    public static func isWellFormed(_ code: UnsafeRawBufferPointer, digits: Int) -> Bool {
        guard code.count == digits else { return false }
        for b in code where b < UInt8(ascii: "0") || b > UInt8(ascii: "9") { return false }
        return true
    }
}
