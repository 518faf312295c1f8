internal import COpenSSL

/// One CSRF key: an HMAC-SHA256 context keyed once; each MAC duplicates it (so concurrent
/// calls never share a context) and the key bytes are not kept outside OpenSSL.
final class CSRFKey: @unchecked Sendable {
    // Written once in init, then only read (EVP_MAC_CTX_dup does not modify its source).
    private let template: OpaquePointer

    init(secret: SecretBytes, fieldPath: String) throws(BitsecError) {
        guard secret.count == 32 else {
            throw .config("\(fieldPath): a CSRF key is 32 bytes (give it as hex or base64 with \"encoding\"), got \(secret.count)")
        }
        ERR_clear_error()
        guard let mac = EVP_MAC_fetch(nil, "HMAC", nil) else { throw OpenSSL.lastError("EVP_MAC_fetch(HMAC)") }
        defer { EVP_MAC_free(mac) }
        guard let c = EVP_MAC_CTX_new(mac) else { throw OpenSSL.lastError("EVP_MAC_CTX_new") }
        let ok = "SHA256".withCString { name -> Bool in
            var params = [OSSL_PARAM_construct_utf8_string(staticCString("digest"), UnsafeMutablePointer(mutating: name), 0), OSSL_PARAM_construct_end()]
            return secret.withBytes { k in
                EVP_MAC_init(c, k.baseAddress?.assumingMemoryBound(to: UInt8.self), k.count, &params) == 1
            }
        }
        guard ok else {
            EVP_MAC_CTX_free(c)
            throw OpenSSL.lastError("EVP_MAC_init(HMAC-SHA256)")
        }
        template = c
    }

    deinit { EVP_MAC_CTX_free(template) }

    /// HMAC-SHA256 of `data` (32 bytes), nil when OpenSSL fails.
    func mac(_ data: [UInt8]) -> [UInt8]? {
        guard let c = EVP_MAC_CTX_dup(template) else { return nil }
        defer { EVP_MAC_CTX_free(c) }
        var out = [UInt8](repeating: 0, count: 32)
        var n = 0
        let ok = data.withUnsafeBytes { d in
            out.withUnsafeMutableBytes { o in
                EVP_MAC_update(c, d.baseAddress?.assumingMemoryBound(to: UInt8.self), d.count) == 1 &&
                    EVP_MAC_final(c, o.baseAddress?.assumingMemoryBound(to: UInt8.self), &n, 32) == 1
            }
        }
        return ok && n == 32 ? out : nil
    }
}

/// The keys in use: the first signs new tokens, all of them verify (rotation: add the new
/// key first, keep the old one in `previous_keys` for at least `max_age_s`).
final class CSRFKeyring: Sendable {
    let keys: [CSRFKey]
    /// How many keys verify (for describe and the audit event; never key material).
    var count: Int { keys.count }

    init(keys: [CSRFKey]) { self.keys = keys }

    /// Reads `key` and `previous_keys` of a `csrf` object.
    static func read(_ o: ConfigObject, context: ConfigContext) throws(BitsecError) -> CSRFKeyring {
        guard let primary = try SecretRef.read(o, "key", context: context) else {
            throw .config("\(o.fieldPath("key")) is required (32 bytes: a secret reference with \"encoding\": \"hex\" or \"base64\")")
        }
        var keys = [try CSRFKey(secret: primary.bytes, fieldPath: o.fieldPath("key"))]
        if let prev = try o.array("previous_keys") {
            guard prev.count <= CSRFService.maxPreviousKeys else {
                throw .config("\(o.fieldPath("previous_keys")): at most \(CSRFService.maxPreviousKeys) keys")
            }
            for (i, v) in prev.enumerated() {
                let path = "\(o.fieldPath("previous_keys"))[\(i)]"
                let ref = try SecretRef.read(try ConfigObject(v, path: path), context: context)
                keys.append(try CSRFKey(secret: ref.bytes, fieldPath: path))
            }
        }
        return CSRFKeyring(keys: keys)
    }
}
