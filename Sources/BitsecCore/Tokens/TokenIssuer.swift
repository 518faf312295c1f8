/// Issuing: single tokens (`sign`) and the design documents' access/refresh pairs.
extension TokenService {
    /// The key that signs when no kid is given: `issuing.kid`, else the only key with a
    /// private part (or secret).
    func signingKey(kid: String?) throws(BitsecError) -> TokenKey {
        let ks = keys
        if let kid = kid ?? issuingKid {
            guard let k = ks.key(kid: kid) else { throw BitsecError(.notFound, "no key has the kid \(kid)") }
            guard k.canSign else { throw .invalid("key \(kid) has no private part: it can verify, not sign") }
            return k
        }
        let signers = ks.keys.filter(\.canSign)
        guard signers.count == 1 else {
            throw .invalid(signers.isEmpty ? "no configured key can sign (public keys only)" : "several keys can sign: pass a kid or set tokens.issuing.kid")
        }
        return signers[0]
    }

    /// A compact JWS over `claims` (a JSON object, used byte for byte as the payload), with
    /// the header `{"alg":..,"typ":"JWT","kid":..}`.
    public func sign(claims: UnsafeRawBufferPointer, kid: String?) throws(BitsecError) -> [UInt8] {
        guard claims.count <= policy.maxTokenBytes else {
            throw .tooLarge("claims of \(claims.count) bytes exceed max_token_bytes (\(policy.maxTokenBytes))")
        }
        let v: JSONValue
        do { v = try JSONReader.parse(claims, options: .init(maxBytes: policy.maxTokenBytes, maxDepth: Limits.maxJSONDepth)) } catch {
            throw .malformed("claims: \(error.detail)")
        }
        guard case .object = v else { throw .invalid("claims must be a JSON object") }
        return try sign(payload: Array(claims), key: try signingKey(kid: kid))
    }

    func sign(payload: [UInt8], key: TokenKey) throws(BitsecError) -> [UInt8] {
        var h = JSONWriter(reserving: 64)
        h.raw("{\"alg\":")
        h.writeString(key.alg.rawValue)
        h.raw(",\"typ\":\"JWT\"")
        if let kid = key.kid {
            h.raw(",\"kid\":")
            h.writeString(kid)
        }
        h.raw("}")
        var out = Base64.encode(h.bytes)
        out.append(UInt8(ascii: "."))
        Base64.encode(payload, into: &out)
        let sig = try out.withRawBytes { (raw) throws(BitsecError) -> [UInt8] in try key.sign(raw) }
        out.append(UInt8(ascii: "."))
        Base64.encode(sig, into: &out)
        guard out.count <= policy.maxTokenBytes else {
            throw .tooLarge("the token would be \(out.count) bytes, over max_token_bytes (\(policy.maxTokenBytes))")
        }
        return out
    }

    /// Claims the pair helper sets itself.
    static let reservedClaims: Set<String> = ["exp", "iat", "nbf", "jti", "type"]

    /// Issues an access token (`accessTTL`, default 30 min) and a refresh token (`refreshTTL`,
    /// default 7 days) for `claims` (a JSON object: `sub`, `role`, `scope`, `tenant_id`, ...).
    /// Both get `iat`, `exp`, a random `jti`, `type` ("access"/"refresh"), the same
    /// `session_id` (the given one or a random one), and `iss`/`aud` from `tokens.issuing`
    /// when the claims have none. Returns the JSON document
    /// `{"access_token","refresh_token","token_type":"Bearer","expires_in","refresh_expires_in","session_id"}`.
    public func issuePair(claims bytes: UnsafeRawBufferPointer, kid: String?, at: Int64) throws(BitsecError) -> [UInt8] {
        guard bytes.count <= policy.maxTokenBytes else { throw .tooLarge("claims exceed max_token_bytes (\(policy.maxTokenBytes))") }
        let v: JSONValue
        do { v = try JSONReader.parse(bytes, options: .init(maxBytes: policy.maxTokenBytes, maxDepth: Limits.maxJSONDepth)) } catch {
            throw .malformed("claims: \(error.detail)")
        }
        guard case .object(let o) = v else { throw .invalid("claims must be a JSON object") }
        for k in o.keys where Self.reservedClaims.contains(k) {
            throw .invalid("claims must not set \(k): the pair helper sets exp, iat, nbf, jti and type")
        }
        return try issuePair(base: o, kid: kid, now: Clock.resolve(at))
    }

    func issuePair(base o: JSONObject, kid: String?, now: Int64) throws(BitsecError) -> [UInt8] {
        let key = try signingKey(kid: kid)
        var base = o.members
        var session: String
        if case .string(let s)? = o["session_id"] {
            session = s
        } else {
            session = try randomID()
            base.removeAll { $0.key == "session_id" }
            base.append(("session_id", .string(session)))
        }
        if o["iss"] == nil, let iss = issuingIssuer { base.append(("iss", .string(iss))) }
        if o["aud"] == nil, !issuingAudience.isEmpty {
            base.append(("aud", issuingAudience.count == 1 ? .string(issuingAudience[0]) : .array(issuingAudience.map { .string($0) })))
        }
        func make(_ type: String, ttl: Int64) throws(BitsecError) -> [UInt8] {
            var m = base
            m.append(("type", .string(type)))
            m.append(("jti", .string(try randomID())))
            m.append(("iat", .number(JSONNumber(int64: now))))
            m.append(("exp", .number(JSONNumber(int64: now &+ ttl))))
            return try sign(payload: JSONValue.object(JSONObject(m)).serialized, key: key)
        }
        let access = try make("access", ttl: accessTTL)
        let refresh = try make("refresh", ttl: refreshTTL)
        var w = JSONWriter(reserving: access.count + refresh.count + 160)
        w.raw("{\"access_token\":\"")
        w.rawString(String(decoding: access, as: UTF8.self))
        w.raw("\",\"refresh_token\":\"")
        w.rawString(String(decoding: refresh, as: UTF8.self))
        w.raw("\",\"token_type\":\"Bearer\",\"expires_in\":")
        w.writeInt(accessTTL)
        w.raw(",\"refresh_expires_in\":")
        w.writeInt(refreshTTL)
        w.raw(",\"session_id\":")
        w.writeString(session)
        w.raw("}")
        return w.bytes
    }

    /// 128 random bits, base64url: a `jti` or `session_id`.
    func randomID() throws(BitsecError) -> String {
        Base64.encodeString(try OpenSSL.randomBytes(count: 16))
    }

    /// The outcome of a refresh: a new pair, or why the refresh token was refused.
    public struct Refresh: Sendable {
        public let reason: TokenReason
        public let pair: [UInt8]?
    }

    /// Exchanges a valid refresh token for a new pair and revokes the old refresh token
    /// (its `jti`, until its `exp`). The revocation is a set-if-absent, so of two concurrent
    /// exchanges of one refresh token exactly one succeeds; the other gets `revoked`.
    /// A refresh token without `jti` is refused (`missing_claim`): it could not be revoked.
    /// When the jti cannot be recorded (the in-process table is full), the old token's
    /// session is revoked at its `iat` instead; the new pair (issued at `now`) is then valid
    /// only if `now` is a later second than that `iat`: otherwise the exchange fails closed
    /// (`revoked`, and the old session no longer works).
    public func refresh(_ token: UnsafeRawBufferPointer, kid: String? = nil, at: Int64) throws(BitsecError) -> Refresh {
        let now = Clock.resolve(at)
        let v = try verify(token, at: now, expect: .refresh)
        if v.reason == .revoked, let c = v.claims {
            // A refresh token presented again after its exchange (or after its revocation):
            // stolen or replayed. Its whole family goes (RFC 9700 section 4.14.2).
            try revokeFamily(c, now: now)
            return Refresh(reason: .revoked, pair: nil)
        }
        guard v.reason == .valid, let c = v.claims else { return Refresh(reason: v.reason, pair: nil) }
        guard c.jti != nil, c.exp != nil else { return Refresh(reason: .missingClaim, pair: nil) }
        switch try revoke(c, at: now) {
        case .newly: break
        case .already:
            // A concurrent exchange of the same token won: this one is a replay.
            try revokeFamily(c, now: now)
            return Refresh(reason: .revoked, pair: nil)
        case .widened:
            // The epoch is the old token's iat (its whole second, rounded down, as the
            // revocation checks read it): a pair issued in that same second would be revoked
            // by it too, so refuse (fail closed) rather than hand it out.
            guard let iat = c.revocationIat, iat < now else { return Refresh(reason: .revoked, pair: nil) }
        }
        let base = JSONObject(c.claims.members.filter { !Self.reservedClaims.contains($0.key) })
        return Refresh(reason: .valid, pair: try issuePair(base: base, kid: kid, now: now))
    }

    /// Revokes the family of a replayed refresh token: every access and refresh token of its
    /// session (`session_id` and `sub`) issued until now, and the server-side session of that
    /// identifier when the `sessions` section is configured; emits a `security_incident`
    /// `refresh_token_reused` audit event. A token without `session_id` or `sub` has no
    /// family: only the event is emitted.
    func revokeFamily(_ c: VerifiedClaims, now: Int64) throws(BitsecError) {
        if let audit, audit.automaticEventsEnabled {
            var details: [(key: String, value: JSONValue)] = []
            if let sid = c.sessionId { details.append(("session_id", .string(sid))) }
            audit.emitAutomatic(AutomaticAuditEvent(
                type: "security_incident", subtype: "refresh_token_reused", result: "failure", reason: "revoked",
                actor: c.sub, tenant: c.tenant, details: details))
        }
        guard let sid = c.sessionId, let sub = c.sub, !sid.isEmpty, sid.utf8.count <= 512, !sub.isEmpty, sub.utf8.count <= 512 else { return }
        _ = try revokeSession(sid, subject: sub, tenant: c.tenant, at: now)
        familyHook.withLock { $0 }?(sid, now)
    }
}
