internal import COpenSSL

/// scrypt (RFC 7914) through OpenSSL's EVP_KDF "SCRYPT". Parameters are checked here, before
/// OpenSSL allocates anything: a stored hash can carry any numbers.
public enum Scrypt {
    /// The largest r and p computed (RFC 7914 allows r·p up to 2^30; nothing sensible comes near).
    public static let maxR = 64, maxP = 64

    /// The bytes scrypt allocates for (N, r, p): B = 128·r·p and V = 128·r·(N + 2) (what
    /// OpenSSL checks against its maxmem_bytes). nil on overflow.
    public static func memoryBytes(n: UInt64, r: UInt64, p: UInt64) -> UInt64? {
        let (np2, o1) = n.addingReportingOverflow(2 + p)
        let (r128, o2) = r.multipliedReportingOverflow(by: 128)
        let (m, o3) = r128.multipliedReportingOverflow(by: np2)
        return o1 || o2 || o3 ? nil : m
    }

    /// Checks (N = 2^ln, r, p) against RFC 7914's constraints and the memory bound.
    public static func checkParameters(ln: Int, r: Int, p: Int, maxMemory: UInt64) throws(BitsecError) {
        guard ln >= 1, ln <= 62 else { throw .invalid("scrypt: ln must be 1 to 62") }
        // r and p are bounded like the configuration's (1 to 64): memory bounds N·r, and p
        // multiplies the time without the memory, so a stored p of 100000 must not be run.
        guard r >= 1, r <= maxR, p >= 1, p <= maxP else { throw .tooLarge("scrypt: r and p must be 1 to \(maxR)") }
        guard let mem = memoryBytes(n: UInt64(1) << UInt64(ln), r: UInt64(r), p: UInt64(p)), mem <= maxMemory else {
            throw .tooLarge("scrypt: parameters need more memory than the limit of \(maxMemory) bytes")
        }
    }

    /// Derives `length` bytes. The caller has run `checkParameters`.
    public static func derive(password: UnsafeRawBufferPointer, salt: [UInt8], ln: Int, r: Int, p: Int, length: Int,
                              maxMemory: UInt64) throws(BitsecError) -> [UInt8] {
        ERR_clear_error()
        guard let kdf = EVP_KDF_fetch(nil, "SCRYPT", nil) else { throw OpenSSL.lastError("EVP_KDF_fetch(SCRYPT)") }
        defer { EVP_KDF_free(kdf) }
        guard let kctx = EVP_KDF_CTX_new(kdf) else { throw OpenSSL.lastError("EVP_KDF_CTX_new") }
        defer { EVP_KDF_CTX_free(kctx) }
        var out = [UInt8](repeating: 0, count: length)
        var n = UInt64(1) << UInt64(ln)
        var r32 = UInt32(truncatingIfNeeded: r)
        var p32 = UInt32(truncatingIfNeeded: p)
        // OpenSSL's own bound, a little above ours so that our check is the one that decides.
        var maxmem = maxMemory &+ 4096
        var saltCopy = salt
        // An empty password still needs a valid pointer for OSSL_PARAM.
        var empty: UInt8 = 0
        let ok: Bool = withUnsafeMutablePointer(to: &empty) { e in
            saltCopy.withUnsafeMutableBytes { s in
                var params: [OSSL_PARAM] = [
                    OSSL_PARAM_construct_octet_string(staticCString("pass"),
                                                      UnsafeMutableRawPointer(mutating: password.baseAddress) ?? UnsafeMutableRawPointer(e),
                                                      password.count),
                    OSSL_PARAM_construct_octet_string(staticCString("salt"), s.baseAddress ?? UnsafeMutableRawPointer(e), s.count),
                    OSSL_PARAM_construct_uint64(staticCString("n"), &n),
                    OSSL_PARAM_construct_uint32(staticCString("r"), &r32),
                    OSSL_PARAM_construct_uint32(staticCString("p"), &p32),
                    OSSL_PARAM_construct_uint64(staticCString("maxmem_bytes"), &maxmem),
                    OSSL_PARAM_construct_end(),
                ]
                return out.withUnsafeMutableBufferPointer { o in EVP_KDF_derive(kctx, o.baseAddress, o.count, &params) == 1 }
            }
        }
        guard ok else {
            wipe(&out)
            throw OpenSSL.lastError("EVP_KDF_derive(SCRYPT)")
        }
        return out
    }
}
