internal import COpenSSL

/// One verification (and possibly signing) key, pinned to exactly one algorithm.
///
/// The key's material decides what it can do: an HMAC key is a secret, an asymmetric key an
/// `EVP_PKEY` of a given type. An RSA, EC or Ed25519 public key can therefore never be used
/// as an HMAC secret, whatever the token's header says (the RFC 8725 "HS256 with the public
/// key" attack has no code path).
public final class TokenKey: Sendable {
    public enum Material: Sendable {
        case hmac(HMACKey)
        case asymmetric(PKey)
    }

    public let kid: String?
    public let alg: JWSAlgorithm
    public let material: Material
    /// Where the key came from: `config` (the `keys` list) or `jwks`.
    public let origin: String
    /// RSA/PSS/ECDSA: a verification context initialised once (key, digest, PSS padding and
    /// salt length); each verification copies it (`EVP_MD_CTX_copy_ex`) instead of repeating
    /// `EVP_DigestVerifyInit` and its provider fetches. Never used directly, only copied.
    /// Nil for HMAC and Ed25519 (one-shot only), or when it could not be built: then each
    /// verification initialises its own context, as before.
    private let verifyTemplate: VerifyTemplate?

    final class VerifyTemplate: @unchecked Sendable {
        let raw: OpaquePointer
        init(raw: OpaquePointer) { self.raw = raw }
        deinit { EVP_MD_CTX_free(raw) }
    }

    public var canSign: Bool {
        switch material {
        case .hmac: return true
        case .asymmetric(let k): return k.hasPrivate
        }
    }

    public var kty: String {
        switch alg.keyKind {
        case .rsa: return "RSA"
        case .ec: return "EC"
        case .ed25519: return "OKP"
        case .hmac: return "oct"
        }
    }

    /// Binds a material to an algorithm, refusing mismatches and weak keys.
    public init(kid: String?, alg: JWSAlgorithm, material: Material, origin: String) throws(BitsecError) {
        switch (alg.keyKind, material) {
        case (.hmac, .hmac(let h)):
            guard h.secret.count >= alg.digestLength else {
                throw .config("an \(alg.rawValue) secret must be at least \(alg.digestLength) bytes (RFC 7518 3.2), got \(h.secret.count)")
            }
            guard h.alg == alg else { throw .internalError("HMAC key built for another algorithm") }
        case (.hmac, .asymmetric):
            throw .config("\(alg.rawValue) needs a secret; an asymmetric key can never be an HMAC secret")
        case (_, .hmac):
            throw .config("\(alg.rawValue) needs an asymmetric key, not a secret")
        case (.rsa, .asymmetric(let k)):
            guard k.kind == .rsa || (k.kind == .rsaPSS && alg.isPSS) else { throw .config("\(alg.rawValue) needs an RSA key") }
            guard k.bits >= 2048 else { throw .config("RSA keys must have at least 2048 bits, got \(k.bits)") }
        case (.ec, .asymmetric(let k)):
            guard k.kind == .ec(alg.curve) else {
                throw .config("\(alg.rawValue) needs an EC key on \(alg.curve?.rawValue ?? "?")")
            }
        case (.ed25519, .asymmetric(let k)):
            guard k.kind == .ed25519 else { throw .config("EdDSA needs an Ed25519 key") }
        }
        self.kid = kid
        self.alg = alg
        self.material = material
        self.origin = origin
        if case .asymmetric(let k) = material, alg.keyKind != .ed25519 {
            verifyTemplate = Self.makeVerifyTemplate(k, alg)
        } else {
            verifyTemplate = nil
        }
    }

    private static func makeVerifyTemplate(_ k: PKey, _ alg: JWSAlgorithm) -> VerifyTemplate? {
        guard let ctx = EVP_MD_CTX_new() else { ERR_clear_error(); return nil }
        ERR_clear_error()
        var pctx: OpaquePointer? = nil
        var ok = EVP_DigestVerifyInit(ctx, &pctx, Fetched.md(alg), nil, k.raw) == 1
        if ok && alg.isPSS {
            ok = EVP_PKEY_CTX_set_rsa_padding(pctx, bitsec_rsa_pkcs1_pss_padding()) == 1
                && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, bitsec_rsa_pss_saltlen_digest()) == 1
        }
        guard ok else { EVP_MD_CTX_free(ctx); ERR_clear_error(); return nil }
        return VerifyTemplate(raw: ctx)
    }

    /// An HMAC key from a secret.
    public convenience init(kid: String?, alg: JWSAlgorithm, secret: SecretBytes, origin: String = "config") throws(BitsecError) {
        guard alg.keyKind == .hmac else { throw .config("\(alg.rawValue) needs an asymmetric key, not a secret") }
        // A PEM document as an HMAC secret is almost certainly a public key pasted in the wrong
        // place: exactly the RFC 8725 confusion this library exists to rule out.
        let looksLikePEM = secret.withBytes { raw in
            raw.count >= 10 && Array(raw).withUnsafeBufferPointer { b in
                (0...(b.count - 10)).contains { i in b[i] == 0x2D && Array(b[i..<(i + 10)]) == Array("-----BEGIN".utf8) }
            }
        }
        guard !looksLikePEM else { throw .config("an \(alg.rawValue) secret must not be a PEM document (a public key is never an HMAC secret)") }
        try self.init(kid: kid, alg: alg, material: .hmac(try HMACKey(secret: secret, alg: alg)), origin: origin)
    }

    /// A key from PEM (public key, certificate or private key).
    public convenience init(kid: String?, alg: JWSAlgorithm, pem: [UInt8], origin: String = "config") throws(BitsecError) {
        guard alg.keyKind != .hmac else { throw .config("\(alg.rawValue) needs a secret, not a PEM key") }
        try self.init(kid: kid, alg: alg, material: .asymmetric(try KeyBuilder.fromPEM(pem)), origin: origin)
    }

    // MARK: - Verification

    /// Checks `signature` over `input` (the ASCII `header.payload`). Never throws: any
    /// failure, including an OpenSSL error, is "not verified".
    public func verify(_ input: UnsafeRawBufferPointer, signature: UnsafeRawBufferPointer) -> Bool {
        switch material {
        case .hmac(let h):
            guard signature.count == alg.digestLength else { return false }
            return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 64) { buf -> Bool in
                guard let base = buf.baseAddress, let n = h.mac(input, into: base), n == signature.count else { return false }
                let equal = CRYPTO_memcmp(base, signature.baseAddress, n) == 0
                OPENSSL_cleanse(base, 64)
                return equal
            }
        case .asymmetric(let k):
            if let curve = alg.curve {
                guard let der = ECDSASignature.der(fromRaw: signature, curve: curve) else { return false }
                return der.withUnsafeBytes { digestVerify(k, input, $0) }
            }
            return digestVerify(k, input, signature)
        }
    }

    private func digestVerify(_ k: PKey, _ input: UnsafeRawBufferPointer, _ sig: UnsafeRawBufferPointer) -> Bool {
        guard sig.count > 0, let ctx = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(ctx) }
        ERR_clear_error()
        if let t = verifyTemplate {
            guard EVP_MD_CTX_copy_ex(ctx, t.raw) == 1 else { ERR_clear_error(); return false }
            let rc = EVP_DigestVerify(ctx, sig.baseAddress?.assumingMemoryBound(to: UInt8.self), sig.count,
                                      input.baseAddress?.assumingMemoryBound(to: UInt8.self), input.count)
            if rc != 1 { ERR_clear_error() }
            return rc == 1
        }
        var pctx: OpaquePointer? = nil
        guard EVP_DigestVerifyInit(ctx, &pctx, Fetched.md(alg), nil, k.raw) == 1 else { ERR_clear_error(); return false }
        if alg.isPSS {
            guard EVP_PKEY_CTX_set_rsa_padding(pctx, bitsec_rsa_pkcs1_pss_padding()) == 1,
                  EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, bitsec_rsa_pss_saltlen_digest()) == 1 else { ERR_clear_error(); return false }
        }
        let rc = EVP_DigestVerify(ctx, sig.baseAddress?.assumingMemoryBound(to: UInt8.self), sig.count,
                                  input.baseAddress?.assumingMemoryBound(to: UInt8.self), input.count)
        if rc != 1 { ERR_clear_error() }
        return rc == 1
    }

    // MARK: - Signing

    /// The JWS signature of `input` (for ES*, the raw `R||S` form).
    public func sign(_ input: UnsafeRawBufferPointer) throws(BitsecError) -> [UInt8] {
        switch material {
        case .hmac(let h):
            var out = [UInt8](repeating: 0, count: 64)
            let n = out.withUnsafeMutableBufferPointer { b in b.baseAddress.flatMap { h.mac(input, into: $0) } }
            guard let n else { throw OpenSSL.lastError("HMAC") }
            return Array(out.prefix(n))
        case .asymmetric(let k):
            guard k.hasPrivate else { throw .invalid("key \(kid ?? "(no kid)") has no private part: it can verify, not sign") }
            guard let ctx = EVP_MD_CTX_new() else { throw OpenSSL.lastError("EVP_MD_CTX_new") }
            defer { EVP_MD_CTX_free(ctx) }
            ERR_clear_error()
            var pctx: OpaquePointer? = nil
            guard EVP_DigestSignInit(ctx, &pctx, Fetched.md(alg), nil, k.raw) == 1 else { throw OpenSSL.lastError("EVP_DigestSignInit") }
            if alg.isPSS {
                guard EVP_PKEY_CTX_set_rsa_padding(pctx, bitsec_rsa_pkcs1_pss_padding()) == 1,
                      EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, bitsec_rsa_pss_saltlen_digest()) == 1 else {
                    throw OpenSSL.lastError("EVP_PKEY_CTX_set_rsa_padding")
                }
            }
            let data = input.baseAddress?.assumingMemoryBound(to: UInt8.self)
            var len = 0
            guard EVP_DigestSign(ctx, nil, &len, data, input.count) == 1 else { throw OpenSSL.lastError("EVP_DigestSign") }
            var sig = [UInt8](repeating: 0, count: len)
            let rc = sig.withUnsafeMutableBufferPointer { EVP_DigestSign(ctx, $0.baseAddress, &len, data, input.count) }
            guard rc == 1 else { throw OpenSSL.lastError("EVP_DigestSign") }
            sig.removeLast(sig.count - len)
            if let curve = alg.curve {
                guard let raw = ECDSASignature.raw(fromDER: sig, curve: curve) else { throw .crypto("cannot convert the ECDSA signature") }
                return raw
            }
            return sig
        }
    }
}

/// The JWS form of ECDSA signatures (RFC 7518 §3.4): `R||S`, each exactly the curve's size.
public enum ECDSASignature {
    /// The DER `ECDSA-Sig-Value` for a raw `R||S` signature, or nil when the length is wrong
    /// or r or s lies outside [1, n-1] (an all-zero signature is refused here, before OpenSSL).
    public static func der(fromRaw sig: UnsafeRawBufferPointer, curve: ECCurve) -> [UInt8]? {
        let n = curve.coordinateBytes
        guard sig.count == 2 * n else { return nil }
        let bytes = sig.bindMemory(to: UInt8.self)
        let order = curve.order
        guard order.count == n else { return nil }
        let r = UnsafeBufferPointer(rebasing: bytes[0..<n])
        let s = UnsafeBufferPointer(rebasing: bytes[n..<(2 * n)])
        guard inRange(r, order), inRange(s, order) else { return nil }
        let ri = derInteger(r), si = derInteger(s)
        let len = ri.count + si.count
        var out: [UInt8] = len < 128 ? [0x30, UInt8(len)] : [0x30, 0x81, UInt8(len)]
        out.reserveCapacity(len + 3)
        out.append(contentsOf: ri)
        out.append(contentsOf: si)
        return out
    }

    /// 1 <= v < order, both big-endian of the same length.
    static func inRange(_ v: UnsafeBufferPointer<UInt8>, _ order: [UInt8]) -> Bool {
        var nonZero = false
        for b in v where b != 0 { nonZero = true; break }
        guard nonZero else { return false }
        for k in 0..<v.count {
            if v[k] < order[k] { return true }
            if v[k] > order[k] { return false }
        }
        return false  // equal to the order
    }

    static func derInteger(_ v: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        var start = 0
        while start < v.count - 1 && v[start] == 0 { start += 1 }
        var body = Array(v[start...])
        if let f = body.first, f & 0x80 != 0 { body.insert(0, at: 0) }
        return [0x02, UInt8(body.count)] + body
    }

    /// The raw `R||S` form of a DER signature OpenSSL produced.
    static func raw(fromDER der: [UInt8], curve: ECCurve) -> [UInt8]? {
        let n = curve.coordinateBytes
        return der.withUnsafeBufferPointer { b -> [UInt8]? in
            var p: UnsafePointer<UInt8>? = b.baseAddress
            guard let sig = d2i_ECDSA_SIG(nil, &p, b.count) else { return nil }
            defer { ECDSA_SIG_free(sig) }
            var r: OpaquePointer? = nil, s: OpaquePointer? = nil
            ECDSA_SIG_get0(sig, &r, &s)
            guard let r, let s else { return nil }
            var out = [UInt8](repeating: 0, count: 2 * n)
            let ok = out.withUnsafeMutableBufferPointer { o -> Bool in
                guard let base = o.baseAddress else { return false }
                return BN_bn2binpad(r, base, Int32(n)) == Int32(n) && BN_bn2binpad(s, base + n, Int32(n)) == Int32(n)
            }
            return ok ? out : nil
        }
    }
}
