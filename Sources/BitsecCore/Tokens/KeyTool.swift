internal import COpenSSL
internal import Glibc

/// Signing-key tooling for operators (the `bitsec keys generate` and `bitsec jwks` commands):
/// new private keys from OpenSSL's generator, and the public JWK of a PEM key. Only what a
/// token key can be: RSA (2048, 3072, 4096 bits), EC (P-256, P-384, P-521) and Ed25519.
public enum KeyTool {
    /// The key types `generate` accepts, by name.
    public static let types = ["RSA-2048", "RSA-3072", "RSA-4096", "P-256", "P-384", "P-521", "Ed25519"]

    /// Most bytes of a PEM document `publicJWK` reads (a certificate chain fits easily).
    public static let maxPEMBytes = 65_536

    /// A new private key of `type` as unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`),
    /// the form the tokens section reads. The caller wipes the returned bytes.
    public static func generate(_ type: String) throws(BitsecError) -> [UInt8] {
        ERR_clear_error()
        let algorithm: String
        var rsaBits: Int32 = 0
        var group: String? = nil
        switch type {
        case "RSA-2048": algorithm = "RSA"; rsaBits = 2048
        case "RSA-3072": algorithm = "RSA"; rsaBits = 3072
        case "RSA-4096": algorithm = "RSA"; rsaBits = 4096
        case "P-256": algorithm = "EC"; group = ECCurve.p256.groupName
        case "P-384": algorithm = "EC"; group = ECCurve.p384.groupName
        case "P-521": algorithm = "EC"; group = ECCurve.p521.groupName
        case "Ed25519": algorithm = "ED25519"
        default:
            throw .invalid("unknown key type (expected one of \(types.joined(separator: ", ")))")
        }
        guard let ctx = EVP_PKEY_CTX_new_from_name(nil, algorithm, nil) else { throw OpenSSL.lastError("EVP_PKEY_CTX_new_from_name") }
        defer { EVP_PKEY_CTX_free(ctx) }
        guard EVP_PKEY_keygen_init(ctx) == 1 else { throw OpenSSL.lastError("EVP_PKEY_keygen_init") }
        if rsaBits > 0 {
            guard EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, rsaBits) == 1 else { throw OpenSSL.lastError("EVP_PKEY_CTX_set_rsa_keygen_bits") }
        }
        if let group {
            guard EVP_PKEY_CTX_set_group_name(ctx, group) == 1 else { throw OpenSSL.lastError("EVP_PKEY_CTX_set_group_name") }
        }
        var raw: OpaquePointer? = nil
        guard EVP_PKEY_generate(ctx, &raw) == 1, let raw else { throw OpenSSL.lastError("EVP_PKEY_generate") }
        let key = PKey(raw, hasPrivate: true)
        // A secure-memory BIO: OpenSSL clears its buffer when it is freed.
        guard let bio = BIO_new(BIO_s_secmem()) else { throw OpenSSL.lastError("BIO_new") }
        defer { BIO_free(bio) }
        guard PEM_write_bio_PrivateKey(bio, key.raw, nil, nil, 0, nil, nil) == 1 else {
            throw OpenSSL.lastError("PEM_write_bio_PrivateKey")
        }
        let pending = Int(BIO_ctrl_pending(bio))
        guard pending > 0, pending < Int(Int32.max) else { throw .internalError("empty PEM output") }
        var out = [UInt8](repeating: 0, count: pending)
        let n = out.withUnsafeMutableBytes { BIO_read(bio, $0.baseAddress, Int32(pending)) }
        guard n == Int32(pending) else {
            wipe(&out)
            throw OpenSSL.lastError("BIO_read")
        }
        return out
    }

    /// The public JWK of a PEM key (a private key, a public key or a certificate) in the
    /// RFC 7638 canonical form: only the required members, in lexicographic order, without
    /// whitespace, so that the SHA-256 of these bytes is the key's JWK thumbprint. RSA:
    /// `{"e","kty","n"}`; EC: `{"crv","kty","x","y"}`; Ed25519: `{"crv","kty","x"}`.
    /// Never contains private material.
    public static func publicJWK(pem: UnsafeRawBufferPointer) throws(BitsecError) -> [UInt8] {
        guard pem.count <= maxPEMBytes else { throw .tooLarge("pem: \(pem.count) bytes exceeds the limit of \(maxPEMBytes)") }
        let key: PKey
        do {
            key = try KeyBuilder.fromPEM(Array(pem))
        } catch {
            // The reader's messages are phrased for the configuration; here they are inputs.
            throw error.status == .config ? .malformed(error.detail) : error
        }
        func b64(_ bytes: [UInt8]) -> String { Base64.encodeString(bytes) }
        switch key.kind {
        case .rsa, .rsaPSS:
            let n = try bigNumber(key, "n")
            let e = try bigNumber(key, "e")
            return Array(#"{"e":"\#(b64(e))","kty":"RSA","n":"\#(b64(n))"}"#.utf8)
        case .ec(let curve):
            guard let curve else { throw BitsecError(.unsupported, "EC key on a curve JOSE does not name (P-256, P-384, P-521 only)") }
            var point = [UInt8](repeating: 0, count: 1 + 2 * curve.coordinateBytes)
            var len = 0
            ERR_clear_error()
            guard EVP_PKEY_get_octet_string_param(key.raw, "encoded-pub-key", &point, point.count, &len) == 1,
                  len == point.count, point[0] == 0x04 else {
                throw OpenSSL.lastError("EVP_PKEY_get_octet_string_param")
            }
            let c = curve.coordinateBytes
            let x = Array(point[1...c]), y = Array(point[(c + 1)...(2 * c)])
            return Array(#"{"crv":"\#(curve.rawValue)","kty":"EC","x":"\#(b64(x))","y":"\#(b64(y))"}"#.utf8)
        case .ed25519:
            var x = [UInt8](repeating: 0, count: 32)
            var len = 32
            ERR_clear_error()
            guard EVP_PKEY_get_raw_public_key(key.raw, &x, &len) == 1, len == 32 else {
                throw OpenSSL.lastError("EVP_PKEY_get_raw_public_key")
            }
            return Array(#"{"crv":"Ed25519","kty":"OKP","x":"\#(b64(x))"}"#.utf8)
        case .other:
            throw BitsecError(.unsupported, "key type not usable for tokens (RSA, EC P-256/384/521 and Ed25519 only)")
        }
    }

    /// A public BIGNUM parameter of a key, big-endian without leading zeros.
    private static func bigNumber(_ key: PKey, _ name: StaticString) throws(BitsecError) -> [UInt8] {
        ERR_clear_error()
        var bn: OpaquePointer? = nil
        guard EVP_PKEY_get_bn_param(key.raw, KeyBuilder.cName(name), &bn) == 1, let bn else {
            throw OpenSSL.lastError("EVP_PKEY_get_bn_param")
        }
        defer { BN_free(bn) }
        let count = (Int(BN_num_bits(bn)) + 7) / 8
        var out = [UInt8](repeating: 0, count: max(count, 1))
        let written = Int(BN_bn2bin(bn, &out))
        return Array(out.prefix(max(written, 1)))
    }
}
