internal import COpenSSL

/// A C string with static storage: OSSL_PARAM keeps its key pointer, so a Swift temporary
/// C string (valid only during one call) must never be used as a parameter name.
@inline(__always)
func staticCString(_ s: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// HKDF-SHA256 through OpenSSL's EVP_KDF "HKDF" (RFC 5869, extract then expand). Used only
/// when a keyring is built, never per operation.
enum FieldKDF {
    static func hkdfSHA256(ikm: UnsafeRawBufferPointer, salt: [UInt8], info: [UInt8], length: Int) throws(BitsecError) -> SecretBytes {
        ERR_clear_error()
        guard let kdf = EVP_KDF_fetch(nil, "HKDF", nil) else { throw OpenSSL.lastError("EVP_KDF_fetch(HKDF)") }
        defer { EVP_KDF_free(kdf) }
        guard let kctx = EVP_KDF_CTX_new(kdf) else { throw OpenSSL.lastError("EVP_KDF_CTX_new") }
        defer { EVP_KDF_CTX_free(kctx) }
        var out = [UInt8](repeating: 0, count: length)
        defer { wipe(&out) }
        var digest = Array("SHA256".utf8CString)
        var saltCopy = salt
        var infoCopy = info
        let ok: Bool = digest.withUnsafeMutableBufferPointer { d in
            saltCopy.withUnsafeMutableBytes { s in
                infoCopy.withUnsafeMutableBytes { i in
                    var params: [OSSL_PARAM] = [
                        OSSL_PARAM_construct_utf8_string(staticCString("digest"), d.baseAddress, 0),
                        OSSL_PARAM_construct_octet_string(staticCString("key"), UnsafeMutableRawPointer(mutating: ikm.baseAddress), ikm.count),
                        OSSL_PARAM_construct_octet_string(staticCString("salt"), s.baseAddress, s.count),
                        OSSL_PARAM_construct_octet_string(staticCString("info"), i.baseAddress, i.count),
                        OSSL_PARAM_construct_end(),
                    ]
                    return out.withUnsafeMutableBufferPointer { o in
                        EVP_KDF_derive(kctx, o.baseAddress, o.count, &params) == 1
                    }
                }
            }
        }
        guard ok else { throw OpenSSL.lastError("EVP_KDF_derive(HKDF)") }
        return SecretBytes(out)
    }

    /// A purpose subkey of a field key: info = purpose || 0x00 || key id.
    static func subkey(_ material: SecretBytes, purpose: String, keyId: String, length: Int) throws(BitsecError) -> SecretBytes {
        let info = Array(purpose.utf8) + [0] + Array(keyId.utf8)
        return try material.withBytes { (m) throws(BitsecError) -> SecretBytes in
            try hkdfSHA256(ikm: m, salt: FieldFormat.hkdfSalt, info: info, length: length)
        }
    }
}
