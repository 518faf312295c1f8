internal import COpenSSL
internal import Glibc

/// The chain function: `hash_n = H(hash_{n-1} || canonical_n)`, H = SHA-256, or HMAC-SHA-256
/// keyed with the configured `hmac_key`. The first record's predecessor is 32 zero bytes.
/// Not thread-safe: the writer thread and each verifier own one.
public final class ChainHasher {
    public static let genesis = [UInt8](repeating: 0, count: 32)
    private let md: OpaquePointer
    private let mdctx: OpaquePointer
    private let mac: OpaquePointer?
    private let macctx: OpaquePointer?
    private let key: SecretBytes?
    public var keyed: Bool { key != nil }

    public init(key: SecretBytes?) throws(BitsecError) {
        ERR_clear_error()
        guard let md = EVP_MD_fetch(nil, "SHA256", nil) else { throw OpenSSL.lastError("EVP_MD_fetch(SHA256)") }
        guard let ctx = EVP_MD_CTX_new() else { EVP_MD_free(md); throw OpenSSL.lastError("EVP_MD_CTX_new") }
        self.md = md
        self.mdctx = ctx
        self.key = key
        if key != nil {
            guard let mac = EVP_MAC_fetch(nil, "HMAC", nil) else {
                EVP_MD_CTX_free(ctx); EVP_MD_free(md)
                throw OpenSSL.lastError("EVP_MAC_fetch(HMAC)")
            }
            guard let mctx = EVP_MAC_CTX_new(mac) else {
                EVP_MAC_free(mac); EVP_MD_CTX_free(ctx); EVP_MD_free(md)
                throw OpenSSL.lastError("EVP_MAC_CTX_new")
            }
            let digest = strdup("SHA256")
            let key = strdup("digest")
            var params = [OSSL_PARAM_construct_utf8_string(key, digest, 0), OSSL_PARAM_construct_end()]
            let ok = EVP_MAC_CTX_set_params(mctx, &params) == 1
            free(digest); free(key)
            guard ok else {
                EVP_MAC_CTX_free(mctx); EVP_MAC_free(mac); EVP_MD_CTX_free(ctx); EVP_MD_free(md)
                throw OpenSSL.lastError("EVP_MAC_CTX_set_params")
            }
            self.mac = mac
            self.macctx = mctx
        } else {
            self.mac = nil
            self.macctx = nil
        }
    }

    deinit {
        if let macctx { EVP_MAC_CTX_free(macctx) }
        if let mac { EVP_MAC_free(mac) }
        EVP_MD_CTX_free(mdctx)
        EVP_MD_free(md)
    }

    /// `H(prev || canonical)` into a fresh 32-byte array.
    public func chain(prev: [UInt8], canonical: UnsafeRawBufferPointer) throws(BitsecError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        ERR_clear_error()
        let ok: Bool = out.withUnsafeMutableBufferPointer { o in
            prev.withUnsafeBytes { p in
                if let macctx, let key {
                    let initOK = key.withBytes { k in EVP_MAC_init(macctx, k.baseAddress?.assumingMemoryBound(to: UInt8.self), k.count, nil) == 1 }
                    guard initOK,
                          EVP_MAC_update(macctx, p.baseAddress?.assumingMemoryBound(to: UInt8.self), p.count) == 1,
                          EVP_MAC_update(macctx, canonical.baseAddress?.assumingMemoryBound(to: UInt8.self), canonical.count) == 1
                    else { return false }
                    var n = 0
                    return EVP_MAC_final(macctx, o.baseAddress, &n, 32) == 1 && n == 32
                }
                guard EVP_DigestInit_ex2(mdctx, md, nil) == 1,
                      EVP_DigestUpdate(mdctx, p.baseAddress, p.count) == 1,
                      EVP_DigestUpdate(mdctx, canonical.baseAddress, canonical.count) == 1
                else { return false }
                var n: UInt32 = 0
                return EVP_DigestFinal_ex(mdctx, o.baseAddress, &n) == 1 && n == 32
            }
        }
        guard ok else { throw OpenSSL.lastError(keyed ? "HMAC-SHA256" : "SHA-256") }
        return out
    }

    public func chain(prev: [UInt8], canonical: [UInt8]) throws(BitsecError) -> [UInt8] {
        try canonical.withRawBytes { (raw) throws(BitsecError) -> [UInt8] in try chain(prev: prev, canonical: raw) }
    }
}

enum HexCodec {
    static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    static func append(_ bytes: [UInt8], to out: inout [UInt8]) {
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: bytes.count * 2))
        out.withUnsafeMutableBufferPointer { o in
            bytes.withUnsafeBufferPointer { b in
                digits.withUnsafeBufferPointer { d in
                    for k in 0..<b.count {
                        o[start + 2 * k] = d[Int(b[k] >> 4)]
                        o[start + 2 * k + 1] = d[Int(b[k] & 0xF)]
                    }
                }
            }
        }
    }

    /// Decimal digits of `v` appended without an intermediate String.
    static func appendDecimal(_ v: UInt64, to out: inout [UInt8]) {
        var tmp: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: enough for 20 digits
        var n = 0
        var x = v
        withUnsafeMutableBytes(of: &tmp) { t in
            repeat {
                t[23 - n] = UInt8(48 + x % 10)
                x /= 10
                n += 1
            } while x > 0
            out.append(contentsOf: t[(24 - n)...])
        }
    }

    static func string(_ bytes: [UInt8]) -> String {
        var o: [UInt8] = []
        append(bytes, to: &o)
        return String(decoding: o, as: UTF8.self)
    }

    /// Lowercase hex only (what bitsec writes), exactly `count` bytes.
    static func decode<C: Collection>(_ s: C, count: Int) -> [UInt8]? where C.Element == UInt8 {
        guard s.count == count * 2 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var hi: UInt8? = nil
        for c in s {
            let v: UInt8
            switch c {
            case 0x30...0x39: v = c - 0x30
            case 0x61...0x66: v = c - 0x61 + 10
            default: return nil
            }
            if let h = hi { out.append(h << 4 | v); hi = nil } else { hi = v }
        }
        return out
    }
}
