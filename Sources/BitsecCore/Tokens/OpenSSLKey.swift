internal import COpenSSL
internal import Glibc
internal import Synchronization

/// An owned `EVP_PKEY`, built once (from a JWK or PEM) and shared by every verification:
/// no key is ever re-parsed per call. Freed in `deinit` (OpenSSL wipes private parts).
public final class PKey: @unchecked Sendable {
    let raw: OpaquePointer
    public let hasPrivate: Bool

    init(_ raw: OpaquePointer, hasPrivate: Bool) {
        self.raw = raw
        self.hasPrivate = hasPrivate
    }

    deinit { EVP_PKEY_free(raw) }

    public enum Kind: Sendable, Equatable { case rsa, rsaPSS, ec(ECCurve?), ed25519, other }

    public var kind: Kind {
        let id = EVP_PKEY_get_base_id(raw)
        if id == bitsec_evp_pkey_rsa() { return .rsa }
        if id == bitsec_evp_pkey_rsa_pss() { return .rsaPSS }
        if id == bitsec_evp_pkey_ed25519() { return .ed25519 }
        if id == bitsec_evp_pkey_ec() {
            var buf = [CChar](repeating: 0, count: 64)
            var len = 0
            guard EVP_PKEY_get_group_name(raw, &buf, buf.count, &len) == 1 else { return .ec(nil) }
            return .ec(ECCurve.fromGroupName(String(decoding: buf.prefix(len).map { UInt8(bitPattern: $0) }, as: UTF8.self)))
        }
        return .other
    }

    public var bits: Int { Int(EVP_PKEY_get_bits(raw)) }
}

/// Digests and the HMAC implementation, fetched once from the default provider (implicit
/// fetches on every call cost microseconds in OpenSSL 3).
enum Fetched {
    nonisolated(unsafe) static let sha256: OpaquePointer? = EVP_MD_fetch(nil, "SHA256", nil)
    nonisolated(unsafe) static let sha384: OpaquePointer? = EVP_MD_fetch(nil, "SHA384", nil)
    nonisolated(unsafe) static let sha512: OpaquePointer? = EVP_MD_fetch(nil, "SHA512", nil)
    nonisolated(unsafe) static let hmac: OpaquePointer? = EVP_MAC_fetch(nil, "HMAC", nil)

    static func md(_ alg: JWSAlgorithm) -> OpaquePointer? {
        switch alg.digestLength {
        case 32: return sha256
        case 48: return sha384
        default: return alg == .edDSA ? nil : sha512
        }
    }
}

/// An HMAC key: the secret (wiped on release) and a small pool of `EVP_MAC_CTX`s already
/// keyed, so a verification re-initialises a context instead of re-deriving the key pads.
public final class HMACKey: @unchecked Sendable {
    let secret: SecretBytes
    let alg: JWSAlgorithm
    private let template: OpaquePointer
    private let pool = Mutex<[MacContext]>([])
    /// An `EVP_MAC_CTX` used by one thread at a time (it moves through the pool).
    struct MacContext: @unchecked Sendable { let raw: OpaquePointer }
    private static let maxPooled = 16

    init(secret: SecretBytes, alg: JWSAlgorithm) throws(BitsecError) {
        guard let mac = Fetched.hmac, let ctx = EVP_MAC_CTX_new(mac) else { throw OpenSSL.lastError("EVP_MAC_CTX_new") }
        self.secret = secret
        self.alg = alg
        self.template = ctx
        ERR_clear_error()
        let digest = strdup(alg.digestName ?? "SHA256")
        let key = strdup("digest")
        defer { free(digest); free(key) }
        var params = [OSSL_PARAM_construct_utf8_string(key, digest, 0), OSSL_PARAM_construct_end()]
        let ok = secret.withBytes { raw in
            EVP_MAC_init(ctx, raw.baseAddress?.assumingMemoryBound(to: UInt8.self), raw.count, &params)
        }
        guard ok == 1 else { throw OpenSSL.lastError("EVP_MAC_init") }
    }

    deinit {
        EVP_MAC_CTX_free(template)
        pool.withLock { for c in $0 { EVP_MAC_CTX_free(c.raw) } }
    }

    /// The MAC of `data` into `out` (at least 64 bytes); returns its length, or nil.
    func mac(_ data: UnsafeRawBufferPointer, into out: UnsafeMutablePointer<UInt8>) -> Int? {
        let ctx: OpaquePointer
        if let c = pool.withLock({ $0.popLast() }) {
            ctx = c.raw
        } else if let c = EVP_MAC_CTX_dup(template) {
            ctx = c
        } else {
            return nil
        }
        // A NULL key re-initialises the context with the key it already holds.
        var n = 0
        let ok = EVP_MAC_init(ctx, nil, 0, nil) == 1
            && EVP_MAC_update(ctx, data.baseAddress?.assumingMemoryBound(to: UInt8.self), data.count) == 1
            && EVP_MAC_final(ctx, out, &n, 64) == 1
        if ok {
            let item = MacContext(raw: ctx)
            let kept = pool.withLock { (p) -> Bool in
                guard p.count < Self.maxPooled else { return false }
                p.append(item)
                return true
            }
            if !kept { EVP_MAC_CTX_free(ctx) }
            return n
        }
        EVP_MAC_CTX_free(ctx)
        ERR_clear_error()
        return nil
    }
}

// MARK: - Building keys

enum KeyBuilder {
    // EVP_PKEY_PUBLIC_KEY / EVP_PKEY_KEYPAIR (macros Swift cannot import).
    static let selectPublic: Int32 = 0x86
    static let selectKeypair: Int32 = 0x87

    /// A big-endian unsigned integer as a BIGNUM (cleared on free when secret).
    final class BN {
        let raw: OpaquePointer
        let secret: Bool
        init?(_ bytes: [UInt8], secret: Bool) {
            guard let b = bytes.withUnsafeBufferPointer({ BN_bin2bn($0.baseAddress, Int32(clamping: $0.count), nil) }) else { return nil }
            raw = b
            self.secret = secret
        }
        deinit { if secret { BN_clear_free(raw) } else { BN_free(raw) } }
    }

    /// Parameter names are static strings: the builder keeps the name pointers until
    /// OSSL_PARAM_BLD_to_param, so a temporary bridged String would dangle.
    enum Param {
        case bn(StaticString, [UInt8], secret: Bool)
        case octets(StaticString, [UInt8])
        case utf8(StaticString, String)
    }

    @inline(__always)
    static func cName(_ s: StaticString) -> UnsafePointer<CChar> {
        UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self)
    }

    /// `EVP_PKEY_fromdata` over the given parameters.
    static func fromData(type: String, params: [Param], hasPrivate: Bool) throws(BitsecError) -> PKey {
        ERR_clear_error()
        guard let bld = OSSL_PARAM_BLD_new() else { throw OpenSSL.lastError("OSSL_PARAM_BLD_new") }
        defer { OSSL_PARAM_BLD_free(bld) }
        var bns: [BN] = []
        var octets: [SecretBytes] = []
        var keep: [UnsafeMutablePointer<CChar>] = []
        defer { for p in keep { free(p) } }
        for p in params {
            switch p {
            case .bn(let name, let bytes, let secret):
                guard let bn = BN(bytes, secret: secret) else { throw OpenSSL.lastError("BN_bin2bn") }
                bns.append(bn)
                guard OSSL_PARAM_BLD_push_BN(bld, cName(name), bn.raw) == 1 else { throw OpenSSL.lastError("OSSL_PARAM_BLD_push_BN") }
            case .octets(let name, let bytes):
                // The builder keeps the pointer until OSSL_PARAM_BLD_to_param: the copy must outlive it.
                let copy = SecretBytes(bytes)
                octets.append(copy)
                let ok = copy.withBytes { OSSL_PARAM_BLD_push_octet_string(bld, cName(name), $0.baseAddress, $0.count) }
                guard ok == 1 else { throw OpenSSL.lastError("OSSL_PARAM_BLD_push_octet_string") }
            case .utf8(let name, let value):
                guard let v = strdup(value) else { throw .internalError("out of memory") }
                keep.append(v)
                guard OSSL_PARAM_BLD_push_utf8_string(bld, cName(name), v, 0) == 1 else { throw OpenSSL.lastError("OSSL_PARAM_BLD_push_utf8_string") }
            }
        }
        guard let built = OSSL_PARAM_BLD_to_param(bld) else { throw OpenSSL.lastError("OSSL_PARAM_BLD_to_param") }
        defer { OSSL_PARAM_free(built) }
        withExtendedLifetime((bns, octets)) {}
        guard let ctx = EVP_PKEY_CTX_new_from_name(nil, type, nil) else { throw OpenSSL.lastError("EVP_PKEY_CTX_new_from_name") }
        defer { EVP_PKEY_CTX_free(ctx) }
        var pkey: OpaquePointer? = nil
        guard EVP_PKEY_fromdata_init(ctx) == 1,
              EVP_PKEY_fromdata(ctx, &pkey, hasPrivate ? selectKeypair : selectPublic, built) == 1,
              let pkey else {
            throw OpenSSL.lastError("EVP_PKEY_fromdata")
        }
        let key = PKey(pkey, hasPrivate: hasPrivate)
        try check(key)
        return key
    }

    /// Validates a freshly built key (an EC point off the curve, an inconsistent RSA key).
    static func check(_ key: PKey) throws(BitsecError) {
        guard let ctx = EVP_PKEY_CTX_new_from_pkey(nil, key.raw, nil) else { throw OpenSSL.lastError("EVP_PKEY_CTX_new_from_pkey") }
        defer { EVP_PKEY_CTX_free(ctx) }
        let ok: Int32
        if key.hasPrivate && key.kind != .rsa && key.kind != .rsaPSS {
            ok = EVP_PKEY_pairwise_check(ctx)
        } else {
            ok = EVP_PKEY_public_check(ctx)
        }
        guard ok == 1 else { throw OpenSSL.lastError("key check") }
        ERR_clear_error()
    }

    /// A PEM public key (`PUBLIC KEY`), certificate (`CERTIFICATE`, its subject key) or
    /// private key (`PRIVATE KEY`, `RSA/EC PRIVATE KEY`; encrypted keys are refused).
    static func fromPEM(_ pem: [UInt8]) throws(BitsecError) -> PKey {
        let text = String(decoding: pem, as: UTF8.self)
        ERR_clear_error()
        guard let bio = pem.withUnsafeBytes({ bitsec_bio_new_mem_buf($0.baseAddress, Int32(clamping: $0.count)) }) else {
            throw OpenSSL.lastError("BIO_new_mem_buf")
        }
        defer { BIO_free(bio) }
        // Never prompt for a passphrase (the default callback reads the terminal).
        let noPassphrase: @convention(c) (UnsafeMutablePointer<CChar>?, Int32, Int32, UnsafeMutableRawPointer?) -> Int32 = { _, _, _, _ in 0 }
        if text.contains("-----BEGIN CERTIFICATE-----") {
            guard let x509 = PEM_read_bio_X509(bio, nil, nil, nil) else { throw .config("not a valid PEM certificate") }
            defer { X509_free(x509) }
            guard let pk = X509_get_pubkey(x509) else { throw OpenSSL.lastError("X509_get_pubkey") }
            return PKey(pk, hasPrivate: false)
        }
        if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
            throw .config("encrypted PEM private keys are not supported; store the key unencrypted with restricted file permissions")
        }
        if text.contains("PRIVATE KEY-----") {
            guard let pk = PEM_read_bio_PrivateKey(bio, nil, noPassphrase, nil) else { throw .config("not a valid PEM private key") }
            let key = PKey(pk, hasPrivate: true)
            try check(key)
            return key
        }
        if text.contains("-----BEGIN PUBLIC KEY-----") {
            guard let pk = PEM_read_bio_PUBKEY(bio, nil, noPassphrase, nil) else { throw .config("not a valid PEM public key") }
            let key = PKey(pk, hasPrivate: false)
            try check(key)
            return key
        }
        throw .config("PEM must be a PUBLIC KEY, a CERTIFICATE or a PRIVATE KEY")
    }
}
