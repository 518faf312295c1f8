/// Keys from JSON Web Keys (RFC 7517) and JWK Sets.
///
/// - `kty` RSA (`n`, `e`, and for signing `d` with or without the CRT members), EC (`crv`
///   P-256/384/521, `x`, `y`, `d`), OKP (`crv` Ed25519, `x`, `d`) and oct (`k`).
/// - Members are strict base64url (no padding); EC coordinates must have the curve's size.
/// - The key's algorithm is its `alg`; without one, EC keys take the one of their curve and
///   Ed25519 keys EdDSA; RSA and oct keys without `alg` are refused (RS256 or PS256? HS256 or
///   HS512? bitsec does not guess).
/// - `x5c`, `x5u`, `jku` members are ignored: a key is trusted because it is configured.
public enum JWK {
    /// A key from one JWK; nil when the JWK is for another use (`use` other than `sig`).
    /// `allowSecrets` false refuses private members (inline configuration without
    /// `allow_inline_secrets`).
    public static func key(_ v: JSONValue, where path: String, origin: String, allowSecrets: Bool,
                           alg forced: JWSAlgorithm? = nil, kid forcedKid: String? = nil) throws(BitsecError) -> TokenKey? {
        guard case .object(let o) = v else { throw .config("\(path) must be a JWK object, got \(v.typeName)") }
        func str(_ k: String) throws(BitsecError) -> String? {
            guard let m = o[k], !m.isNull else { return nil }
            guard case .string(let s) = m else { throw .config("\(path).\(k) must be a string, got \(m.typeName)") }
            return s
        }
        func b64(_ k: String, required: Bool = true) throws(BitsecError) -> [UInt8]? {
            guard let s = try str(k) else {
                if required { throw .config("\(path).\(k) is required") }
                return nil
            }
            guard let d = Base64.decodeURLStrict(Array(s.utf8)), !d.isEmpty else { throw .config("\(path).\(k) is not strict base64url") }
            return d
        }
        if let use = try str("use"), use != "sig" { return nil }
        guard let kty = try str("kty") else { throw .config("\(path).kty is required") }
        let jwkKid = try str("kid")
        let kid = forcedKid ?? jwkKid
        var alg: JWSAlgorithm? = forced
        if let a = try str("alg") {
            guard let parsed = JWSAlgorithm.parse(a) else { throw .config("\(path).alg \(a) is not supported") }
            if let forced, forced != parsed { throw .config("\(path): alg \(a) conflicts with the configured \(forced.rawValue)") }
            alg = parsed
        }
        let hasPrivate = o["d"] != nil || kty == "oct"
        if hasPrivate && !allowSecrets {
            throw .config("\(path): inline private or secret key material is refused; use a file or env (or set allow_inline_secrets for development)")
        }
        switch kty {
        case "RSA":
            guard let alg else { throw .config("\(path).alg is required for RSA keys (RS* or PS*)") }
            guard alg.keyKind == .rsa else { throw .config("\(path): alg \(alg.rawValue) does not fit kty RSA") }
            var params: [KeyBuilder.Param] = [.bn("n", try b64("n") ?? [], secret: false), .bn("e", try b64("e") ?? [], secret: false)]
            if let d = try b64("d", required: false) {
                params.append(.bn("d", d, secret: true))
                let crt = ["p", "q", "dp", "dq", "qi"]
                let present = crt.filter { o[$0] != nil }
                if !present.isEmpty {
                    guard present.count == crt.count else { throw .config("\(path): RSA CRT members must all be present or all absent") }
                    let names: [StaticString] = ["rsa-factor1", "rsa-factor2", "rsa-exponent1", "rsa-exponent2", "rsa-coefficient1"]
                    for (m, name) in zip(crt, names) { params.append(.bn(name, try b64(m) ?? [], secret: true)) }
                }
            }
            let pk = try KeyBuilder.fromData(type: "RSA", params: params, hasPrivate: o["d"] != nil)
            return try TokenKey(kid: kid, alg: alg, material: .asymmetric(pk), origin: origin)
        case "EC":
            guard let crvName = try str("crv"), let curve = ECCurve(rawValue: crvName) else {
                throw .config("\(path).crv must be P-256, P-384 or P-521")
            }
            let a = alg ?? [JWSAlgorithm.es256, .es384, .es512].first { $0.curve == curve } ?? .es256
            guard a.curve == curve else { throw .config("\(path): alg \(a.rawValue) does not fit curve \(crvName)") }
            let n = curve.coordinateBytes
            guard let x = try b64("x"), let y = try b64("y"), x.count == n, y.count == n else {
                throw .config("\(path): x and y must be \(n) bytes each for \(crvName)")
            }
            var params: [KeyBuilder.Param] = [.utf8("group", curve.groupName), .octets("pub", [0x04] + x + y)]
            if let d = try b64("d", required: false) {
                guard d.count == n else { throw .config("\(path).d must be \(n) bytes for \(crvName)") }
                params.append(.bn("priv", d, secret: true))
            }
            let pk = try KeyBuilder.fromData(type: "EC", params: params, hasPrivate: o["d"] != nil)
            return try TokenKey(kid: kid, alg: a, material: .asymmetric(pk), origin: origin)
        case "OKP":
            guard try str("crv") == "Ed25519" else { throw .config("\(path).crv must be Ed25519 (the only OKP curve for JWS here)") }
            let a = alg ?? .edDSA
            guard a == .edDSA else { throw .config("\(path): alg \(a.rawValue) does not fit an Ed25519 key") }
            guard let x = try b64("x"), x.count == 32 else { throw .config("\(path).x must be 32 bytes") }
            var params: [KeyBuilder.Param] = [.octets("pub", x)]
            if let d = try b64("d", required: false) {
                guard d.count == 32 else { throw .config("\(path).d must be 32 bytes") }
                params.append(.octets("priv", d))
            }
            let pk = try KeyBuilder.fromData(type: "ED25519", params: params, hasPrivate: o["d"] != nil)
            return try TokenKey(kid: kid, alg: a, material: .asymmetric(pk), origin: origin)
        case "oct":
            guard let alg else { throw .config("\(path).alg is required for oct keys (HS256, HS384 or HS512)") }
            guard alg.keyKind == .hmac else { throw .config("\(path): alg \(alg.rawValue) does not fit kty oct") }
            guard var k = try b64("k") else { throw .config("\(path).k is required") }
            defer { wipe(&k) }
            return try TokenKey(kid: kid, alg: alg, secret: SecretBytes(k), origin: origin)
        default:
            throw .config("\(path).kty \(kty) is not supported (RSA, EC, OKP, oct)")
        }
    }

    /// Every signing key of a JWK Set document (`{"keys": [...]}`).
    public static func keySet(_ v: JSONValue, where path: String, origin: String, allowSecrets: Bool) throws(BitsecError) -> [TokenKey] {
        guard case .object(let o) = v, case .array(let items)? = o["keys"] else {
            throw .config("\(path) must be a JWK Set: an object with a \"keys\" array")
        }
        var out: [TokenKey] = []
        for (i, item) in items.enumerated() {
            if let k = try key(item, where: "\(path).keys[\(i)]", origin: origin, allowSecrets: allowSecrets) { out.append(k) }
        }
        return out
    }

    public static func keySet(_ bytes: [UInt8], where path: String, origin: String, allowSecrets: Bool) throws(BitsecError) -> [TokenKey] {
        let v: JSONValue
        do {
            v = try JSONReader.parse(bytes, options: .init(maxBytes: Limits.maxConfigBytes, maxDepth: 16))
        } catch {
            throw .config("\(path): \(error.detail)")
        }
        return try keySet(v, where: path, origin: origin, allowSecrets: allowSecrets)
    }
}

/// The keys of a runtime at one moment: immutable, replaced as a whole on reload.
public final class KeySet: Sendable {
    public let keys: [TokenKey]
    /// By exact `kid` bytes (a `String` key would match a canonically equivalent kid).
    private let byKid: [ExactText: TokenKey]
    /// Bumped on every reload (the verified-token cache drops entries of older sets).
    public let generation: UInt64

    public init(_ keys: [TokenKey], generation: UInt64) throws(BitsecError) {
        var map: [ExactText: TokenKey] = [:]
        for k in keys {
            guard let kid = k.kid else { continue }
            guard map[ExactText(kid)] == nil else { throw .config("two keys have the kid \(kid)") }
            map[ExactText(kid)] = k
        }
        if keys.count > 1 {
            // Without kids, a token could only be matched by trying keys: refuse ambiguity early.
            var noKid: [JWSAlgorithm: Int] = [:]
            for k in keys where k.kid == nil { noKid[k.alg, default: 0] += 1 }
            if let dup = noKid.first(where: { $0.value > 1 }) {
                throw .config("several \(dup.key.rawValue) keys have no kid: give each key a kid")
            }
        }
        self.keys = keys
        self.byKid = map
        self.generation = generation
    }

    public enum Selection { case key(TokenKey), unknownKid, algMismatch }

    /// The key for a token header: by `kid` when there is one (exactly that key, or
    /// nothing); without `kid`, only when a single key could apply (the only key, or the only
    /// key of the header's algorithm).
    @inline(__always)
    public func select(kid: String?, alg: JWSAlgorithm) -> Selection {
        if let kid {
            guard let k = byKid[ExactText(kid)] else { return .unknownKid }
            return k.alg == alg ? .key(k) : .algMismatch
        }
        if keys.count == 1 { return keys[0].alg == alg ? .key(keys[0]) : .algMismatch }
        var found: TokenKey? = nil
        for k in keys where k.alg == alg {
            if found != nil { return .unknownKid }
            found = k
        }
        return found.map { .key($0) } ?? .unknownKid
    }

    public func key(kid: String) -> TokenKey? { byKid[ExactText(kid)] }
}
