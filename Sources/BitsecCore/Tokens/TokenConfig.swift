/// Reading the `tokens` configuration section (docs/configuration.md, "## tokens").
struct TokenConfig {
    var policy = TokenPolicy()
    var staticKeys: [TokenKey] = []
    var jwksKeys: [TokenKey] = []
    var cacheSize = 1024
    /// Where revocations live (`revocation.store`, or the older `revocation.backend`).
    var revocationStore: StoreKind = .process
    var revocationMaxEntries = 100_000
    var revocationMaxSessions = 100_000
    var revocationMaxSubjects = 100_000
    var issuingKid: String? = nil
    var issuingIssuer: String? = nil
    var issuingAudience: [String] = []
    var accessTTL: Int64 = 1800
    var refreshTTL: Int64 = 604_800

    static func read(_ o: ConfigObject, context: CapabilityContext) throws(BitsecError) -> TokenConfig {
        var c = TokenConfig()
        let ctx = context.config
        if let items = try o.array("keys") {
            for (i, item) in items.enumerated() {
                let ko = try ConfigObject(item, path: "\(o.fieldPath("keys"))[\(i)]")
                c.staticKeys.append(try readKey(ko, ctx))
            }
        }
        if let v = o.value("jwks") {
            let path = o.fieldPath("jwks")
            if case .object(let jo) = v, jo["keys"] != nil {
                c.jwksKeys = try JWK.keySet(v, where: path, origin: "jwks", allowSecrets: ctx.allowInlineSecrets)
            } else {
                let ref = try ConfigObject(v, path: path)
                guard let file = try ref.string("file") else {
                    throw .config("\(path) must be a JWK Set object ({\"keys\": [...]}) or {\"file\": path}")
                }
                try ref.finish()
                let bytes: [UInt8]
                do { bytes = try readFile(file, limit: Limits.maxConfigBytes) } catch { throw .config("\(path).file: \(error.detail)") }
                c.jwksKeys = try JWK.keySet(bytes, where: path, origin: "jwks", allowSecrets: true)
            }
        }
        guard !(c.staticKeys.isEmpty && c.jwksKeys.isEmpty) else {
            throw .config("\(o.path) needs at least one key (keys or jwks)")
        }
        _ = try KeySet(c.staticKeys + c.jwksKeys, generation: 0)  // duplicate kids, ambiguity
        c.policy.issuers = try o.stringArray("issuer") ?? []
        c.policy.audiences = try o.stringArray("audience") ?? []
        c.policy.leeway = try o.int("leeway_seconds", in: 0...3600, default: 30)
        c.policy.requiredClaims = try o.stringArray("required_claims") ?? []
        c.policy.requireExp = try o.bool("require_exp", default: true)
        c.policy.typ = try o.string("typ")
        c.policy.maxTokenBytes = Int(try o.int("max_token_bytes", in: 256...(1 << 20), default: 8192))
        c.policy.rejectRefreshTokens = try o.bool("reject_refresh_tokens", default: true)
        c.policy.requireKid = try o.bool("require_kid", default: false)
        if c.policy.requireKid, let k = c.staticKeys.first(where: { $0.kid == nil }) {
            throw .config("\(o.fieldPath("require_kid")): every key needs a kid (a \(k.alg.rawValue) key in keys has none)")
        }
        c.cacheSize = Int(try o.int("cache_size", in: 0...(1 << 20), default: 1024))
        let r = try o.object("revocation")
        c.revocationStore = try context.stores.settings.select(r, field: "store", oldField: "backend",
                                                               oldValues: ["auto": nil, "memory": .process, "redis": .redis])
        if let r {
            c.revocationMaxEntries = Int(try r.int("max_entries", in: 1...(1 << 24), default: 100_000))
            c.revocationMaxSessions = Int(try r.int("max_sessions", in: 1...(1 << 24), default: 100_000))
            c.revocationMaxSubjects = Int(try r.int("max_subjects", in: 1...(1 << 24), default: 100_000))
            try r.finish()
        }
        if let i = try o.object("issuing") {
            c.issuingKid = try i.string("kid")
            c.issuingIssuer = try i.string("issuer") ?? c.policy.issuers.first
            c.issuingAudience = try i.stringArray("audience") ?? Array(c.policy.audiences.prefix(1))
            c.accessTTL = try i.int("access_ttl_seconds", in: 1...(86_400 * 366), default: 1800)
            c.refreshTTL = try i.int("refresh_ttl_seconds", in: 1...(86_400 * 3660), default: 604_800)
            try i.finish()
        } else {
            c.issuingIssuer = c.policy.issuers.first
            c.issuingAudience = Array(c.policy.audiences.prefix(1))
        }
        if let kid = c.issuingKid {
            guard let k = (c.staticKeys + c.jwksKeys).first(where: { $0.kid?.sameBytes(kid) == true }) else {
                throw .config("\(o.path).issuing.kid: no key has the kid \(kid)")
            }
            guard k.canSign else { throw .config("\(o.path).issuing.kid: key \(kid) has no private part") }
        }
        try o.finish()
        return c
    }

    /// One entry of `keys`: `{"kid", "alg", and one of "pem", "secret", "jwk"}`.
    static func readKey(_ o: ConfigObject, _ ctx: ConfigContext) throws(BitsecError) -> TokenKey {
        let kid = try o.string("kid")
        let algText = try o.string("alg")
        var alg: JWSAlgorithm? = nil
        if let algText {
            guard let a = JWSAlgorithm.parse(algText) else {
                throw .config("\(o.fieldPath("alg")): \(algText) is not supported (\(JWSAlgorithm.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            alg = a
        }
        let pem = o.value("pem")
        let secret = o.value("secret")
        let jwk = o.value("jwk")
        guard [pem != nil, secret != nil, jwk != nil].filter({ $0 }).count == 1 else {
            throw .config("\(o.path) must have exactly one of pem, secret, jwk")
        }
        let key: TokenKey
        if let jwk {
            guard let k = try JWK.key(jwk, where: o.fieldPath("jwk"), origin: "config", allowSecrets: ctx.allowInlineSecrets,
                                      alg: alg, kid: kid) else {
                throw .config("\(o.fieldPath("jwk")) is not a signature key (use)")
            }
            key = k
        } else if let secret {
            guard let alg else { throw .config("\(o.fieldPath("alg")) is required (HS256, HS384 or HS512)") }
            let ref = try SecretRef.read(try ConfigObject(secret, path: o.fieldPath("secret")), context: ctx)
            key = try TokenKey(kid: kid, alg: alg, secret: ref.bytes)
        } else {
            guard let alg else { throw .config("\(o.fieldPath("alg")) is required for a PEM key") }
            var bytes: [UInt8]
            if case .string(let text)? = pem {
                // A public key or certificate is not a secret; a private key inline is one.
                if text.contains("PRIVATE KEY") && !ctx.allowInlineSecrets {
                    throw .config("\(o.fieldPath("pem")): inline private keys are refused; use {\"file\": ...} or {\"env\": ...}")
                }
                bytes = Array(text.utf8)
            } else if let pem {
                bytes = try SecretRef.read(try ConfigObject(pem, path: o.fieldPath("pem")), context: ctx).bytes.bytes
            } else {
                bytes = []
            }
            defer { wipe(&bytes) }
            do {
                key = try TokenKey(kid: kid, alg: alg, pem: bytes)
            } catch {
                throw .config("\(o.fieldPath("pem")): \(error.detail)")
            }
        }
        try o.finish()
        return key
    }
}
