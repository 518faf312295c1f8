internal import Glibc
internal import Synchronization

/// The `tokens` capability: JWS/JWT verification (with a verified-token cache and `jti`
/// revocation), issuing (single tokens and access/refresh pairs), and key reloads.
///
/// Thread safety: every method may be called from any thread. The key set is an immutable
/// object swapped atomically on reload; a verification uses the set it started with.
public final class TokenService: Capability {
    public static let sectionName = "tokens"

    public let policy: TokenPolicy
    private let staticKeys: [TokenKey]
    private let keySet: Mutex<KeySet>
    private let reloadLock = Mutex<UInt64>(0)
    public let cache: VerifiedTokenCache?
    private let headers = HeaderCache()
    public let revocations: any RevocationStore
    let audit: (any AuditHook)?
    /// Called with (session_id, now) when a replayed refresh token revoked its family.
    let familyHook = Mutex<(@Sendable (String, Int64) -> Void)?>(nil)
    let issuingKid: String?
    let issuingIssuer: String?
    let issuingAudience: [String]
    public let accessTTL: Int64
    public let refreshTTL: Int64

    init(_ c: TokenConfig, context: CapabilityContext) throws(BitsecError) {
        policy = c.policy
        staticKeys = c.staticKeys
        keySet = Mutex(try KeySet(c.staticKeys + c.jwksKeys, generation: 0))
        cache = c.cacheSize > 0 ? VerifiedTokenCache(capacity: c.cacheSize) : nil
        // An epoch (session or subject) lasts as long as a token issued here can live.
        let lifetime = max(c.accessTTL, c.refreshTTL) &+ c.policy.leeway
        if let redis = context.redis, c.revocationStore == .redis {
            revocations = RedisRevocationStore(pool: redis, epochLifetime: lifetime)
        } else {
            let placement = try context.stores.placement(c.revocationStore, field: "tokens.revocation.store")
            revocations = try MemoryRevocationStore(maxEntries: c.revocationMaxEntries, maxSessions: c.revocationMaxSessions,
                                                    maxSubjects: c.revocationMaxSubjects, epochLifetime: lifetime,
                                                    placement: placement, store: c.revocationStore)
        }
        audit = context.audit
        issuingKid = c.issuingKid
        issuingIssuer = c.issuingIssuer
        issuingAudience = c.issuingAudience
        accessTTL = c.accessTTL
        refreshTTL = c.refreshTTL
    }

    public static func read(_ o: ConfigObject, context: CapabilityContext) throws(BitsecError) -> TokenService {
        try TokenService(try TokenConfig.read(o, context: context), context: context)
    }

    public var keys: KeySet { keySet.withLock { $0 } }

    /// Registers what else ends when a replayed refresh token revokes its family (the
    /// server-side session of that identifier).
    public func onFamilyRevoked(_ hook: @escaping @Sendable (String, Int64) -> Void) {
        familyHook.withLock { $0 = hook }
    }

    /// The verified-token cache, and the revocation tables of the `process` and `host` stores.
    public var boundedTables: [BoundedTableStats] {
        (cache.map { [$0.stats] } ?? []) + ((revocations as? MemoryRevocationStore)?.tableStats ?? [])
    }

    // MARK: - Verification

    /// The decision about one token. `claims` is set when the signature verified (also when
    /// a claim check failed afterwards); `reason` is `.valid` only when every check passed.
    public struct Verification: Sendable {
        public let reason: TokenReason
        public let claims: VerifiedClaims?
        public var isValid: Bool { reason == .valid }
    }

    public enum Expect: Sendable { case access, refresh, any }

    /// Verifies a compact JWS token at `at` (Unix seconds, 0 = now). An invalid token is a
    /// decision; the only errors are "could not decide" (Redis unavailable for revocations).
    public func verify(_ token: UnsafeRawBufferPointer, at: Int64 = 0, expect: Expect = .access) throws(BitsecError) -> Verification {
        try verify(token, instant: Clock.resolveInstant(at), expect: expect)
    }

    /// Verifies a compact JWS token at an instant with sub-second precision (the time claims
    /// are compared exactly: see `check`).
    public func verify(_ token: UnsafeRawBufferPointer, instant: Instant, expect: Expect = .access) throws(BitsecError) -> Verification {
        let v = try verifyQuietly(token, now: instant, expect: expect)
        if v.reason != .valid, let audit, audit.automaticEventsEnabled {
            audit.emitAutomatic(AutomaticAuditEvent(
                type: "authentication", subtype: "token_rejected", result: "failure", reason: v.reason.text,
                actor: v.claims?.sub, tenant: v.claims?.tenant))
        }
        return v
    }

    public func verify(_ token: String, at: Int64 = 0, expect: Expect = .access) throws(BitsecError) -> Verification {
        try Array(token.utf8).withRawBytes { (raw) throws(BitsecError) -> Verification in try verify(raw, at: at, expect: expect) }
    }

    private func verifyQuietly(_ token: UnsafeRawBufferPointer, now instant: Instant, expect: Expect) throws(BitsecError) -> Verification {
        // The size limit comes before any decoding.
        guard token.count <= policy.maxTokenBytes else { return Verification(reason: .tooLarge, claims: nil) }
        let ks = keySet.withLock { $0 }
        let claims: VerifiedClaims
        if let cache {
            let h = cache.hash(token)
            if let hit = cache.lookup(token, hash: h, generation: ks.generation) {
                claims = hit
            } else {
                let (reason, c) = verifySignature(token, ks)
                guard let c else { return Verification(reason: reason, claims: nil) }
                cache.insert(token, hash: h, claims: c, generation: ks.generation)
                claims = c
            }
        } else {
            let (reason, c) = verifySignature(token, ks)
            guard let c else { return Verification(reason: reason, claims: nil) }
            claims = c
        }
        let reason = check(claims, now: instant, expect: expect)
        let now = instant.seconds
        guard reason == .valid else { return Verification(reason: reason, claims: claims) }
        if !revocations.holdsNone(), try revocations.isRevoked(TokenIdentity(claims), now: now) {
            return Verification(reason: .revoked, claims: claims)
        }
        return Verification(reason: .valid, claims: claims)
    }

    /// Header, key selection and signature; then the payload is parsed (never before the
    /// signature verified). Returns the claims only when the signature is good.
    private func verifySignature(_ token: UnsafeRawBufferPointer, _ ks: KeySet) -> (TokenReason, VerifiedClaims?) {
        let b = token.bindMemory(to: UInt8.self)
        // Exactly two dots (memchr: the token is scanned at memory speed, not byte by byte).
        guard let base = b.baseAddress else { return (.malformed, nil) }
        func dot(from: Int) -> Int {
            guard from < b.count, let p = memchr(base + from, 0x2E, b.count - from) else { return -1 }
            return base.distance(to: p.assumingMemoryBound(to: UInt8.self))
        }
        let d1 = dot(from: 0)
        let d2 = d1 < 0 ? -1 : dot(from: d1 + 1)
        guard d2 < 0 || dot(from: d2 + 1) < 0 else { return (.malformed, nil) }
        guard d1 > 0, d2 > d1 + 1, d2 < b.count - 1 else { return (.malformed, nil) }
        let headerText = UnsafeBufferPointer(rebasing: b[0..<d1])
        let hh = HeaderCache.hash(headerText)
        let key: TokenKey
        var typOK = true
        if let k = headers.lookup(headerText, hash: hh, generation: ks.generation) {
            key = k
        } else {
            switch selectKey(headerText, ks) {
            case .success(let sel):
                key = sel.key
                typOK = sel.typOK
            case .failure(let r): return (r.reason, nil)
            }
            if typOK { headers.insert(headerText, hash: hh, key: key, generation: ks.generation) }
        }
        guard let sig = Base64.decodeURLStrict(UnsafeBufferPointer(rebasing: b[(d2 + 1)...])) else { return (.malformed, nil) }
        let ok = sig.withUnsafeBytes { s in key.verify(UnsafeRawBufferPointer(rebasing: token[0..<d2]), signature: s) }
        guard ok else { return (.badSignature, nil) }
        // A typ mismatch is reported only for authentic tokens (no unauthenticated oracle,
        // and wrong_type always means "signature and claims fine, wrong kind of token").
        guard typOK else { return (.wrongType, nil) }
        guard let payload = Base64.decodeURLStrict(UnsafeBufferPointer(rebasing: b[(d1 + 1)..<d2])),
              let claims = VerifiedClaims(payload: payload) else { return (.malformed, nil) }
        return (.valid, claims)
    }

    struct Refusal: Error { let reason: TokenReason }

    /// Decodes and checks the protected header and selects its key.
    private func selectKey(_ text: UnsafeBufferPointer<UInt8>, _ ks: KeySet) -> Result<(key: TokenKey, typOK: Bool), Refusal> {
        guard let headerBytes = Base64.decodeURLStrict(text),
              let hv = try? JSONReader.parse(headerBytes, options: .init(maxBytes: Int.max, maxDepth: 8)),
              case .object(let header) = hv else { return .failure(Refusal(reason: .malformed)) }
        guard case .string(let algText)? = header["alg"] else { return .failure(Refusal(reason: .malformed)) }
        guard let alg = JWSAlgorithm.parse(algText) else { return .failure(Refusal(reason: .unsupportedAlg)) }
        if let crit = header["crit"] {
            // RFC 7515 4.1.11: a non-empty array of names; bitsec implements no extension,
            // so any listed name is one it does not understand.
            guard case .array(let names) = crit, !names.isEmpty else { return .failure(Refusal(reason: .malformed)) }
            for n in names { guard case .string = n else { return .failure(Refusal(reason: .malformed)) } }
            return .failure(Refusal(reason: .critUnsupported))
        }
        var kid: String? = nil
        if let k = header["kid"] {
            guard case .string(let s) = k else { return .failure(Refusal(reason: .malformed)) }
            kid = s
        }
        if kid == nil && policy.requireKid { return .failure(Refusal(reason: .missingKid)) }
        var typOK = true
        if let t = header["typ"] {
            guard case .string(let s) = t else { return .failure(Refusal(reason: .malformed)) }
            typOK = policy.typMatches(s)
        } else if policy.typ != nil {
            typOK = false
        }
        // `jku`, `x5u`, `jwk` and `x5c` are never read: keys come from configuration only.
        switch ks.select(kid: kid, alg: alg) {
        case .key(let k): return .success((k, typOK))
        case .unknownKid: return .failure(Refusal(reason: .unknownKid))
        case .algMismatch: return .failure(Refusal(reason: .algMismatch))
        }
    }

    /// The claim checks at `now` (Unix seconds), made on every call (cache hits included).
    public func check(_ c: VerifiedClaims, now: Int64, expect: Expect = .access) -> TokenReason {
        check(c, now: Instant(seconds: now), expect: expect)
    }

    /// The claim checks at an exact instant. With the leeway L (whole seconds): valid while
    /// `now < exp + L`, from `now >= nbf - L` and from `now >= iat - L`, each compared to
    /// the nanosecond (a fractional `nbf`/`iat` is never rounded towards accepting).
    public func check(_ c: VerifiedClaims, now: Instant, expect: Expect = .access) -> TokenReason {
        if c.invalidClaim != nil { return .invalidClaim }
        if policy.requireExp && c.expires == nil { return .missingClaim }
        for r in policy.requiredClaims where !c.claimNames.containsBytes(of: r) { return .missingClaim }
        let leeway = policy.leeway
        let late = now.adding(seconds: leeway)  // the latest instant the leeway lets a claim be
        if let exp = c.expires, now >= exp.adding(seconds: leeway) { return .expired }
        if let nbf = c.notBefore, nbf > late { return .notYetValid }
        if let iat = c.issuedAt, iat > late { return .issuedInFuture }
        // `iss`, `aud` and required claim names are compared byte for byte (RFC 7519 section
        // 2: no transformation, no canonicalisation), not with String's `==`, which equates
        // canonically equivalent text (an NFD "cafe\u{301}" with an NFC "café").
        if !policy.issuers.isEmpty {
            guard let iss = c.iss else { return .missingClaim }
            guard policy.issuers.containsBytes(of: iss) else { return .wrongIssuer }
        }
        if let aud = c.aud {
            // A token meant for named audiences is only accepted by a runtime that is one of them.
            guard !policy.audiences.isEmpty, aud.contains(where: { policy.audiences.containsBytes(of: $0) }) else { return .wrongAudience }
        } else if !policy.audiences.isEmpty {
            return .missingClaim
        }
        switch expect {
        case .access: if policy.rejectRefreshTokens && c.type == "refresh" { return .wrongType }
        case .refresh: if c.type != "refresh" { return .wrongType }
        case .any: break
        }
        return .valid
    }

    // MARK: - Revocation

    private func until(exp: Int64, now: Int64) -> Int64 {
        let base = exp > 0 ? exp : now &+ refreshTTL
        return base.addingReportingOverflow(policy.leeway).overflow ? Int64.max : base + policy.leeway
    }

    /// Revokes a bare `jti` until `exp` (the token's expiry; 0 = now + the refresh lifetime,
    /// the longest a token issued here lives) plus the leeway. Returns true when newly
    /// revoked. Nothing else of the token is known: in process, when the table of single
    /// jtis is full, every token issued up to now is revoked instead (fail closed); in Redis
    /// the bare-jti key, which every verification of a token with that `jti` also checks.
    @discardableResult
    public func revoke(jti: String, exp: Int64, at: Int64 = 0) throws(BitsecError) -> Bool {
        guard !jti.isEmpty, jti.utf8.count <= 512 else { throw .invalid("jti must be 1 to 512 bytes") }
        let now = Clock.resolve(at)
        let until = until(exp: exp, now: now)
        guard until > now else { return false }  // already expired beyond the leeway: nothing to remember
        // No token, only its jti: the token was issued at or before now, so `now` is the
        // latest issue time it can have (an epoch before now does not cover it; one recorded
        // because the table is full is set at now and does).
        return try revocations.revoke(TokenIdentity(jti: jti, iat: now), until: until, now: now) != .already
    }

    /// Revokes a verified token: its `jti` until its `exp` plus the leeway, in its subject's
    /// place. When the table of single jtis is full the token's session (else its subject,
    /// else everything) is revoked at the token's `iat` instead: wider, never narrower.
    public func revoke(_ c: VerifiedClaims, at: Int64 = 0) throws(BitsecError) -> RevokeOutcome {
        let now = Clock.resolve(at)
        let until = until(exp: c.exp ?? 0, now: now)
        guard until > now else { return .already }
        return try revocations.revoke(TokenIdentity(c), until: until, now: now)
    }

    /// Verifies a token (signature and claims, any type) and revokes it. Returns the
    /// verification reason (`.valid`: revoked now, `newly` tells whether this call recorded
    /// it; `.revoked`, `.expired`: nothing to do; anything else: refused, nothing revoked).
    public func revoke(token: UnsafeRawBufferPointer, at: Int64 = 0) throws(BitsecError) -> (reason: TokenReason, newly: Bool) {
        let instant = Clock.resolveInstant(at)
        let v = try verifyQuietly(token, now: instant, expect: .any)
        guard v.reason == .valid, let c = v.claims else { return (v.reason, false) }
        return (.valid, try revoke(c, at: instant.seconds) != .already)
    }

    /// Revokes the tokens of session `sid` of subject `sub` issued at or before `at` (the
    /// second of `at` included). Returns true when this moved the session's epoch forward.
    @discardableResult
    public func revokeSession(_ sid: String, subject sub: String, tenant: String? = nil, at: Int64 = 0) throws(BitsecError) -> Bool {
        guard !sid.isEmpty, sid.utf8.count <= 512 else { throw .invalid("session_id must be 1 to 512 bytes") }
        guard !sub.isEmpty, sub.utf8.count <= 512 else { throw .invalid("subject must be 1 to 512 bytes") }
        let now = Clock.resolve(at)
        return try revocations.revokeSession(sub: sub, tenant: tenant, sid: sid, epoch: now, until: until(exp: 0, now: now), now: now)
    }

    /// Revokes every token of subject `sub` issued at or before `notBefore` (0 = `at`): of
    /// `tenant` only (its tokens' `tenant_id`, else `tenant`), or in every tenant when it is
    /// nil. Returns true when this moved the subject's epoch forward.
    @discardableResult
    public func revokeSubject(_ sub: String, tenant: String? = nil, notBefore: Int64 = 0, at: Int64 = 0) throws(BitsecError) -> Bool {
        guard !sub.isEmpty, sub.utf8.count <= 512 else { throw .invalid("subject must be 1 to 512 bytes") }
        if let tenant { guard !tenant.isEmpty, tenant.utf8.count <= 512 else { throw .invalid("tenant must be 1 to 512 bytes") } }
        let now = Clock.resolve(at)
        let nb = notBefore > 0 ? notBefore : now
        return try revocations.revokeSubject(sub: sub, tenant: tenant, notBefore: nb, until: until(exp: 0, now: now), now: now)
    }

    public func isRevoked(jti: String, at: Int64 = 0) throws(BitsecError) -> Bool {
        try revocations.isRevoked(jti: jti, now: Clock.resolve(at))
    }

    // MARK: - Keys

    /// Replaces the JWK Set part of the keys (the `keys` list of the configuration stays) and
    /// clears the verified-token cache. Atomic: verifications in flight finish with the old
    /// set, later ones use the new one. On error nothing changes.
    public func reload(jwks bytes: [UInt8]) throws(BitsecError) {
        let fresh = try JWK.keySet(bytes, where: "jwks", origin: "jwks", allowSecrets: true)
        try reloadLock.withLock { (gen) throws(BitsecError) in
            let next = try KeySet(staticKeys + fresh, generation: gen + 1)
            gen += 1
            keySet.withLock { $0 = next }
            cache?.clear()
            headers.clear()
        }
        if let audit, audit.automaticEventsEnabled {
            audit.emitAutomatic(AutomaticAuditEvent(
                type: "key_management", subtype: "keys_reloaded", result: "success",
                details: [("keys", .number(JSONNumber(int64: Int64(fresh.count)))), ("source", .string("jwks"))]))
        }
    }

    // MARK: - Describe

    public func describe() -> JSONValue {
        let ks = keys
        let keyList: [JSONValue] = ks.keys.map { k in
            .object(JSONObject([
                ("kid", k.kid.map { .string($0) } ?? .null), ("alg", .string(k.alg.rawValue)), ("kty", .string(k.kty)),
                ("can_sign", .bool(k.canSign)), ("origin", .string(k.origin)),
            ]))
        }
        return .object(JSONObject([
            ("keys", .array(keyList)),
            ("generation", .number(JSONNumber(int64: Int64(clamping: ks.generation)))),
            ("issuer", .array(policy.issuers.map { .string($0) })),
            ("audience", .array(policy.audiences.map { .string($0) })),
            ("leeway_seconds", .number(JSONNumber(int64: policy.leeway))),
            ("required_claims", .array(policy.requiredClaims.map { .string($0) })),
            ("require_exp", .bool(policy.requireExp)),
            ("require_kid", .bool(policy.requireKid)),
            ("typ", policy.typ.map { .string($0) } ?? .null),
            ("max_token_bytes", .number(JSONNumber(int64: Int64(policy.maxTokenBytes)))),
            ("cache_size", .number(JSONNumber(int64: Int64(cache?.capacity ?? 0)))),
            ("revocation", .string(revocations.backendName)),
            ("access_ttl_seconds", .number(JSONNumber(int64: accessTTL))),
            ("refresh_ttl_seconds", .number(JSONNumber(int64: refreshTTL))),
        ]))
    }
}
