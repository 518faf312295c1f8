internal import COpenSSL

/// Thin, checked entry points to OpenSSL 3 shared by every capability.
public enum OpenSSL {
    /// Cryptographically secure random bytes from OpenSSL's DRBG.
    public static func randomBytes(_ out: UnsafeMutableRawBufferPointer) throws(BitsecError) {
        guard out.count > 0 else { return }
        ERR_clear_error()
        guard out.count <= Int(Int32.max), RAND_bytes(out.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(out.count)) == 1 else {
            throw lastError("RAND_bytes")
        }
    }

    public static func randomBytes(count: Int) throws(BitsecError) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: count)
        try b.withMutableRawBytes { (p) throws(BitsecError) in try randomBytes(p) }
        return b
    }

    /// Constant-time equality (CRYPTO_memcmp); lengths are public.
    public static func constantTimeEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        guard a.count == b.count else { return false }
        if a.count == 0 { return true }
        return CRYPTO_memcmp(a.baseAddress, b.baseAddress, a.count) == 0
    }

    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.withUnsafeBytes { x in b.withUnsafeBytes { y in constantTimeEqual(x, y) } }
    }

    /// The OpenSSL version the library runs against, e.g. "OpenSSL 3.0.19 ...".
    public static var versionText: String { String(cString: OpenSSL_version(Int32(OPENSSL_VERSION))) }

    /// Drains OpenSSL's error queue into an error naming the failed call (the library's reason
    /// string only: OpenSSL never puts key material in its error queue).
    public static func lastError(_ call: String) -> BitsecError {
        let code = ERR_get_error()
        ERR_clear_error()
        if code == 0 { return .crypto("\(call) failed") }
        var buf = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buf, buf.count)
        let text = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return .crypto("\(call) failed: \(text)")
    }
}
